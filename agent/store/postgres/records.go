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
)

// UpsertUser implements store.Store.
func (s *Store) UpsertUser(ctx context.Context, u *store.User) error {
	if u.Source == "" || u.Subject == "" {
		return fmt.Errorf("upsert user: source and subject are required: %w", store.ErrInvalid)
	}
	seen := u.LastSeenAt
	if seen.IsZero() {
		seen = time.Now()
	}
	seen = sqlcommon.Time(seen)
	var (
		id      string
		created time.Time
	)
	err := s.pool.QueryRow(ctx, `INSERT INTO users
			(id, source, subject, email, display_name, groups_json, admin, created_at, last_seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
		ON CONFLICT (source, subject) DO UPDATE SET
			email = excluded.email, display_name = excluded.display_name,
			groups_json = excluded.groups_json, admin = excluded.admin,
			last_seen_at = excluded.last_seen_at
		RETURNING id, created_at`,
		sqlcommon.NewID(), u.Source, u.Subject, u.Email, u.DisplayName, sqlcommon.MarshalGroups(u.Groups),
		u.Admin, seen).Scan(&id, &created)
	if err != nil {
		return mapErr(err, "upsert user %s/%s", u.Source, u.Subject)
	}
	u.ID, u.CreatedAt, u.LastSeenAt = id, utc(created), seen
	return nil
}

const userColumns = `id, source, subject, email, display_name, groups_json, admin, created_at, last_seen_at`

func scanUser(row pgx.Row) (*store.User, error) {
	var (
		u      store.User
		groups string
	)
	if err := row.Scan(&u.ID, &u.Source, &u.Subject, &u.Email, &u.DisplayName, &groups, &u.Admin, &u.CreatedAt, &u.LastSeenAt); err != nil {
		return nil, err
	}
	var err error
	if u.Groups, err = sqlcommon.UnmarshalGroups(groups); err != nil {
		return nil, err
	}
	u.CreatedAt, u.LastSeenAt = utc(u.CreatedAt), utc(u.LastSeenAt)
	return &u, nil
}

// GetUser implements store.Store.
func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if err != nil {
		return nil, mapErr(err, "user %q", id)
	}
	return u, nil
}

// FindUsers implements store.Store.
func (s *Store) FindUsers(ctx context.Context, name string) ([]*store.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM users
		WHERE id = $1 OR subject = $1 OR (email <> '' AND lower(email) = lower($1))
		ORDER BY created_at, id`, name)
	if err != nil {
		return nil, mapErr(err, "find users")
	}
	defer rows.Close()
	out := []*store.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, mapErr(err, "find users")
		}
		out = append(out, u)
	}
	return out, mapErr(rows.Err(), "find users")
}

// CreateToken implements store.Store; an empty ID is generated.
func (s *Store) CreateToken(ctx context.Context, t *store.Token) error {
	in := *t
	if in.OwnerID == "" || len(in.Hash) == 0 {
		return fmt.Errorf("create token: owner and hash are required: %w", store.ErrInvalid)
	}
	if in.ID == "" {
		in.ID = sqlcommon.NewID()
	}
	if in.CreatedAt.IsZero() {
		in.CreatedAt = time.Now()
	}
	in.CreatedAt = sqlcommon.Time(in.CreatedAt)
	in.ExpiresAt = sqlcommon.TimePtr(in.ExpiresAt)
	in.LastUsedAt = sqlcommon.TimePtr(in.LastUsedAt)
	_, err := s.pool.Exec(ctx, `INSERT INTO tokens (id, owner_id, name, hash, created_at, expires_at, last_used_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		in.ID, in.OwnerID, in.Name, in.Hash, in.CreatedAt, in.ExpiresAt, in.LastUsedAt)
	if err != nil {
		return mapErr(err, "create token %q", in.Name)
	}
	*t = in
	return nil
}

const tokenColumns = `id, owner_id, name, hash, created_at, expires_at, last_used_at`

func scanToken(row pgx.Row) (*store.Token, error) {
	var t store.Token
	if err := row.Scan(&t.ID, &t.OwnerID, &t.Name, &t.Hash, &t.CreatedAt, &t.ExpiresAt, &t.LastUsedAt); err != nil {
		return nil, err
	}
	t.CreatedAt, t.ExpiresAt, t.LastUsedAt = utc(t.CreatedAt), utcPtr(t.ExpiresAt), utcPtr(t.LastUsedAt)
	return &t, nil
}

