package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
)

// PutTranscript implements store.Store.
func (s *Store) PutTranscript(ctx context.Context, t *store.Transcript, msgs []*store.TranscriptMessage) error {
	if err := sqlcommon.CheckTranscript(t, msgs); err != nil {
		return err
	}
	now, err := parseTS(ts(time.Now()))
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err, "record the transcript of session %s", t.SessionID)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// A head first made after its session was deleted (a late recording racing the
	// delete) is born deleted, so the pruner still finds it.
	_, err = tx.ExecContext(ctx, `INSERT INTO transcripts (session_id, owner_id, private, title, repo, created_at, updated_at, deleted_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, CASE WHEN EXISTS (SELECT 1 FROM sessions WHERE id = ?) THEN NULL ELSE ? END)
		ON CONFLICT (session_id) DO UPDATE SET owner_id = excluded.owner_id, private = excluded.private,
			title = excluded.title, repo = excluded.repo, updated_at = excluded.updated_at`,
		t.SessionID, t.OwnerID, t.Private, t.Title, t.Repo, ts(now), ts(now), t.SessionID, ts(now))
	if err != nil {
		return mapErr(err, "record the transcript of session %s", t.SessionID)
	}
	for _, m := range msgs {
		_, err := tx.ExecContext(ctx, `INSERT INTO transcript_messages (session_id, message_id, role, body, created_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (session_id, message_id) DO UPDATE SET role = excluded.role, body = excluded.body, created_at = excluded.created_at`,
			t.SessionID, m.ID, m.Role, string(m.Body), ts(m.CreatedAt))
		if err != nil {
			return mapErr(err, "record message %s of session %s", m.ID, t.SessionID)
		}
	}
	if err := tx.Commit(); err != nil {
		return mapErr(err, "record the transcript of session %s", t.SessionID)
	}
	head, _, err := s.getTranscript(ctx, t.SessionID, false)
	if err != nil {
		return err
	}
	*t = *head
	return nil
}

// GetTranscript implements store.Store.
func (s *Store) GetTranscript(ctx context.Context, id string) (*store.Transcript, []*store.TranscriptMessage, error) {
	return s.getTranscript(ctx, id, true)
}

func (s *Store) getTranscript(ctx context.Context, id string, withMessages bool) (*store.Transcript, []*store.TranscriptMessage, error) {
	// Through the writer when only the head is wanted: PutTranscript reads back what it
	// just wrote.
	q := s.r
	if !withMessages {
		q = s.w
	}
	t := &store.Transcript{}
	var created, updated string
	var deleted sql.NullString
	err := q.QueryRowContext(ctx, `SELECT session_id, owner_id, private, title, repo, created_at, updated_at, deleted_at FROM transcripts WHERE session_id = ?`, id).
		Scan(&t.SessionID, &t.OwnerID, &t.Private, &t.Title, &t.Repo, &created, &updated, &deleted)
	if err != nil {
		return nil, nil, mapErr(err, "get the transcript of session %s", id)
	}
	if t.CreatedAt, err = parseTS(created); err != nil {
		return nil, nil, err
	}
	if t.UpdatedAt, err = parseTS(updated); err != nil {
		return nil, nil, err
	}
	if t.DeletedAt, err = parseTSPtr(deleted); err != nil {
		return nil, nil, err
	}
	if !withMessages {
		return t, nil, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT message_id, role, body, created_at FROM transcript_messages WHERE session_id = ? ORDER BY created_at, message_id`, id)
	if err != nil {
		return nil, nil, mapErr(err, "read the transcript of session %s", id)
	}
	defer rows.Close()
	msgs := []*store.TranscriptMessage{}
	for rows.Next() {
		m := &store.TranscriptMessage{}
		var body, created string
		if err := rows.Scan(&m.ID, &m.Role, &body, &created); err != nil {
			return nil, nil, mapErr(err, "read the transcript of session %s", id)
		}
		m.Body = []byte(body)
		if m.CreatedAt, err = parseTS(created); err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, m)
	}
	return t, msgs, mapErr(rows.Err(), "read the transcript of session %s", id)
}

// PruneTranscripts implements store.Store; the messages go with their head.
func (s *Store) PruneTranscripts(ctx context.Context, deletedBefore time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM transcripts WHERE deleted_at IS NOT NULL AND deleted_at < ?`, ts(deletedBefore))
	if err != nil {
		return 0, mapErr(err, "prune transcripts")
	}
	n, err := res.RowsAffected()
	return int(n), mapErr(err, "prune transcripts")
}
