package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
)

// RecordEvent implements store.Store.
func (s *Store) RecordEvent(ctx context.Context, source, eventID string) (bool, error) {
	if source == "" || eventID == "" {
		return false, fmt.Errorf("record event: the source and the event id are required: %w", store.ErrInvalid)
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO integration_events (source, event_id, received_at) VALUES ($1, $2, $3)
		ON CONFLICT (source, event_id) DO NOTHING`, source, eventID, sqlcommon.Time(time.Now()))
	if err != nil {
		return false, mapErr(err, "record %s event %s", source, eventID)
	}
	return tag.RowsAffected() == 1, nil
}

// PruneEvents implements store.Store.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM integration_events WHERE received_at < $1`, sqlcommon.Time(before))
	if err != nil {
		return 0, mapErr(err, "prune integration events")
	}
	return int(tag.RowsAffected()), nil
}

// CreateLink implements store.Store.
func (s *Store) CreateLink(ctx context.Context, l *store.IntegrationLink) error {
	if l.Source == "" || l.ExternalID == "" || l.SessionID == "" {
		return fmt.Errorf("create integration link: the source, external id and session are required: %w", store.ErrInvalid)
	}
	now := sqlcommon.Time(time.Now())
	_, err := s.pool.Exec(ctx, `INSERT INTO integration_links (source, external_id, session_id, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)`,
		l.Source, l.ExternalID, l.SessionID, string(l.Data), now)
	if err != nil {
		return mapErr(err, "create %s link %s", l.Source, l.ExternalID)
	}
	l.CreatedAt, l.UpdatedAt = now, now
	return nil
}

const linkColumns = `source, external_id, session_id, data, created_at, updated_at`

func scanLink(row pgx.Row) (*store.IntegrationLink, error) {
	l := &store.IntegrationLink{}
	var data string
	if err := row.Scan(&l.Source, &l.ExternalID, &l.SessionID, &data, &l.CreatedAt, &l.UpdatedAt); err != nil {
		return nil, err
	}
	if data != "" {
		l.Data = []byte(data)
	}
	l.CreatedAt, l.UpdatedAt = utc(l.CreatedAt), utc(l.UpdatedAt)
	return l, nil
}

// GetLink implements store.Store.
func (s *Store) GetLink(ctx context.Context, source, externalID string) (*store.IntegrationLink, error) {
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM integration_links WHERE source = $1 AND external_id = $2`, source, externalID))
	if err != nil {
		return nil, mapErr(err, "get %s link %s", source, externalID)
	}
	return l, nil
}

// ListLinks implements store.Store.
func (s *Store) ListLinks(ctx context.Context, sessionID string) ([]*store.IntegrationLink, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+linkColumns+` FROM integration_links WHERE session_id = $1 ORDER BY created_at, source, external_id`, sessionID)
	if err != nil {
		return nil, mapErr(err, "list the links of session %s", sessionID)
	}
	defer rows.Close()
	out := []*store.IntegrationLink{}
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			return nil, mapErr(err, "list the links of session %s", sessionID)
		}
		out = append(out, l)
	}
	return out, mapErr(rows.Err(), "list the links of session %s", sessionID)
}

// UpdateLinkData implements store.Store.UpdateLinkData.
func (s *Store) UpdateLinkData(ctx context.Context, source, externalID string, old, data []byte) error {
	tag, err := s.pool.Exec(ctx, `UPDATE integration_links SET data = $1, updated_at = $2 WHERE source = $3 AND external_id = $4 AND data = $5`,
		string(data), sqlcommon.Time(time.Now()), source, externalID, string(old))
	if err != nil {
		return mapErr(err, "update %s link %s", source, externalID)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Nothing changed: the link is gone, or its data moved on since old.
	if _, err := s.GetLink(ctx, source, externalID); err != nil {
		return err
	}
	return fmt.Errorf("update %s link %s: its data changed since it was read: %w", source, externalID, store.ErrConflict)
}
