package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

const sessionColumns = `id, title, owner_id, private, repo, branch, prompt, model, persistent,
	idle_timeout_ns, ttl_ns, state, reason, message, pod_name, pod_namespace, image, init_image,
	opencode_session_id, prompt_sent, created_at, updated_at, started_at, stopped_at,
	last_activity_at, last_activity_source, resource_version, start_kind, forked_from`

type scanner interface{ Scan(dest ...any) error }

func scanSession(row scanner) (*store.Session, error) {
	var (
		s                               store.Session
		idle, ttl                       int64
		state                           string
		created, updated, activity      string
		started, stopped                sql.NullString
		private, persistent, promptSent bool
	)
	err := row.Scan(&s.ID, &s.Title, &s.OwnerID, &private, &s.Repo, &s.Branch, &s.Prompt, &s.Model, &persistent,
		&idle, &ttl, &state, &s.Reason, &s.Message, &s.PodName, &s.PodNamespace, &s.Image, &s.InitImage,
		&s.OpenCodeSessionID, &promptSent, &created, &updated, &started, &stopped,
		&activity, &s.LastActivitySource, &s.ResourceVersion, &s.StartKind, &s.ForkedFrom)
	if err != nil {
		return nil, err
	}
	s.Private, s.Persistent, s.PromptSent = private, persistent, promptSent
	s.IdleTimeout, s.TTL = time.Duration(idle), time.Duration(ttl)
	s.State = apiv1.SessionState(state)
	if s.CreatedAt, err = parseTS(created); err != nil {
		return nil, err
	}
	if s.UpdatedAt, err = parseTS(updated); err != nil {
		return nil, err
	}
	if s.LastActivityAt, err = parseTS(activity); err != nil {
		return nil, err
	}
	if s.StartedAt, err = parseTSPtr(started); err != nil {
		return nil, err
	}
	if s.StoppedAt, err = parseTSPtr(stopped); err != nil {
		return nil, err
	}
	return &s, nil
}

// CreateSession implements store.Store. The quota check and the insert share one
// IMMEDIATE transaction on the single writer connection, so they are atomic.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session, maxActive int) error {
	in := *sess
	if err := sqlcommon.PrepareSession(&in); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err, "create session %q", in.ID)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if maxActive > 0 {
		active := sqlcommon.ActiveStates()
		args := []any{in.OwnerID}
		for _, st := range active {
			args = append(args, st)
		}
		var n int
		q := `SELECT count(*) FROM sessions WHERE owner_id = ? AND state IN (` + placeholders(len(active)) + `)`
		if err := tx.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			return mapErr(err, "create session %q: count active sessions", in.ID)
		}
		if n >= maxActive {
			return fmt.Errorf("create session: owner %q has %d active sessions (limit %d): %w", in.OwnerID, n, maxActive, store.ErrQuotaExceeded)
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		in.ID, in.Title, in.OwnerID, in.Private, in.Repo, in.Branch, in.Prompt, in.Model, in.Persistent,
		int64(in.IdleTimeout), int64(in.TTL), string(in.State), in.Reason, in.Message, in.PodName, in.PodNamespace,
		in.Image, in.InitImage, in.OpenCodeSessionID, in.PromptSent, ts(in.CreatedAt), ts(in.UpdatedAt),
		tsPtr(in.StartedAt), tsPtr(in.StoppedAt), ts(in.LastActivityAt), in.LastActivitySource, in.ResourceVersion, in.StartKind, in.ForkedFrom)
	if err != nil {
		return mapErr(err, "create session %q", in.ID)
	}
	if err := tx.Commit(); err != nil {
		return mapErr(err, "create session %q", in.ID)
	}
	*sess = in
	return nil
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, id string) (*store.Session, error) {
	sess, err := scanSession(s.r.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id))
	if err != nil {
		return nil, mapErr(err, "session %q", id)
	}
	return sess, nil
}

// UpdateSession implements store.Store. LastActivityAt only moves forward, as with
// TouchSession, so an update built from a stale read never rewinds activity.
func (s *Store) UpdateSession(ctx context.Context, sess *store.Session) error {
	in := *sess
	if err := sqlcommon.PrepareUpdate(&in); err != nil {
		return err
	}
	if err := s.update(ctx, s.w, &in); err != nil {
		return err
	}
	*sess = in
	return nil
}

// ActivateSession implements store.Store: the count and the update share one IMMEDIATE
// transaction on the single writer connection, like CreateSession's.
func (s *Store) ActivateSession(ctx context.Context, sess *store.Session, maxActive int) error {
	if maxActive <= 0 || !sess.State.Active() {
		return s.UpdateSession(ctx, sess)
	}
	in := *sess
	if err := sqlcommon.PrepareUpdate(&in); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err, "activate session %q", in.ID)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	active := sqlcommon.ActiveStates()
	args := []any{in.OwnerID, in.ID}
	for _, st := range active {
		args = append(args, st)
	}
	var others int
	q := `SELECT count(*) FROM sessions WHERE owner_id = ? AND id <> ? AND state IN (` + placeholders(len(active)) + `)`
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&others); err != nil {
		return mapErr(err, "activate session %q: count active sessions", in.ID)
	}
	var stored string
	if err := tx.QueryRowContext(ctx, `SELECT state FROM sessions WHERE id = ?`, in.ID).Scan(&stored); err != nil {
		return mapErr(err, "activate session %q", in.ID)
	}
	if !apiv1.SessionState(stored).Active() && others >= maxActive {
		return fmt.Errorf("activate session %q: owner %q has %d active sessions (limit %d): %w", in.ID, in.OwnerID, others, maxActive, store.ErrQuotaExceeded)
	}
	if err := s.update(ctx, tx, &in); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return mapErr(err, "activate session %q", in.ID)
	}
	*sess = in
	return nil
}

