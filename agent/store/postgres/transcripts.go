package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
)

// PutTranscript implements store.Store.
func (s *Store) PutTranscript(ctx context.Context, t *store.Transcript, msgs []*store.TranscriptMessage) error {
	if err := sqlcommon.CheckTranscript(t, msgs); err != nil {
		return err
	}
	now := sqlcommon.Time(time.Now())
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return mapErr(err, "record the transcript of session %s", t.SessionID)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	// A head first made after its session was deleted (a late recording racing the
	// delete) is born deleted, so the pruner still finds it.
	head := &store.Transcript{}
	err = tx.QueryRow(ctx, `INSERT INTO transcripts (session_id, owner_id, private, title, repo, created_at, updated_at, deleted_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6, CASE WHEN EXISTS (SELECT 1 FROM sessions WHERE id = $1) THEN NULL ELSE $6::timestamptz END)
		ON CONFLICT (session_id) DO UPDATE SET owner_id = excluded.owner_id, private = excluded.private,
			title = excluded.title, repo = excluded.repo, updated_at = excluded.updated_at
		RETURNING `+transcriptColumns,
		t.SessionID, t.OwnerID, t.Private, t.Title, t.Repo, now).
		Scan(&head.SessionID, &head.OwnerID, &head.Private, &head.Title, &head.Repo, &head.CreatedAt, &head.UpdatedAt, &head.DeletedAt)
	if err != nil {
		return mapErr(err, "record the transcript of session %s", t.SessionID)
	}
	if len(msgs) > 0 {
		batch := &pgx.Batch{}
		for _, m := range msgs {
			batch.Queue(`INSERT INTO transcript_messages (session_id, message_id, role, body, created_at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (session_id, message_id) DO UPDATE SET role = excluded.role, body = excluded.body, created_at = excluded.created_at`,
				t.SessionID, m.ID, m.Role, string(m.Body), sqlcommon.Time(m.CreatedAt))
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return mapErr(err, "record the messages of session %s", t.SessionID)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return mapErr(err, "record the transcript of session %s", t.SessionID)
	}
	head.CreatedAt, head.UpdatedAt, head.DeletedAt = utc(head.CreatedAt), utc(head.UpdatedAt), utcPtr(head.DeletedAt)
	*t = *head
	return nil
}

const transcriptColumns = `session_id, owner_id, private, title, repo, created_at, updated_at, deleted_at`

// GetTranscript implements store.Store.
func (s *Store) GetTranscript(ctx context.Context, id string) (*store.Transcript, []*store.TranscriptMessage, error) {
	t := &store.Transcript{}
	err := s.pool.QueryRow(ctx, `SELECT `+transcriptColumns+` FROM transcripts WHERE session_id = $1`, id).
		Scan(&t.SessionID, &t.OwnerID, &t.Private, &t.Title, &t.Repo, &t.CreatedAt, &t.UpdatedAt, &t.DeletedAt)
	if err != nil {
		return nil, nil, mapErr(err, "get the transcript of session %s", id)
	}
	t.CreatedAt, t.UpdatedAt, t.DeletedAt = utc(t.CreatedAt), utc(t.UpdatedAt), utcPtr(t.DeletedAt)
	rows, err := s.pool.Query(ctx, `SELECT message_id, role, body, created_at FROM transcript_messages WHERE session_id = $1 ORDER BY created_at, message_id`, id)
	if err != nil {
		return nil, nil, mapErr(err, "read the transcript of session %s", id)
	}
	defer rows.Close()
	msgs := []*store.TranscriptMessage{}
	for rows.Next() {
		m := &store.TranscriptMessage{}
		var body string
		if err := rows.Scan(&m.ID, &m.Role, &body, &m.CreatedAt); err != nil {
			return nil, nil, mapErr(err, "read the transcript of session %s", id)
		}
		m.Body, m.CreatedAt = []byte(body), utc(m.CreatedAt)
		msgs = append(msgs, m)
	}
	return t, msgs, mapErr(rows.Err(), "read the transcript of session %s", id)
}

// PruneTranscripts implements store.Store; the messages go with their head.
func (s *Store) PruneTranscripts(ctx context.Context, deletedBefore time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM transcripts WHERE deleted_at IS NOT NULL AND deleted_at < $1`, sqlcommon.Time(deletedBefore))
	if err != nil {
		return 0, mapErr(err, "prune transcripts")
	}
	return int(tag.RowsAffected()), nil
}
