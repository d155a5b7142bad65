package sessions

import (
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// deadline is the next time a timer (idle, TTL, start timeout) acts on s.
func (c *Controller) deadline(s *store.Session) (time.Time, bool) {
	var d time.Time
	set := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if s.TTL > 0 {
		set(s.CreatedAt.Add(s.TTL))
	}
	if s.State == apiv1.StateRunning && s.IdleTimeout > 0 {
		set(s.LastActivityAt.Add(s.IdleTimeout))
	}
	if (s.State == apiv1.StatePending || s.State == apiv1.StateStarting) && s.StartedAt != nil {
		set(s.StartedAt.Add(c.cfg.StartTimeout))
	}
	return d, !d.IsZero()
}