// update writes in (prepared) through q when its resource version is current.
func (s *Store) update(ctx context.Context, q querier, in *store.Session) error {
	now := sqlcommon.Now()
	activity := ts(in.LastActivityAt)
	var gotActivity, gotUpdated string
	err := q.QueryRowContext(ctx, `UPDATE sessions SET
			title = ?, private = ?, repo = ?, branch = ?, prompt = ?, model = ?, persistent = ?,
			idle_timeout_ns = ?, ttl_ns = ?, state = ?, reason = ?, message = ?, pod_name = ?,
			pod_namespace = ?, image = ?, init_image = ?, opencode_session_id = ?, prompt_sent = ?,
			started_at = ?, stopped_at = ?,
			last_activity_source = CASE WHEN ? > last_activity_at THEN ? ELSE last_activity_source END,
			last_activity_at = max(last_activity_at, ?),
			updated_at = ?, resource_version = resource_version + 1
		WHERE id = ? AND resource_version = ?
		RETURNING last_activity_at, last_activity_source, resource_version, updated_at`,
		in.Title, in.Private, in.Repo, in.Branch, in.Prompt, in.Model, in.Persistent,
		int64(in.IdleTimeout), int64(in.TTL), string(in.State), in.Reason, in.Message, in.PodName,
		in.PodNamespace, in.Image, in.InitImage, in.OpenCodeSessionID, in.PromptSent,
		tsPtr(in.StartedAt), tsPtr(in.StoppedAt),
		activity, in.LastActivitySource,
		activity,
		ts(now), in.ID, in.ResourceVersion,
	).Scan(&gotActivity, &in.LastActivitySource, &in.ResourceVersion, &gotUpdated)
	if errors.Is(err, sql.ErrNoRows) {
		return missingOrStale(ctx, q, in.ID, in.ResourceVersion)
	}
	if err != nil {
		return mapErr(err, "update session %q", in.ID)
	}
	if in.LastActivityAt, err = parseTS(gotActivity); err != nil {
		return err
	}
	if in.UpdatedAt, err = parseTS(gotUpdated); err != nil {
		return err
	}
	return nil
}

// missingOrStale explains an update that matched no row, through the same q (inside a
// transaction on the single writer connection, any other would wait forever).
func missingOrStale(ctx context.Context, q querier, id string, rv int64) error {
	var stored int64
	err := q.QueryRowContext(ctx, `SELECT resource_version FROM sessions WHERE id = ?`, id).Scan(&stored)
	if err != nil {
		return mapErr(err, "update session %q", id)
	}
	return fmt.Errorf("update session %q: resource version %d is stale (stored %d): %w", id, rv, stored, store.ErrConflict)
}

// TouchSession implements store.Store.
func (s *Store) TouchSession(ctx context.Context, id string, at time.Time, source string) error {
	t := ts(at)
	res, err := s.w.ExecContext(ctx, `UPDATE sessions SET last_activity_at = ?, last_activity_source = ?
		WHERE id = ? AND last_activity_at < ?`, t, source, id, t)
	if err != nil {
		return mapErr(err, "touch session %q", id)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return s.exists(ctx, "sessions", id, "touch session %q")
	}
	return nil
}

// exists is nil when the row with this id is in table, else ErrNotFound.
func (s *Store) exists(ctx context.Context, table, id, format string) error {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM `+table+` WHERE id = ?`, id).Scan(&one)
	return mapErr(err, format, id)
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM sessions WHERE id = ?`, id)
	if err != nil {
		return mapErr(err, "delete session %q", id)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete session %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// ListSessions implements store.Store with keyset pagination on (created_at, id).
func (s *Store) ListSessions(ctx context.Context, f store.SessionFilter) (*store.SessionPage, error) {
	limit := sqlcommon.Limit(f.Limit)
	states, err := sqlcommon.States(f.States)
	if err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.OwnerID != "" {
		where = append(where, "owner_id = ?")
		args = append(args, f.OwnerID)
	}
	if f.VisibleTo != "" {
		where = append(where, "(owner_id = ? OR private = 0)")
		args = append(args, f.VisibleTo)
	}
	if len(states) > 0 {
		where = append(where, "state IN ("+placeholders(len(states))+")")
		for _, st := range states {
			args = append(args, st)
		}
	}
	if f.Continue != "" {
		after, id, err := sqlcommon.DecodeSessionCursor(f.Continue)
		if err != nil {
			return nil, err
		}
		where = append(where, "(created_at, id) > (?, ?)")
		args = append(args, ts(after), id)
	}
	q := `SELECT ` + sessionColumns + ` FROM sessions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at, id LIMIT ?`
	args = append(args, limit+1)

	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mapErr(err, "list sessions")
	}
	defer rows.Close()
	page := &store.SessionPage{Items: []*store.Session{}}
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, mapErr(err, "list sessions")
		}
		page.Items = append(page.Items, sess)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, "list sessions")
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.Continue = sqlcommon.EncodeSessionCursor(last.CreatedAt, last.ID)
	}
	return page, nil
}

// CountSessions implements store.Store.
func (s *Store) CountSessions(ctx context.Context) (map[apiv1.SessionState]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, count(*) FROM sessions GROUP BY state`)
	if err != nil {
		return nil, mapErr(err, "count sessions")
	}
	defer rows.Close()
	out := map[apiv1.SessionState]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, mapErr(err, "count sessions")
		}
		out[apiv1.SessionState(st)] = n
	}
	return out, mapErr(rows.Err(), "count sessions")
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}
