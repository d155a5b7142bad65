package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
)

// PutModelKey implements store.Store.
func (s *Store) PutModelKey(ctx context.Context, k *store.ModelKey) error {
	if k.Alias == "" || k.SessionID == "" || k.OwnerID == "" {
		return fmt.Errorf("put model key: alias, session and owner are required: %w", store.ErrInvalid)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO model_keys (alias, session_id, owner_id, token, spend, created_at, deleted_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (alias) DO UPDATE SET token = excluded.token, spend = excluded.spend, deleted_at = excluded.deleted_at`,
		k.Alias, k.SessionID, k.OwnerID, k.Token, k.Spend, ts(k.CreatedAt), tsPtr(k.DeletedAt))
	return mapErr(err, "put model key %q", k.Alias)
}

// ListModelKeys implements store.Store.
func (s *Store) ListModelKeys(ctx context.Context, f store.ModelKeyFilter) ([]*store.ModelKey, error) {
	q := `SELECT alias, session_id, owner_id, token, spend, created_at, deleted_at FROM model_keys WHERE 1=1`
	var args []any
	if f.SessionID != "" {
		q += ` AND session_id = ?`
		args = append(args, f.SessionID)
	}
	if f.Live {
		q += ` AND deleted_at IS NULL`
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY created_at, alias`, args...)
	if err != nil {
		return nil, mapErr(err, "list model keys")
	}
	defer rows.Close()
	out := []*store.ModelKey{}
	for rows.Next() {
		k := &store.ModelKey{}
		var created string
		var deleted sql.NullString
		if err := rows.Scan(&k.Alias, &k.SessionID, &k.OwnerID, &k.Token, &k.Spend, &created, &deleted); err != nil {
			return nil, mapErr(err, "list model keys")
		}
		if k.CreatedAt, err = parseTS(created); err != nil {
			return nil, err
		}
		if k.DeletedAt, err = parseTSPtr(deleted); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, mapErr(rows.Err(), "list model keys")
}

// DeleteModelKeys implements store.Store.
func (s *Store) DeleteModelKeys(ctx context.Context, sessionID string) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM model_keys WHERE session_id = ? AND deleted_at IS NOT NULL`, sessionID)
	if err != nil {
		return 0, mapErr(err, "delete model keys of session %s", sessionID)
	}
	n, err := res.RowsAffected()
	return int(n), mapErr(err, "delete model keys of session %s", sessionID)
}
