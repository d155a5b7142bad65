package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

const sessionColumns = `id, title, owner_id, private, repo, branch, prompt, model, persistent,
	idle_timeout_ns, ttl_ns, state, reason, message, pod_name, pod_namespace, image, init_image,
	opencode_session_id, prompt_sent, created_at, updated_at, started_at, stopped_at,
	last_activity_at, last_activity_source, resource_version, start_kind, forked_from`

func scanSession(row pgx.Row) (*store.Session, error) {
	var (
		s         store.Session
		idle, ttl int64
		state     string
	)
	err := row.Scan(&s.ID, &s.Title, &s.OwnerID, &s.Private, &s.Repo, &s.Branch, &s.Prompt, &s.Model, &s.Persistent,
		&idle, &ttl, &state, &s.Reason, &s.Message, &s.PodName, &s.PodNamespace, &s.Image, &s.InitImage,
		&s.OpenCodeSessionID, &s.PromptSent, &s.CreatedAt, &s.UpdatedAt, &s.StartedAt, &s.StoppedAt,
		&s.LastActivityAt, &s.LastActivitySource, &s.ResourceVersion, &s.StartKind, &s.ForkedFrom)
	if err != nil {
		return nil, err
	}
	s.IdleTimeout, s.TTL = time.Duration(idle), time.Duration(ttl)
	s.State = apiv1.SessionState(state)
	s.CreatedAt, s.UpdatedAt, s.LastActivityAt = utc(s.CreatedAt), utc(s.UpdatedAt), utc(s.LastActivityAt)
	s.StartedAt, s.StoppedAt = utcPtr(s.StartedAt), utcPtr(s.StoppedAt)
	return &s, nil
}

// quotaLockSQL takes the transaction-scoped lock of an owner's session quota.
const quotaLockSQL = `SELECT pg_advisory_xact_lock(hashtext('cake-agents/session-quota'), hashtext($1))`

// CreateSession implements store.Store. With a limit, creates of one owner are
// serialised by a transaction-scoped advisory lock on the owner, so the count and the
// insert are atomic even across agent replicas.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session, maxActive int) error {
	in := *sess
	if err := sqlcommon.PrepareSession(&in); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return mapErr(err, "create session %q", in.ID)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if maxActive > 0 {
		if _, err := tx.Exec(ctx, quotaLockSQL, in.OwnerID); err != nil {
			return mapErr(err, "create session %q: lock the owner's quota", in.ID)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE owner_id = $1 AND state = ANY($2)`,
			in.OwnerID, sqlcommon.ActiveStates()).Scan(&n); err != nil {
			return mapErr(err, "create session %q: count active sessions", in.ID)
		}
		if n >= maxActive {
			return fmt.Errorf("create session: owner %q has %d active sessions (limit %d): %w", in.OwnerID, n, maxActive, store.ErrQuotaExceeded)
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES
		($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)`,
		in.ID, in.Title, in.OwnerID, in.Private, in.Repo, in.Branch, in.Prompt, in.Model, in.Persistent,
		int64(in.IdleTimeout), int64(in.TTL), string(in.State), in.Reason, in.Message, in.PodName, in.PodNamespace,
		in.Image, in.InitImage, in.OpenCodeSessionID, in.PromptSent, in.CreatedAt, in.UpdatedAt,
		in.StartedAt, in.StoppedAt, in.LastActivityAt, in.LastActivitySource, in.ResourceVersion, in.StartKind, in.ForkedFrom)
	if err != nil {
		return mapErr(err, "create session %q", in.ID)
	}
	if err := tx.Commit(ctx); err != nil {
		return mapErr(err, "create session %q", in.ID)
	}
	*sess = in
	return nil
}

// GetSession implements store.Store.
func (s *Store) GetSession(ctx context.Context, id string) (*store.Session, error) {
	sess, err := scanSession(s.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id))
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
	if err := update(ctx, s.pool, &in); err != nil {
		return err
	}
	*sess = in
	return nil
}