// GetTokenByHash implements store.Store.
func (s *Store) GetTokenByHash(ctx context.Context, hash []byte) (*store.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	if err != nil {
		return nil, mapErr(err, "token")
	}
	return t, nil
}

// ListTokens implements store.Store, oldest first.
func (s *Store) ListTokens(ctx context.Context, ownerID string) ([]*store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE owner_id = $1 ORDER BY created_at, id`, ownerID)
	if err != nil {
		return nil, mapErr(err, "list tokens")
	}
	defer rows.Close()
	out := []*store.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, mapErr(err, "list tokens")
		}
		out = append(out, t)
	}
	return out, mapErr(rows.Err(), "list tokens")
}

// DeleteToken implements store.Store.
func (s *Store) DeleteToken(ctx context.Context, ownerID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE id = $1 AND owner_id = $2`, id, ownerID)
	if err != nil {
		return mapErr(err, "delete token %q", id)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete token %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteUserTokens implements store.Store.
func (s *Store) DeleteUserTokens(ctx context.Context, ownerID string) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE owner_id = $1`, ownerID)
	if err != nil {
		return 0, mapErr(err, "delete tokens of user %q", ownerID)
	}
	return int(tag.RowsAffected()), nil
}

// TouchToken implements store.Store; LastUsedAt never moves backwards.
func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE tokens SET last_used_at = $1
		WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`, sqlcommon.Time(at), id)
	if err != nil {
		return mapErr(err, "touch token %q", id)
	}
	if tag.RowsAffected() == 0 {
		return s.exists(ctx, "tokens", id, "touch token %q")
	}
	return nil
}

var errNoKeyring = errors.New("credentials need a keyring: configure the agent's auth secret")

// PutCredential implements store.Store.
func (s *Store) PutCredential(ctx context.Context, c *store.Credential) error {
	if s.kr == nil {
		return fmt.Errorf("put credential: %w", errNoKeyring)
	}
	if c.OwnerID == "" || c.Provider == "" {
		return fmt.Errorf("put credential: owner and provider are required: %w", store.ErrInvalid)
	}
	ct, err := s.kr.Encrypt(c.Secret, sqlcommon.CredentialAAD(c.OwnerID, c.Provider))
	if err != nil {
		return err
	}
	now := sqlcommon.Now()
	var created time.Time
	err = s.pool.QueryRow(ctx, `INSERT INTO credentials (owner_id, provider, ciphertext, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $4)
		ON CONFLICT (owner_id, provider) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at
		RETURNING created_at`, c.OwnerID, c.Provider, ct, now).Scan(&created)
	if err != nil {
		return mapErr(err, "put credential %q", c.Provider)
	}
	c.CreatedAt, c.UpdatedAt = utc(created), now
	return nil
}

// GetCredential implements store.Store.
func (s *Store) GetCredential(ctx context.Context, ownerID, provider string) (*store.Credential, error) {
	if s.kr == nil {
		return nil, fmt.Errorf("get credential: %w", errNoKeyring)
	}
	var ct []byte
	c := &store.Credential{OwnerID: ownerID, Provider: provider}
	err := s.pool.QueryRow(ctx, `SELECT ciphertext, created_at, updated_at FROM credentials
		WHERE owner_id = $1 AND provider = $2`, ownerID, provider).Scan(&ct, &c.CreatedAt, &c.UpdatedAt)
	if err != nil {
		return nil, mapErr(err, "credential %q", provider)
	}
	if c.Secret, err = s.kr.Decrypt(ct, sqlcommon.CredentialAAD(ownerID, provider)); err != nil {
		return nil, fmt.Errorf("credential %q: %w", provider, err)
	}
	c.CreatedAt, c.UpdatedAt = utc(c.CreatedAt), utc(c.UpdatedAt)
	return c, nil
}

// ListCredentials implements store.Store, by provider.
func (s *Store) ListCredentials(ctx context.Context, ownerID string) ([]*store.Credential, error) {
	rows, err := s.pool.Query(ctx, `SELECT provider, created_at, updated_at FROM credentials
		WHERE owner_id = $1 ORDER BY provider`, ownerID)
	if err != nil {
		return nil, mapErr(err, "list credentials")
	}
	defer rows.Close()
	out := []*store.Credential{}
	for rows.Next() {
		c := &store.Credential{OwnerID: ownerID}
		if err := rows.Scan(&c.Provider, &c.CreatedAt, &c.UpdatedAt); err != nil {
			return nil, mapErr(err, "list credentials")
		}
		c.CreatedAt, c.UpdatedAt = utc(c.CreatedAt), utc(c.UpdatedAt)
		out = append(out, c)
	}
	return out, mapErr(rows.Err(), "list credentials")
}

