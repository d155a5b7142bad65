package store

import (
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// IdleDeadline is when the idle timeout stops s: its last activity plus its idle
// timeout, reported while s is active (Pending, Starting or Running) and has an idle
// timeout. Only a Running session is stopped; one still starting when the deadline
// passes is stopped as soon as it runs, since starting is not activity.
func (s *Session) IdleDeadline() (time.Time, bool) {
	if !s.State.Active() || s.IdleTimeout <= 0 {
		return time.Time{}, false
	}
	return s.LastActivityAt.Add(s.IdleTimeout), true
}

// ExpiresAt is when the TTL deletes s, whatever it is doing: its creation plus its
// TTL, reported while s has a TTL and is not already being deleted.
func (s *Session) ExpiresAt() (time.Time, bool) {
	if s.TTL <= 0 || s.State == apiv1.StateDeleting {
		return time.Time{}, false
	}
	return s.CreatedAt.Add(s.TTL), true
}
