package sessions

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// ReasonOpenCodeStarting is the reason of a Starting session whose pod is Ready but whose
// OpenCode does not answer through the agent yet.
const ReasonOpenCodeStarting = "OpenCodeStarting"

// HealthCheck asks a session's OpenCode, the way clients will reach it, whether it
// answers. It makes one attempt and returns quickly; ctx carries a short deadline.
type HealthCheck func(ctx context.Context, s *store.Session) error

// WorkCheck asks a session's OpenCode whether it is working (a model answering, a tool
// running). It makes one attempt; ctx carries a short deadline.
type WorkCheck func(ctx context.Context, s *store.Session) (bool, error)

// SetWorkCheck makes the idle timer count OpenCode's own work as activity: at the idle
// deadline a session whose OpenCode is working is not stopped, and its activity is
// recorded as "opencode-busy" (which `session why` shows), so an agent working for an
// hour with nobody attached keeps running. Without it only clients' traffic counts.
func (c *Controller) SetWorkCheck(f WorkCheck) {
	c.mu.Lock()
	c.workCheck = f
	c.mu.Unlock()
}

// healthProbeTimeout bounds one HealthCheck call: a probe sent before OpenCode listens
// can stall inside a port-forward, and must not hold up the next one.
const healthProbeTimeout = 5 * time.Second

// healthMark records, per session, the pod whose OpenCode is being probed or has
// answered. A new pod (another UID) is probed afresh.
type healthMark struct {
	podUID  types.UID
	healthy bool
	probing bool
}

// SetHealthCheck makes Running mean "OpenCode answers", not just "the pod is Ready".
// Without it the pod's readiness decides, which is right on a kubelet that runs the
// pod's readiness probe; but a pod can be Ready before its server accepts connections
// (a probe that passes early, a fake kubelet), and then `session create --wait`
// followed by `attach` fails. With a check set, a session whose pod turns Ready stays
// Starting (reason OpenCodeStarting) until the check passes once for that pod, and
// StartTimeout still applies. Sessions already Running are not held back, so an agent
// restart does not demote them.
func (c *Controller) SetHealthCheck(f HealthCheck) {
	c.mu.Lock()
	c.healthCheck = f
	c.mu.Unlock()
}

// gateRunning turns a Running observation of pod into Starting until the session's
// OpenCode has answered, starting a probe in the background when none is under way.
// The probe enqueues the session when it succeeds.
func (c *Controller) gateRunning(s *store.Session, pod *corev1.Pod, o observation) observation {
	if o.State != apiv1.StateRunning || s.State == apiv1.StateRunning {
		return o
	}
	c.mu.Lock()
	check := c.healthCheck
	m, ok := c.health[s.ID]
	if check == nil || (ok && m.podUID == pod.UID && m.healthy) {
		c.mu.Unlock()
		return o
	}
	if !ok || m.podUID != pod.UID || !m.probing {
		c.health[s.ID] = healthMark{podUID: pod.UID, probing: true}
		ctx := c.baseCtx
		cp := *s
		go c.probeHealth(ctx, check, &cp, pod.UID)
	}
	c.mu.Unlock()
	return observation{State: apiv1.StateStarting, Reason: ReasonOpenCodeStarting,
		Message: fmt.Sprintf("the pod is ready; waiting for OpenCode to answer on port %d", apiv1.OpenCodePort)}
}

// probeHealth runs check until it passes, the pod is replaced or gone, or ctx ends.
func (c *Controller) probeHealth(ctx context.Context, check HealthCheck, s *store.Session, uid types.UID) {
	wait := 250 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
		err := check(pctx, s)
		cancel()
		c.mu.Lock()
		m, ok := c.health[s.ID]
		current := ok && m.podUID == uid
		if current && err == nil {
			c.health[s.ID] = healthMark{podUID: uid, healthy: true}
		}
		c.mu.Unlock()
		if !current || ctx.Err() != nil {
			return // a newer pod has its own probe, or the session was forgotten
		}
		if err == nil {
			c.log.Debug("session's OpenCode answers", "session", s.ID)
			c.enqueue(s.ID)
			return
		}
		if pod, gerr := c.podLister.Pods(c.cfg.Namespace).Get(PodName(s.ID)); gerr != nil || pod.UID != uid || pod.DeletionTimestamp != nil {
			c.clearHealth(s.ID, uid)
			return // the pod went away (stopped, failed, timed out): nothing to wait for
		}
		c.log.Trace("session's OpenCode not answering yet", "session", s.ID, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if wait < 2*time.Second {
			wait *= 2
		}
	}
}

// clearHealth drops the probe record of pod uid ("" any pod) of a session.
func (c *Controller) clearHealth(id string, uid types.UID) {
	c.mu.Lock()
	if m, ok := c.health[id]; ok && (uid == "" || m.podUID == uid) {
		delete(c.health, id)
	}
	c.mu.Unlock()
}
