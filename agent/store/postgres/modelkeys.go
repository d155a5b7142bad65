package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
)

// PutModelKey implements store.Store.
func (s *Store) PutModelKey(ctx context.Context, k *store.ModelKey) error {
	if k.Alias == "" || k.SessionID == "" || k.OwnerID == "" {
		return fmt.Errorf("put model key: alias, session and owner are required: %w", store.ErrInvalid)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO model_keys (alias, session_id, owner_id, token, spend, created_at, deleted_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (alias) DO UPDATE SET token = excluded.token, spend = excluded.spend, deleted_at = excluded.deleted_at`,
		k.Alias, k.SessionID, k.OwnerID, k.Token, k.Spend, sqlcommon.Time(k.CreatedAt), sqlcommon.TimePtr(k.DeletedAt))
	return mapErr(err, "put model key %q", k.Alias)
}

// ListModelKeys implements store.Store.
func (s *Store) ListModelKeys(ctx context.Context, f store.ModelKeyFilter) ([]*store.ModelKey, error) {
	q := `SELECT alias, session_id, owner_id, token, spend, created_at, deleted_at FROM model_keys WHERE true`
	var args []any
	if f.SessionID != "" {
		args = append(args, f.SessionID)
		q += fmt.Sprintf(` AND session_id = $%d`, len(args))
	}
	if f.Live {
		q += ` AND deleted_at IS NULL`
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY created_at, alias`, args...)
	if err != nil {
		return nil, mapErr(err, "list model keys")
	}
	defer rows.Close()
	out := []*store.ModelKey{}
	for rows.Next() {
		k := &store.ModelKey{}
		if err := rows.Scan(&k.Alias, &k.SessionID, &k.OwnerID, &k.Token, &k.Spend, &k.CreatedAt, &k.DeletedAt); err != nil {
			return nil, mapErr(err, "list model keys")
		}
		k.CreatedAt, k.DeletedAt = utc(k.CreatedAt), utcPtr(k.DeletedAt)
		out = append(out, k)
	}
	return out, mapErr(rows.Err(), "list model keys")
}

// DeleteModelKeys implements store.Store.
func (s *Store) DeleteModelKeys(ctx context.Context, sessionID string) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM model_keys WHERE session_id = $1 AND deleted_at IS NOT NULL`, sessionID)
	if err != nil {
		return 0, mapErr(err, "delete model keys of session %s", sessionID)
	}
	return int(tag.RowsAffected()), nil
}
