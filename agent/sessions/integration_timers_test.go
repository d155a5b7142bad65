package sessions

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestTimers: the idle timeout stops a session and the TTL deletes one, each recording
// its reason; a pod deleted from outside is recreated.
func TestTimers(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)

	idle := &store.Session{OwnerID: e.owner, IdleTimeout: 2 * time.Second}
	if err := c.Create(ctx, idle, 0); err != nil {
		t.Fatal(err)
	}
	ttl := &store.Session{OwnerID: e.owner, TTL: 4 * time.Second}
	if err := c.Create(ctx, ttl, 0); err != nil {
		t.Fatal(err)
	}
	victim := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, victim, 0); err != nil {
		t.Fatal(err)
	}
	if r := e.waitSession(victim.ID, "Running", inState(apiv1.StateRunning)); r.LastActivitySource != ActivityReady || r.LastActivityAt.Before(r.CreatedAt) {
		t.Errorf("a session that became Running: last activity %q at %s (created %s); want %q, the idle timer counting from then", r.LastActivitySource, r.LastActivityAt, r.CreatedAt, ActivityReady)
	}
	before, err := e.pod(ctx, victim.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.kube.CoreV1().Pods(e.ns).Delete(ctx, PodName(victim.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitSession(victim.ID, "Running with a new pod", func(s *store.Session) bool {
		p, err := e.pod(ctx, victim.ID)
		return s != nil && s.State == apiv1.StateRunning && err == nil && p.UID != before.UID
	})

	s := e.waitSession(idle.ID, "Stopped", inState(apiv1.StateStopped))
	if s.Reason != ReasonIdleTimeout || s.Message == "" {
		t.Errorf("idle stop recorded reason %q message %q", s.Reason, s.Message)
	}
	e.waitGone("idle session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, idle.ID); return err })

	// The TTL deletes the row; its reason shows in the Events of the session pod.
	e.waitSession(ttl.ID, "row deleted by TTL", gone)
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + PodName(ttl.ID) + ",reason=" + ReasonTTLExpired})
		return err == nil && len(evs.Items) > 0, nil
	}); err != nil {
		t.Errorf("no %s event: %v", ReasonTTLExpired, err)
	}
}

// TestUnschedulableTimesOut: a pod no node accepts shows Unschedulable with the
// scheduler's message, and the start timeout then fails the session and removes the pod.
func TestUnschedulableTimesOut(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.NodeSelector = map[string]string{"agents.cake.ai/test-pool": "absent"}
	cfg.StartTimeout = 4 * time.Second
	c, _ := e.start(cfg)
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	p := e.waitSession(s.ID, "Unschedulable", func(s *store.Session) bool { return s != nil && s.Reason == ReasonUnschedulable })
	if p.State != apiv1.StatePending || !strings.Contains(p.Message, "node") {
		t.Errorf("unschedulable session %s %q", p.State, p.Message)
	}
	f := e.waitSession(s.ID, "Failed", inState(apiv1.StateFailed))
	if f.Reason != ReasonStartTimeout || !strings.Contains(f.Message, ReasonUnschedulable) {
		t.Errorf("timed-out session %s %q", f.Reason, f.Message)
	}
	e.waitGone("timed-out session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err })
}

// TestIdleWaitsForOpenCodesWork: at the idle deadline a session whose OpenCode is working
// (a long tool call with nobody attached) is not stopped: its activity is recorded as
// opencode-busy and the timer starts again. Once the work is done, the next deadline
// stops it; an OpenCode that does not answer the question is stopped as before, one that
// misses a single answer is asked again, and a session whose initial prompt the agent
// has not delivered yet is not idle either (prompt-pending).
func TestIdleWaitsForOpenCodesWork(t *testing.T) {
	e := newEnv(t)
	var busy atomic.Bool
	busy.Store(true)
	var asked, flakyAsked atomic.Int32
	c, _ := e.startWith(e.config(), func(c *Controller) {
		c.SetWorkCheck(func(ctx context.Context, s *store.Session) (bool, error) {
			asked.Add(1)
			switch s.Title {
			case "unreachable":
				return false, errors.New("dial pod: connection refused")
			case "flaky":
				if flakyAsked.Add(1)%2 == 1 {
					return false, errors.New("port-forward: lost connection")
				}
				return true, nil
			}
			return busy.Load(), nil
		})
	})
	ctx := ctxT(t)
	working := &store.Session{OwnerID: e.owner, IdleTimeout: time.Second}
	unreachable := &store.Session{OwnerID: e.owner, IdleTimeout: time.Second, Title: "unreachable"}
	flaky := &store.Session{OwnerID: e.owner, IdleTimeout: time.Second, Title: "flaky"}
	// No ready hook delivers prompts here, so this one's prompt stays undelivered; its
	// OpenCode does not answer, so only the pending prompt keeps it running.
	pending := &store.Session{OwnerID: e.owner, IdleTimeout: time.Second, Title: "unreachable", Prompt: "fix the flaky test"}
	for _, s := range []*store.Session{working, unreachable, flaky, pending} {
		if err := c.Create(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	e.waitSession(working.ID, "Running", inState(apiv1.StateRunning))
	e.waitSession(working.ID, "its work recorded as activity", func(s *store.Session) bool {
		return s != nil && s.LastActivitySource == ActivityOpenCodeBusy
	})
	// Several idle timeouts go by while it works.
	time.Sleep(3 * time.Second)
	s := e.waitSession(working.ID, "still Running", func(s *store.Session) bool { return s != nil })
	if s.State != apiv1.StateRunning || s.LastActivitySource != ActivityOpenCodeBusy || time.Since(s.LastActivityAt) > 2*time.Second {
		t.Fatalf("a working session after 3 idle timeouts: %s (%s), last activity %s at %s", s.State, s.Reason, s.LastActivitySource, s.LastActivityAt)
	}
	u := e.waitSession(unreachable.ID, "the unreachable one Stopped", inState(apiv1.StateStopped))
	if u.Reason != ReasonIdleTimeout {
		t.Errorf("the unreachable session stopped with reason %q", u.Reason)
	}
	for _, x := range []struct {
		s    *store.Session
		what string
		src  string
	}{{flaky, "one that misses every other answer", ActivityOpenCodeBusy}, {pending, "one whose initial prompt is undelivered", ActivityPromptPending}} {
		got := e.waitSession(x.s.ID, x.what, func(s *store.Session) bool { return s != nil })
		if got.State != apiv1.StateRunning || got.LastActivitySource != x.src {
			t.Errorf("%s after 3 idle timeouts: %s (%s), last activity %q; want Running, %q", x.what, got.State, got.Reason, got.LastActivitySource, x.src)
		}
	}

	busy.Store(false)
	s = e.waitSession(working.ID, "Stopped once its work is done", inState(apiv1.StateStopped))
	if s.Reason != ReasonIdleTimeout || !strings.Contains(s.Message, ActivityOpenCodeBusy) {
		t.Errorf("idle stop after the work: reason %q message %q", s.Reason, s.Message)
	}
	if asked.Load() < 3 {
		t.Errorf("the work check was asked %d times", asked.Load())
	}
}
