package sqlite

import (
	"context"
	"fmt"

	"github.com/cakeai/cake-agents/agent/store"
)

// GetSessionVCS implements store.Store.
func (s *Store) GetSessionVCS(ctx context.Context, id string) (*store.SessionVCS, error) {
	v := &store.SessionVCS{}
	var checked string
	err := s.r.QueryRowContext(ctx, `SELECT session_id, branch, pull_request_url, checked_at FROM session_vcs WHERE session_id = ?`, id).
		Scan(&v.SessionID, &v.Branch, &v.PullRequestURL, &checked)
	if err != nil {
		return nil, mapErr(err, "get the workspace of session %s", id)
	}
	if v.CheckedAt, err = parseTS(checked); err != nil {
		return nil, err
	}
	return v, nil
}

// PutSessionVCS implements store.Store.
func (s *Store) PutSessionVCS(ctx context.Context, v *store.SessionVCS) error {
	if v.SessionID == "" {
		return fmt.Errorf("put session workspace: the session is required: %w", store.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO session_vcs (session_id, branch, pull_request_url, checked_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (session_id) DO UPDATE SET branch = excluded.branch, pull_request_url = excluded.pull_request_url, checked_at = excluded.checked_at`,
		v.SessionID, v.Branch, v.PullRequestURL, ts(v.CheckedAt))
	return mapErr(err, "put the workspace of session %s", v.SessionID)
}