// DeleteCredential implements store.Store.
func (s *Store) DeleteCredential(ctx context.Context, ownerID, provider string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM credentials WHERE owner_id = $1 AND provider = $2`, ownerID, provider)
	if err != nil {
		return mapErr(err, "delete credential %q", provider)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete credential %q: %w", provider, store.ErrNotFound)
	}
	return nil
}

// RotateCredentials implements store.Store in one transaction: either every
// credential sealed by an old key is re-encrypted, or none is.
func (s *Store) RotateCredentials(ctx context.Context) (int, error) {
	if s.kr == nil {
		return 0, fmt.Errorf("rotate credentials: %w", errNoKeyring)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, mapErr(err, "rotate credentials")
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	type row struct {
		owner, provider string
		ct              []byte
	}
	rows, err := tx.Query(ctx, `SELECT owner_id, provider, ciphertext FROM credentials FOR UPDATE`)
	if err != nil {
		return 0, mapErr(err, "rotate credentials")
	}
	var stale []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.owner, &r.provider, &r.ct); err != nil {
			rows.Close()
			return 0, mapErr(err, "rotate credentials")
		}
		if s.kr.NeedsRotation(r.ct) {
			stale = append(stale, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, mapErr(err, "rotate credentials")
	}
	now := sqlcommon.Now()
	for _, r := range stale {
		aad := sqlcommon.CredentialAAD(r.owner, r.provider)
		pt, err := s.kr.Decrypt(r.ct, aad)
		if err != nil {
			return 0, fmt.Errorf("rotate credential %q of %q: %w", r.provider, r.owner, err)
		}
		ct, err := s.kr.Encrypt(pt, aad)
		if err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET ciphertext = $1, updated_at = $2 WHERE owner_id = $3 AND provider = $4`,
			ct, now, r.owner, r.provider); err != nil {
			return 0, mapErr(err, "rotate credentials")
		}
	}
	np, err := s.rotateProviders(ctx, tx, now)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, mapErr(err, "rotate credentials")
	}
	return len(stale) + np, nil
}

// AppendAudit implements store.Store; it fills ID (and Time when zero).
func (s *Store) AppendAudit(ctx context.Context, e *store.AuditEvent) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = sqlcommon.Time(e.Time)
	err := s.pool.QueryRow(ctx, `INSERT INTO audit_events (time, actor, action, target, outcome, detail, request_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		e.Time, e.Actor, e.Action, e.Target, e.Outcome, e.Detail, e.RequestID).Scan(&e.ID)
	return mapErr(err, "append audit event")
}

// ListAudit implements store.Store, newest first.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) (*store.AuditPage, error) {
	limit := sqlcommon.Limit(f.Limit)
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Actor != "" {
		where = append(where, "actor = "+arg(f.Actor))
	}
	if f.Target != "" {
		where = append(where, "target = "+arg(f.Target))
	}
	if f.Continue != "" {
		before, err := sqlcommon.DecodeAuditCursor(f.Continue)
		if err != nil {
			return nil, err
		}
		where = append(where, "id < "+arg(before))
	}
	q := `SELECT id, time, actor, action, target, outcome, detail, request_id FROM audit_events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id DESC LIMIT ` + arg(limit+1)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, mapErr(err, "list audit events")
	}
	defer rows.Close()
	page := &store.AuditPage{Items: []*store.AuditEvent{}}
	for rows.Next() {
		var e store.AuditEvent
		if err := rows.Scan(&e.ID, &e.Time, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.Detail, &e.RequestID); err != nil {
			return nil, mapErr(err, "list audit events")
		}
		e.Time = utc(e.Time)
		page.Items = append(page.Items, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, "list audit events")
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.Continue = sqlcommon.EncodeAuditCursor(page.Items[limit-1].ID)
	}
	return page, nil
}

// GetSetting implements store.Store.
func (s *Store) GetSetting(ctx context.Context, key string) (string, error) {
	var v string
	if err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v); err != nil {
		return "", mapErr(err, "setting %q", key)
	}
	return v, nil
}

// PutSetting implements store.Store.
func (s *Store) PutSetting(ctx context.Context, key, value string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
		key, value, sqlcommon.Now())
	return mapErr(err, "put setting %q", key)
}
