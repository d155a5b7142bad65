// Package sqlite is the SQLite store backend (mattn/go-sqlite3 through database/sql),
// the development default: one file on a volume, one agent replica.
//
// All writes go through a single connection whose transactions begin IMMEDIATE, so
// SQLite's one-writer rule is honoured inside the process without SQLITE_BUSY churn
// and check-then-insert sequences (the session quota) are atomic. Reads use a small
// separate pool; WAL mode lets them run while a write is in progress.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/mattn/go-sqlite3"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
	"github.com/cakeai/cake-agents/agent/store/keyring"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// MigrationFiles returns the embedded migrations (migrations/NNNN_name.sql).
func MigrationFiles() fs.FS { return migrationFS }

// Memory is the Path of a private in-memory database, for tests only: it lives as
// long as the store and is never shared with another store.
const Memory = ":memory:"

// Options configure Open.
type Options struct {
	// Path of the database file (created if missing), or Memory.
	Path string
	// Keyring encrypts linked credentials; without one the credential methods fail.
	Keyring *keyring.Keyring
	// Logger receives migration and open messages; nil discards them.
	Logger hclog.Logger
	// SkipMigrate opens the database without applying migrations (`agent migrate`
	// applies them itself through store.Migrator).
	SkipMigrate bool
	// BusyTimeout is how long a statement waits for another process's lock
	// (default 10s).
	BusyTimeout time.Duration
	// ReadConns is the size of the read pool (default 4).
	ReadConns int
}

// Store is the SQLite implementation of store.Store and store.Migrator.
type Store struct {
	w          *sql.DB // exactly one connection: every write goes through it
	r          *sql.DB // read pool; the same as w for an in-memory database
	locks      *keyedLocks
	kr         *keyring.Keyring
	log        hclog.Logger
	migrations []sqlcommon.Migration
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Migrator = (*Store)(nil)
)

// Open opens (creating if needed) the database at o.Path and, unless o.SkipMigrate,
// brings its schema up to date.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 10 * time.Second
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	ms, err := sqlcommon.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	s := &Store{kr: o.Keyring, log: o.Logger, migrations: ms, locks: locksFor(o.Path)}
	busy := fmt.Sprintf("%d", o.BusyTimeout.Milliseconds())

	if o.Path == Memory {
		s.w, err = sql.Open("sqlite3", "file::memory:?_foreign_keys=on&_txlock=immediate&_busy_timeout="+busy)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		// The database dies with its connection: keep exactly one, forever.
		s.w.SetMaxOpenConns(1)
		s.w.SetMaxIdleConns(1)
		s.w.SetConnMaxLifetime(0)
		s.w.SetConnMaxIdleTime(0)
		s.r = s.w
	} else {
		file := "file:" + escapePath(o.Path)
		s.w, err = sql.Open("sqlite3", file+"?_journal_mode=WAL&_synchronous=NORMAL&_foreign_keys=on&_txlock=immediate&_busy_timeout="+busy)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		s.w.SetMaxOpenConns(1)
		s.w.SetMaxIdleConns(1)
		s.w.SetConnMaxLifetime(0)
		s.w.SetConnMaxIdleTime(0)
		// The writer connects first so the file exists and is in WAL mode before readers open it.
		if err := s.w.PingContext(ctx); err != nil {
			s.w.Close()
			return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
		}
		s.r, err = sql.Open("sqlite3", file+"?_query_only=on&_foreign_keys=on&_busy_timeout="+busy)
		if err != nil {
			s.w.Close()
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		s.r.SetMaxOpenConns(o.ReadConns)
		s.r.SetMaxIdleConns(o.ReadConns)
	}
	if err := s.w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", o.Path, err)
	}
	if !o.SkipMigrate {
		if _, err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// escapePath makes p safe inside a SQLite file: URI.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// Close releases both pools.
func (s *Store) Close() error {
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// Ping checks that both pools can run a query.
func (s *Store) Ping(ctx context.Context) error {
	for _, db := range []*sql.DB{s.w, s.r} {
		var one int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			return fmt.Errorf("sqlite: %w: %w", store.ErrUnavailable, err)
		}
	}
	return nil
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)`

// SchemaVersion implements store.Migrator.
func (s *Store) SchemaVersion(ctx context.Context) (current, latest int, err error) {
	latest = sqlcommon.Latest(s.migrations)
	current, err = schemaVersion(ctx, s.r)
	return current, latest, err
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	var v int
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlite: read schema version: %w", err)
	}
	return v, nil
}

// Migrate implements store.Migrator. Everything happens in one IMMEDIATE transaction,
// which is the lock: another process migrating the same file waits, then finds
// nothing left to do.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	return s.MigrateTo(ctx, sqlcommon.Latest(s.migrations))
}

// MigrateTo implements store.Migrator: Migrate, stopping after version to.
func (s *Store) MigrateTo(ctx context.Context, to int) ([]int, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("sqlite: migrate: %w", err)
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
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return nil, fmt.Errorf("sqlite: migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("sqlite: record migration %d: %w", m.Version, err)
		}
		applied = append(applied, m.Version)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlite: migrate: %w", err)
	}
	for _, m := range pending {
		s.log.Info("applied migration", "version", m.Version, "name", m.Name)
	}
	if len(applied) == 0 {
		s.log.Debug("schema up to date", "version", current)
	}
	return applied, nil
}

// Times are stored as fixed-width UTC text so that text order is time order.
const timeLayout = "2006-01-02T15:04:05.000000Z"

func ts(t time.Time) string { return sqlcommon.Time(t).Format(timeLayout) }

func tsPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ts(*t)
}

func parseTS(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: stored time %q: %w", s, err)
	}
	return t.UTC(), nil
}

func parseTSPtr(ns sql.NullString) (*time.Time, error) {
	if !ns.Valid {
		return nil, nil
	}
	t, err := parseTS(ns.String)
	return &t, err
}

// mapErr turns driver errors into the store's sentinels.
func mapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.ExtendedCode {
		case sqlite3.ErrConstraintPrimaryKey, sqlite3.ErrConstraintUnique:
			return fmt.Errorf("%s: already exists: %w", what, store.ErrConflict)
		case sqlite3.ErrConstraintForeignKey:
			return fmt.Errorf("%s: the owner does not exist: %w", what, store.ErrNotFound)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", what, err)
}
