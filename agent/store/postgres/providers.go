package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
)

// ListProviders implements store.Store, by ID.
func (s *Store) ListProviders(ctx context.Context) ([]*store.Provider, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, config, ciphertext, updated_at FROM providers ORDER BY id`)
	if err != nil {
		return nil, mapErr(err, "list providers")
	}
	defer rows.Close()
	out := []*store.Provider{}
	for rows.Next() {
		var (
			p      store.Provider
			config string
			ct     []byte
		)
		if err := rows.Scan(&p.ID, &config, &ct, &p.UpdatedAt); err != nil {
			return nil, mapErr(err, "list providers")
		}
		if s.kr == nil {
			return nil, fmt.Errorf("list providers: %w", errNoKeyring)
		}
		pt, err := s.kr.Decrypt(ct, sqlcommon.ProviderAAD(p.ID))
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.ID, err)
		}
		if p.Secrets, err = sqlcommon.UnmarshalSecrets(pt); err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.ID, err)
		}
		p.Config, p.UpdatedAt = []byte(config), utc(p.UpdatedAt)
		out = append(out, &p)
	}
	return out, mapErr(rows.Err(), "list providers")
}

// ReplaceProviders implements store.Store in one transaction.
func (s *Store) ReplaceProviders(ctx context.Context, ps []*store.Provider) error {
	if err := sqlcommon.CheckProviders(ps); err != nil {
		return err
	}
	if s.kr == nil && len(ps) > 0 {
		return fmt.Errorf("replace providers: %w", errNoKeyring)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return mapErr(err, "replace providers")
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, `DELETE FROM providers`); err != nil {
		return mapErr(err, "replace providers")
	}
	now := sqlcommon.Now()
	for _, p := range ps {
		ct, err := s.kr.Encrypt(sqlcommon.MarshalSecrets(p.Secrets), sqlcommon.ProviderAAD(p.ID))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO providers (id, config, ciphertext, updated_at) VALUES ($1, $2, $3, $4)`,
			p.ID, string(p.Config), ct, now); err != nil {
			return mapErr(err, "replace providers")
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return mapErr(err, "replace providers")
	}
	for _, p := range ps {
		p.UpdatedAt = now
	}
	return nil
}

// rotateProviders re-encrypts, inside tx, every provider's secrets sealed by an old
// key, and returns how many it rewrote.
func (s *Store) rotateProviders(ctx context.Context, tx pgx.Tx, now time.Time) (int, error) {
	type row struct {
		id string
		ct []byte
	}
	var stale []row
	rows, err := tx.Query(ctx, `SELECT id, ciphertext FROM providers FOR UPDATE`)
	if err != nil {
		return 0, mapErr(err, "rotate providers")
	}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.ct); err != nil {
			rows.Close()
			return 0, mapErr(err, "rotate providers")
		}
		if s.kr.NeedsRotation(r.ct) {
			stale = append(stale, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, mapErr(err, "rotate providers")
	}
	for _, r := range stale {
		pt, err := s.kr.Decrypt(r.ct, sqlcommon.ProviderAAD(r.id))
		if err != nil {
			return 0, fmt.Errorf("rotate provider %q: %w", r.id, err)
		}
		ct, err := s.kr.Encrypt(pt, sqlcommon.ProviderAAD(r.id))
		if err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `UPDATE providers SET ciphertext = $1, updated_at = $2 WHERE id = $3`, ct, now, r.id); err != nil {
			return 0, mapErr(err, "rotate providers")
		}
	}
	return len(stale), nil
}
