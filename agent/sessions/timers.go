package sessions

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// deadline is the next time a timer (idle, TTL, start timeout) acts on s.
func (c *Controller) deadline(s *store.Session) (time.Time, bool) {
	var d time.Time
	set := func(t time.Time, ok bool) {
		if ok && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	set(s.ExpiresAt())
	if s.State == apiv1.StateRunning {
		set(s.IdleDeadline())
	}
	if s.State == apiv1.StatePending || s.State == apiv1.StateStarting {
		set(c.startDeadline(s))
	}
	return d, !d.IsZero()
}

// enqueueAtDeadline reconciles s again just after its next deadline, when a timer acts.
func (c *Controller) enqueueAtDeadline(s *store.Session) {
	if d, ok := c.deadline(s); ok {
		c.enqueueAfter(s.ID, d.Sub(c.now())+100*time.Millisecond)
	}
}

// startDeadline is when a session whose pod has not become ready (since its last
// start) fails with StartTimeout.
func (c *Controller) startDeadline(s *store.Session) (time.Time, bool) {
	if s.StartedAt == nil {
		return time.Time{}, false
	}
	return s.StartedAt.Add(c.cfg.StartTimeout), true
}

// expire marks s Deleting once its TTL has passed; the TTL applies whatever the
// session is doing, stopped ones included. It returns the session as last written.
func (c *Controller) expire(ctx context.Context, s *store.Session) (*store.Session, error) {
	if d, ok := s.ExpiresAt(); !ok || c.now().Before(d) {
		return s, nil
	}
	return c.markDeleting(ctx, s.ID, ReasonTTLExpired, fmt.Sprintf("the session reached its time to live of %s", s.TTL))
}

// stopIdle stops a Running session whose idle deadline has passed by now; stopped
// reports that it did, and nothing is left for the caller to do.
func (c *Controller) stopIdle(ctx context.Context, s *store.Session, now time.Time) (_ *store.Session, stopped bool, _ error) {
	if d, ok := s.IdleDeadline(); s.State != apiv1.StateRunning || !ok || now.Before(d) {
		return s, false, nil
	}
	if src, busy := c.busy(ctx, s); busy {
		// Its own work is activity: the timer starts again from now. Written at once, not
		// through Touch's rate limit: this happens once per idle timeout at most.
		if err := c.st.TouchSession(ctx, s.ID, now.UTC(), src); err != nil {
			return nil, false, fmt.Errorf("record the working session's activity: %w", err)
		}
		fresh := *s
		fresh.LastActivityAt, fresh.LastActivitySource = now.UTC(), src
		return &fresh, false, nil
	}
	msg := fmt.Sprintf("no activity for %s (last: %s at %s)", s.IdleTimeout, orText(s.LastActivitySource, "unknown"), s.LastActivityAt.UTC().Format(time.RFC3339))
	ss, _, err := c.update(ctx, s.ID, func(x *store.Session) (bool, error) {
		// Activity may have arrived since s was read.
		if d, ok := x.IdleDeadline(); x.State != apiv1.StateRunning || !ok || now.Before(d) {
			return false, nil
		}
		x.State, x.Reason, x.Message = apiv1.StateStopping, ReasonIdleTimeout, msg
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	if ss.State != apiv1.StateStopping {
		return ss, false, nil
	}
	c.log.Info("stopping idle session", "session", s.ID, "idle_timeout", s.IdleTimeout)
	c.event(ss, corev1.EventTypeNormal, ReasonIdleTimeout, "Stopping session: "+msg)
	_, err = c.finishStop(ctx, ss)
	return ss, true, err
}

// Activity sources the controller records itself (see apiv1's).
const (
	// ActivityOpenCodeBusy: the idle deadline found the session's OpenCode working.
	ActivityOpenCodeBusy = apiv1.ActivityOpenCodeBusy
	// ActivityReady: the session became Running.
	ActivityReady = apiv1.ActivityReady
	// ActivityPromptPending: the idle deadline found the initial prompt undelivered.
	ActivityPromptPending = apiv1.ActivityPromptPending
)

// busy reports whether s, at its idle deadline, has work under way, and the activity
// source to record for it: an initial prompt the agent has not delivered yet (the work
// asked for has not begun; delivery retries while OpenCode comes up), or its OpenCode
// working.
func (c *Controller) busy(ctx context.Context, s *store.Session) (string, bool) {
	if s.Prompt != "" && !s.PromptSent && s.StartedAt != nil && c.now().Sub(*s.StartedAt) < promptPendingGrace {
		return ActivityPromptPending, true
	}
	if c.working(ctx, s) {
		return ActivityOpenCodeBusy, true
	}
	return "", false
}

// promptPendingGrace bounds how long after a start an undelivered initial prompt keeps
// a session from idling: delivery gives up long before (see conversation's
// DeliverInitialPrompt), and a prompt never delivered must not keep a pod forever.
const promptPendingGrace = 10 * time.Minute

// workCheckAttempts is how many times working asks before it takes an OpenCode for not
// answering: one lost request through a port-forward on a loaded node is no reason to
// stop a session in the middle of its work.
const workCheckAttempts = 3

// working asks the work check, if set, whether the OpenCode of s is working. An OpenCode
// that does not answer is not working: the idle timer stops the session as before.
func (c *Controller) working(ctx context.Context, s *store.Session) bool {
	c.mu.Lock()
	check := c.workCheck
	c.mu.Unlock()
	if check == nil {
		return false
	}
	var err error
	for attempt := 0; attempt < workCheckAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(time.Second):
			}
		}
		wctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
		var busy bool
		busy, err = check(wctx, s)
		cancel()
		if err == nil {
			return busy
		}
	}
	c.log.Warn("ask the idle session's OpenCode whether it is working failed; stopping it as idle", "session", s.ID, "attempts", workCheckAttempts, "error", err)
	return false
}

// startTimeout turns o, what the pod of s says, into Failed with StartTimeout when the
// pod is still not ready (or its OpenCode not answering) at the start deadline.
func (c *Controller) startTimeout(s *store.Session, o observation, now time.Time) observation {
	if o.State != apiv1.StatePending && o.State != apiv1.StateStarting {
		return o
	}
	if d, ok := c.startDeadline(s); !ok || now.Before(d) {
		return o
	}
	msg := fmt.Sprintf("the pod did not become ready within %s", c.cfg.StartTimeout)
	switch {
	case o.Reason == ReasonOpenCodeStarting:
		msg = fmt.Sprintf("the pod is ready but OpenCode did not answer on port %d within %s: see the log of container %s", apiv1.OpenCodePort, c.cfg.StartTimeout, ContainerName)
	case o.Reason != "":
		msg += fmt.Sprintf(" (%s: %s)", o.Reason, o.Message)
	}
	return observation{apiv1.StateFailed, ReasonStartTimeout, msg}
}
