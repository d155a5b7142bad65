package sessions

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestDeadline pins the next time a timer acts on a session: the TTL in every state,
// the idle timeout while Running, the start timeout while Pending or Starting.
func TestDeadline(t *testing.T) {
	cfg := testConfig("ns")
	cfg.StartTimeout = 10 * time.Minute
	c := newTestController(t, cfg, fake.NewClientset(), nil)
	created := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	started := created.Add(time.Hour)
	activity := created.Add(2 * time.Hour)
	for _, tc := range []struct {
		name      string
		state     apiv1.SessionState
		idle, ttl time.Duration
		started   *time.Time
		want      time.Time // zero: no deadline
	}{
		{"running, idle first", apiv1.StateRunning, time.Hour, 24 * time.Hour, &started, activity.Add(time.Hour)},
		{"running, ttl first", apiv1.StateRunning, 48 * time.Hour, 24 * time.Hour, &started, created.Add(24 * time.Hour)},
		{"running, no limits", apiv1.StateRunning, 0, 0, &started, time.Time{}},
		{"pending, start timeout", apiv1.StatePending, time.Hour, 24 * time.Hour, &started, started.Add(10 * time.Minute)},
		{"starting, start timeout", apiv1.StateStarting, time.Minute, 0, &started, started.Add(10 * time.Minute)},
		{"pending, never started", apiv1.StatePending, 0, 0, nil, time.Time{}},
		{"stopped, ttl", apiv1.StateStopped, time.Hour, 24 * time.Hour, &started, created.Add(24 * time.Hour)},
		{"failed, no ttl", apiv1.StateFailed, time.Hour, 0, &started, time.Time{}},
		{"stopping, ttl", apiv1.StateStopping, time.Hour, 24 * time.Hour, &started, created.Add(24 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &store.Session{ID: "a", State: tc.state, IdleTimeout: tc.idle, TTL: tc.ttl, CreatedAt: created, StartedAt: tc.started, LastActivityAt: activity}
			got, ok := c.deadline(s)
			if ok != !tc.want.IsZero() || !got.Equal(tc.want) {
				t.Errorf("deadline = %s, %v; want %s", got, ok, tc.want)
			}
		})
	}
}

// TestTimersOnFakeAPI: the TTL deletes a stopped session too; the idle timeout stops a
// running one and records what was last active.
func TestTimersOnFakeAPI(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("ns"), kube, st)
	ctx := context.Background()
	stopped := &store.Session{OwnerID: owner, TTL: time.Hour}
	if err := c.Create(ctx, stopped, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, stopped.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	idle := &store.Session{OwnerID: owner, IdleTimeout: time.Minute}
	if err := c.Create(ctx, idle, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.update(ctx, idle.ID, func(s *store.Session) (bool, error) { s.State = apiv1.StateRunning; return true, nil }); err != nil {
		t.Fatal(err)
	}
	c.Touch(ctx, idle.ID, "attach")
	c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if err := c.reconcile(ctx, stopped.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSession(ctx, stopped.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stopped session past its TTL still stored: %v", err)
	}
	if err := c.reconcile(ctx, idle.ID); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetSession(ctx, idle.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != apiv1.StateStopped || got.Reason != ReasonIdleTimeout || !strings.Contains(got.Message, "last: attach") {
		t.Errorf("idle session %s/%s/%q, want Stopped/IdleTimeout naming the last activity", got.State, got.Reason, got.Message)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(idle.ID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("idle session's pod still there: %v", err)
	}
}

// TestIdleStopRereadsTheSession: the idle timeout is checked again on the row being
// written, so activity or an idle timeout turned off (PATCH) since the session was read
// keeps it running.
func TestIdleStopRereadsTheSession(t *testing.T) {
	st, owner := newStore(t)
	c := newTestController(t, testConfig("ns"), fake.NewClientset(), st)
	ctx := context.Background()
	for name, change := range map[string]func(*store.Session){
		"idle timeout turned off": func(s *store.Session) { s.IdleTimeout = 0 },
		"new activity":            func(s *store.Session) { s.LastActivityAt = time.Now().Add(time.Hour) },
	} {
		t.Run(name, func(t *testing.T) {
			s := &store.Session{OwnerID: owner, IdleTimeout: time.Minute}
			if err := c.Create(ctx, s, 0); err != nil {
				t.Fatal(err)
			}
			read, _, err := c.update(ctx, s.ID, func(s *store.Session) (bool, error) { s.State = apiv1.StateRunning; return true, nil })
			if err != nil {
				t.Fatal(err)
			}
			stale := *read
			if _, _, err := c.update(ctx, s.ID, func(s *store.Session) (bool, error) { change(s); return true, nil }); err != nil {
				t.Fatal(err)
			}
			got, stopped, err := c.stopIdle(ctx, &stale, time.Now().Add(30*time.Minute))
			if err != nil || stopped || got.State != apiv1.StateRunning {
				t.Fatalf("stopIdle = %s, %v, %v; want the session left Running", got.State, stopped, err)
			}
		})
	}
}
