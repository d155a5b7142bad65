package store

import (
	"testing"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestSessionDeadlines(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	activity := created.Add(2 * time.Hour)
	for _, st := range apiv1.AllStates {
		for _, limits := range []time.Duration{0, -time.Minute, time.Hour} {
			s := &Session{State: st, IdleTimeout: limits, TTL: 2 * limits, CreatedAt: created, LastActivityAt: activity}
			idle, okIdle := s.IdleDeadline()
			wantIdle := st.Active() && limits > 0
			if okIdle != wantIdle || (wantIdle && !idle.Equal(activity.Add(limits))) || (!wantIdle && !idle.IsZero()) {
				t.Errorf("%s, idle timeout %s: IdleDeadline = %s, %v", st, limits, idle, okIdle)
			}
			exp, okExp := s.ExpiresAt()
			wantExp := st != apiv1.StateDeleting && limits > 0
			if okExp != wantExp || (wantExp && !exp.Equal(created.Add(2*limits))) || (!wantExp && !exp.IsZero()) {
				t.Errorf("%s, TTL %s: ExpiresAt = %s, %v", st, 2*limits, exp, okExp)
			}
		}
	}
}
