package postgres

import (
	"context"
	"fmt"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
)

// GetSessionVCS implements store.Store.
func (s *Store) GetSessionVCS(ctx context.Context, id string) (*store.SessionVCS, error) {
	v := &store.SessionVCS{}
	err := s.pool.QueryRow(ctx, `SELECT session_id, branch, pull_request_url, checked_at FROM session_vcs WHERE session_id = $1`, id).
		Scan(&v.SessionID, &v.Branch, &v.PullRequestURL, &v.CheckedAt)
	if err != nil {
		return nil, mapErr(err, "get the workspace of session %s", id)
	}
	v.CheckedAt = utc(v.CheckedAt)
	return v, nil
}

// PutSessionVCS implements store.Store.
func (s *Store) PutSessionVCS(ctx context.Context, v *store.SessionVCS) error {
	if v.SessionID == "" {
		return fmt.Errorf("put session workspace: the session is required: %w", store.ErrInvalid)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO session_vcs (session_id, branch, pull_request_url, checked_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (session_id) DO UPDATE SET branch = excluded.branch, pull_request_url = excluded.pull_request_url, checked_at = excluded.checked_at`,
		v.SessionID, v.Branch, v.PullRequestURL, sqlcommon.Time(v.CheckedAt))
	return mapErr(err, "put the workspace of session %s", v.SessionID)
}
