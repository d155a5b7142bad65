package sessions

import (
	"testing"
	"time"

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
