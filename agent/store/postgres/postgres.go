// Package postgres is the PostgreSQL store backend (pgx/v5 with pgxpool), for
// production and for more than one agent replica.
//
// Concurrency comes from the database: optimistic updates compare the resource version
// in the UPDATE itself, the per-owner session quota serialises creates of one owner
// with a transaction-scoped advisory lock, per-session operations of every replica
// serialise on a session-level advisory lock (LockSession), and migrations run under
// another advisory lock so that replicas starting together migrate once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
	"github.com/cakeai/cake-agents/agent/store/keyring"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// MigrationFiles returns the embedded migrations (migrations/NNNN_name.sql).
func MigrationFiles() fs.FS { return migrationFS }

// migrationLockKey is the pg_advisory_xact_lock key guarding migrations ("cakemigr").
const migrationLockKey int64 = 0x63616b656d696772

// Options configure Open.
type Options struct {
	// ConnString is a postgres:// URL or a key=value DSN. Empty means libpq's PG*
	// environment variables (PGHOST, PGUSER, PGPASSWORD, PGDATABASE, ...). Ignored
	// when Config is set.
	ConnString string
	// Config, when set, is used as is.
	Config *pgxpool.Config
	// Keyring encrypts linked credentials; without one the credential methods fail.
	Keyring *keyring.Keyring
	// Logger receives migration messages; nil discards them.
	Logger hclog.Logger
	// SkipMigrate opens the database without applying migrations (`agent migrate`
	// applies them itself through store.Migrator).
	SkipMigrate bool
	// MaxConns caps the pool (default: pgxpool's, or pool_max_conns in ConnString).
	MaxConns int32
	// LockConns caps the separate pool whose connections hold session locks, i.e. how
	// many sessions this store can have locked at once (default 16).
	LockConns int32
}

// Store is the PostgreSQL implementation of store.Store and store.Migrator.
type Store struct {
	pool       *pgxpool.Pool
	locks      *pgxpool.Pool // connections holding session advisory locks; see LockSession
	kr         *keyring.Keyring
	log        hclog.Logger
	migrations []sqlcommon.Migration
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Migrator = (*Store)(nil)
)

// ParseConfig parses a connection string for Options.Config; "" reads the PG*
// environment variables. Errors never repeat the string (it may hold a password).
func ParseConfig(connString string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		var ue *url.Error
		var pe *pgconn.ParseConfigError
		switch {
		case errors.As(err, &ue):
			return nil, fmt.Errorf("invalid postgres connection string: %s", redact(ue.Err.Error(), connString))
		case errors.As(err, &pe) && pe.Unwrap() != nil:
			return nil, fmt.Errorf("invalid postgres connection string: %s", redact(pe.Unwrap().Error(), connString))
		}
		return nil, errors.New("invalid postgres connection string")
	}
	return cfg, nil
}

func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "<redacted>")
}

// DefaultConnectTimeout bounds opening one connection when the connection string and
// the environment set no connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// Open connects to the database and, unless o.SkipMigrate, brings its schema up to
// date. A database that cannot be reached is an error wrapping store.ErrUnavailable.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	cfg := o.Config
	if cfg == nil {
		var err error
		if cfg, err = ParseConfig(o.ConnString); err != nil {
			return nil, err
		}
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "cake-agents"
	}
	// A server that accepts the TCP connection but never answers (stopped, restarting
	// under load, behind a black-holing network) would otherwise hold every request
	// needing a new connection until its client gave up; bounded, the request gets
	// ErrUnavailable (503 with Retry-After). connect_timeout / PGCONNECT_TIMEOUT win.
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	ms, err := sqlcommon.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	lockCfg := lockPoolConfig(cfg, o.LockConns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	locks, err := pgxpool.NewWithConfig(ctx, lockCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, locks: locks, kr: o.Keyring, log: o.Logger, migrations: ms}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if !o.SkipMigrate {
		if _, err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close closes the pools; it may be called more than once. Session locks still held
// are released with their connections.
func (s *Store) Close() error {
	s.pool.Close()
	s.locks.Close()
	return nil
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("postgres: ping: %w", err)
		}
		return fmt.Errorf("postgres: %w: %w", store.ErrUnavailable, err)
	}
	return nil
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)`

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func schemaVersion(ctx context.Context, q queryRower) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, mapErr(err, "read schema version")
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, mapErr(err, "read schema version")
	}
	return v, nil
}

// SchemaVersion implements store.Migrator.
func (s *Store) SchemaVersion(ctx context.Context) (current, latest int, err error) {
	current, err = schemaVersion(ctx, s.pool)
	return current, sqlcommon.Latest(s.migrations), err
}

// Migrate implements store.Migrator. All pending migrations run in one transaction
// that first takes an advisory lock, so concurrent agents serialise here and the
// later ones find nothing to do; a failed migration leaves the schema untouched.
// (Hence no migration may use CREATE INDEX CONCURRENTLY.)
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	return s.MigrateTo(ctx, sqlcommon.Latest(s.migrations))
}

// MigrateTo implements store.Migrator: Migrate, stopping after version to.
func (s *Store) MigrateTo(ctx context.Context, to int) ([]int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, mapErr(err, "migrate")
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
		return nil, mapErr(err, "migrate: take the migration lock")
	}
	if _, err := tx.Exec(ctx, createMigrationsTable); err != nil {
		return nil, mapErr(err, "migrate")
	}
	current, err := schemaVersion(ctx, tx)
	if err != nil {
		return nil, err
	}
	pending, err := sqlcommon.Pending(s.migrations, current)
	if err != nil {
		return nil, err
	}
	pending = sqlcommon.UpTo(pending, to)
	var applied []int
	for _, m := range pending {
		// No arguments: the simple protocol runs a multi-statement file.
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return nil, mapErr(err, "migration %04d_%s", m.Version, m.Name)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return nil, mapErr(err, "record migration %d", m.Version)
		}
		applied = append(applied, m.Version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, mapErr(err, "migrate")
	}
	for _, m := range pending {
		s.log.Info("applied migration", "version", m.Version, "name", m.Name)
	}
	if len(applied) == 0 {
		s.log.Debug("schema up to date", "version", current)
	}
	return applied, nil
}

// utc normalises a time read from the database (pgx returns local time).
func utc(t time.Time) time.Time { return t.UTC() }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC()
	return &v
}

// mapErr turns driver errors into the store's sentinels.
func mapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%s: already exists: %w", what, store.ErrConflict)
		case pe.Code == "23503": // foreign_key_violation
			return fmt.Errorf("%s: the owner does not exist: %w", what, store.ErrNotFound)
		case strings.HasPrefix(pe.Code, "08"), pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", pe.Code == "53300":
			// connection exceptions, shutdown, starting up, too many connections
			return fmt.Errorf("postgres: %s: %w: %w", what, store.ErrUnavailable, err)
		}
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || (errors.As(err, &ne) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("postgres: %s: %w: %w", what, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}
