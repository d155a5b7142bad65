package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
)

// RecordEvent implements store.Store.
func (s *Store) RecordEvent(ctx context.Context, source, eventID string) (bool, error) {
	if source == "" || eventID == "" {
		return false, fmt.Errorf("record event: the source and the event id are required: %w", store.ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO integration_events (source, event_id, received_at) VALUES (?, ?, ?)
		ON CONFLICT (source, event_id) DO NOTHING`, source, eventID, ts(time.Now()))
	if err != nil {
		return false, mapErr(err, "record %s event %s", source, eventID)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, mapErr(err, "record %s event %s", source, eventID)
	}
	return n == 1, nil
}

// PruneEvents implements store.Store.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM integration_events WHERE received_at < ?`, ts(before))
	if err != nil {
		return 0, mapErr(err, "prune integration events")
	}
	n, err := res.RowsAffected()
	return int(n), mapErr(err, "prune integration events")
}

// CreateLink implements store.Store.
func (s *Store) CreateLink(ctx context.Context, l *store.IntegrationLink) error {
	if l.Source == "" || l.ExternalID == "" || l.SessionID == "" {
		return fmt.Errorf("create integration link: the source, external id and session are required: %w", store.ErrInvalid)
	}
	now, err := parseTS(ts(time.Now()))
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO integration_links (source, external_id, session_id, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
		l.Source, l.ExternalID, l.SessionID, string(l.Data), ts(now), ts(now))
	if err != nil {
		return mapErr(err, "create %s link %s", l.Source, l.ExternalID)
	}
	l.CreatedAt, l.UpdatedAt = now, now
	return nil
}

const linkColumns = `source, external_id, session_id, data, created_at, updated_at`

func scanLink(row interface{ Scan(...any) error }) (*store.IntegrationLink, error) {
	l := &store.IntegrationLink{}
	var data, created, updated string
	if err := row.Scan(&l.Source, &l.ExternalID, &l.SessionID, &data, &created, &updated); err != nil {
		return nil, err
	}
	if data != "" {
		l.Data = []byte(data)
	}
	var err error
	if l.CreatedAt, err = parseTS(created); err != nil {
		return nil, err
	}
	if l.UpdatedAt, err = parseTS(updated); err != nil {
		return nil, err
	}
	return l, nil
}

// GetLink implements store.Store.
func (s *Store) GetLink(ctx context.Context, source, externalID string) (*store.IntegrationLink, error) {
	l, err := scanLink(s.r.QueryRowContext(ctx, `SELECT `+linkColumns+` FROM integration_links WHERE source = ? AND external_id = ?`, source, externalID))
	if err != nil {
		return nil, mapErr(err, "get %s link %s", source, externalID)
	}
	return l, nil
}

// ListLinks implements store.Store.
func (s *Store) ListLinks(ctx context.Context, sessionID string) ([]*store.IntegrationLink, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+linkColumns+` FROM integration_links WHERE session_id = ? ORDER BY created_at, source, external_id`, sessionID)
	if err != nil {
		return nil, mapErr(err, "list the links of session %s", sessionID)
	}
	defer func() { _ = rows.Close() }()
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
	res, err := s.w.ExecContext(ctx, `UPDATE integration_links SET data = ?, updated_at = ? WHERE source = ? AND external_id = ? AND data = ?`,
		string(data), ts(time.Now()), source, externalID, string(old))
	if err != nil {
		return mapErr(err, "update %s link %s", source, externalID)
	}
	if n, err := res.RowsAffected(); err != nil {
		return mapErr(err, "update %s link %s", source, externalID)
	} else if n == 1 {
		return nil
	}
	// Nothing changed: the link is gone, or its data moved on since old.
	if _, err := s.GetLink(ctx, source, externalID); err != nil {
		return err
	}
	return fmt.Errorf("update %s link %s: its data changed since it was read: %w", source, externalID, store.ErrConflict)
}