// ActivateSession implements store.Store under the owner's quota lock, the one
// CreateSession takes, so creates and starts of one owner on every replica serialise.
func (s *Store) ActivateSession(ctx context.Context, sess *store.Session, maxActive int) error {
	if maxActive <= 0 || !sess.State.Active() {
		return s.UpdateSession(ctx, sess)
	}
	in := *sess
	if err := sqlcommon.PrepareUpdate(&in); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return mapErr(err, "activate session %q", in.ID)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, quotaLockSQL, in.OwnerID); err != nil {
		return mapErr(err, "activate session %q: lock the owner's quota", in.ID)
	}
	var (
		others int
		stored *string // nil: no such session
	)
	err = tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM sessions WHERE owner_id = $1 AND id <> $2 AND state = ANY($3)),
			(SELECT state FROM sessions WHERE id = $2)`,
		in.OwnerID, in.ID, sqlcommon.ActiveStates()).Scan(&others, &stored)
	if err != nil {
		return mapErr(err, "activate session %q: count active sessions", in.ID)
	}
	if stored == nil {
		return fmt.Errorf("activate session %q: %w", in.ID, store.ErrNotFound)
	}
	if !apiv1.SessionState(*stored).Active() && others >= maxActive {
		return fmt.Errorf("activate session %q: owner %q has %d active sessions (limit %d): %w", in.ID, in.OwnerID, others, maxActive, store.ErrQuotaExceeded)
	}
	if err := update(ctx, tx, &in); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return mapErr(err, "activate session %q", in.ID)
	}
	*sess = in
	return nil
}

// update writes in (prepared) through q when its resource version is current.
func update(ctx context.Context, q queryRower, in *store.Session) error {
	err := q.QueryRow(ctx, `UPDATE sessions SET
			title = $1, private = $2, repo = $3, branch = $4, prompt = $5, model = $6, persistent = $7,
			idle_timeout_ns = $8, ttl_ns = $9, state = $10, reason = $11, message = $12, pod_name = $13,
			pod_namespace = $14, image = $15, init_image = $16, opencode_session_id = $17, prompt_sent = $18,
			started_at = $19, stopped_at = $20,
			last_activity_source = CASE WHEN $21 > last_activity_at THEN $22 ELSE last_activity_source END,
			last_activity_at = GREATEST(last_activity_at, $21),
			updated_at = $23, resource_version = resource_version + 1
		WHERE id = $24 AND resource_version = $25
		RETURNING last_activity_at, last_activity_source, resource_version, updated_at`,
		in.Title, in.Private, in.Repo, in.Branch, in.Prompt, in.Model, in.Persistent,
		int64(in.IdleTimeout), int64(in.TTL), string(in.State), in.Reason, in.Message, in.PodName,
		in.PodNamespace, in.Image, in.InitImage, in.OpenCodeSessionID, in.PromptSent,
		in.StartedAt, in.StoppedAt, in.LastActivityAt, in.LastActivitySource,
		sqlcommon.Now(), in.ID, in.ResourceVersion,
	).Scan(&in.LastActivityAt, &in.LastActivitySource, &in.ResourceVersion, &in.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		var stored int64
		err := q.QueryRow(ctx, `SELECT resource_version FROM sessions WHERE id = $1`, in.ID).Scan(&stored)
		if err != nil {
			return mapErr(err, "update session %q", in.ID)
		}
		return fmt.Errorf("update session %q: resource version %d is stale (stored %d): %w", in.ID, in.ResourceVersion, stored, store.ErrConflict)
	}
	if err != nil {
		return mapErr(err, "update session %q", in.ID)
	}
	in.LastActivityAt, in.UpdatedAt = utc(in.LastActivityAt), utc(in.UpdatedAt)
	return nil
}

// TouchSession implements store.Store.
func (s *Store) TouchSession(ctx context.Context, id string, at time.Time, source string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE sessions SET last_activity_at = $1, last_activity_source = $2
		WHERE id = $3 AND last_activity_at < $1`, sqlcommon.Time(at), source, id)
	if err != nil {
		return mapErr(err, "touch session %q", id)
	}
	if tag.RowsAffected() == 0 {
		return s.exists(ctx, "sessions", id, "touch session %q")
	}
	return nil
}

func (s *Store) exists(ctx context.Context, table, id, format string) error {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM `+table+` WHERE id = $1`, id).Scan(&one)
	return mapErr(err, format, id)
}

// DeleteSession implements store.Store.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE id = $1`, id)
	if err != nil {
		return mapErr(err, "delete session %q", id)
	}
	if tag.RowsAffected() == 0 {
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
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.OwnerID != "" {
		where = append(where, "owner_id = "+arg(f.OwnerID))
	}
	if f.VisibleTo != "" {
		where = append(where, "(owner_id = "+arg(f.VisibleTo)+" OR NOT private)")
	}
	if len(states) > 0 {
		where = append(where, "state = ANY("+arg(states)+")")
	}
	if f.Continue != "" {
		after, id, err := sqlcommon.DecodeSessionCursor(f.Continue)
		if err != nil {
			return nil, err
		}
		where = append(where, "(created_at, id) > ("+arg(after)+"::timestamptz, "+arg(id)+"::text)")
	}
	q := `SELECT ` + sessionColumns + ` FROM sessions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at, id LIMIT ` + arg(limit+1)

	rows, err := s.pool.Query(ctx, q, args...)
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
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM sessions GROUP BY state`)
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
