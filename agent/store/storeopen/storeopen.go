// Package storeopen opens the store named by DATABASE_URL: SQLite for development,
// PostgreSQL for production, or PostgreSQL from libpq's PG* variables when the URL is
// unset (the chart's externalDatabase.existingSecretEnv). WaitOpen retries a database
// that is not reachable yet, so the agent can serve /healthz (and a false /readyz)
// while it waits.
package storeopen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/postgres"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

// EnvURL is the variable the agent reads the database URL from.
const EnvURL = "DATABASE_URL"

// Examples is shown in every error about a malformed or missing URL.
const Examples = "sqlite:///data/agents.db or postgres://user:password@host:5432/agents"

// PGEnv lists the libpq variables that, when DATABASE_URL is empty, select Postgres
// configured from the environment.
var PGEnv = []string{
	"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
	"PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT",
	"PGSSLPASSWORD", "PGSSLSNI", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS",
}

// Driver names a backend.
type Driver string

// Backends.
const (
	SQLite   Driver = "sqlite"
	Postgres Driver = "postgres"
)

// Target is a parsed database URL.
type Target struct {
	Driver Driver
	// Path is the SQLite file (or sqlite.Memory).
	Path string
	// PGConfig is the Postgres pool configuration.
	PGConfig *pgxpool.Config
	// Display describes the target without secrets, for logs and errors.
	Display string
}

// Parse interprets a DATABASE_URL value:
//
//	sqlite:///abs/path.db    an absolute path
//	sqlite://relative.db     a path relative to the working directory
//	sqlite://:memory:        a private in-memory database (tests only)
//	postgres://... postgresql://...   anything pgx accepts, e.g. ?sslmode=require
//	""                       Postgres from the PG* variables, when any is set
//
// Errors name DATABASE_URL and show an example, but never repeat the value (it may
// hold a password).
func Parse(raw string) (*Target, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		if !pgEnvSet() {
			return nil, fmt.Errorf("%s is not set (and no PG* variables are): set it, e.g. %s", EnvURL, Examples)
		}
		cfg, err := postgres.ParseConfig("")
		if err != nil {
			return nil, fmt.Errorf("%s is empty and the PG* variables do not make a valid configuration: %w", EnvURL, err)
		}
		return &Target{Driver: Postgres, PGConfig: cfg, Display: pgDisplay(cfg) + " (from PG* variables)"}, nil
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("%s is not a URL: use %s", EnvURL, Examples)
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		if strings.ContainsAny(rest, "?#") {
			return nil, fmt.Errorf("%s: sqlite URLs take no parameters: use %s", EnvURL, Examples)
		}
		path, err := url.PathUnescape(rest)
		if err != nil || path == "" {
			return nil, fmt.Errorf("%s: a sqlite URL needs a file path, e.g. sqlite:///data/agents.db (absolute) or sqlite://agents.db (relative)", EnvURL)
		}
		if path == sqlite.Memory {
			return &Target{Driver: SQLite, Path: sqlite.Memory, Display: "sqlite://:memory:"}, nil
		}
		return &Target{Driver: SQLite, Path: path, Display: "sqlite://" + path}, nil
	case "postgres", "postgresql":
		cfg, err := postgres.ParseConfig(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w (example: postgres://user:password@host:5432/agents?sslmode=require)", EnvURL, err)
		}
		return &Target{Driver: Postgres, PGConfig: cfg, Display: pgDisplay(cfg)}, nil
	}
	return nil, fmt.Errorf("%s: unsupported scheme %q: use %s", EnvURL, scheme, Examples)
}

func pgEnvSet() bool {
	for _, k := range PGEnv {
		if _, ok := os.LookupEnv(k); ok {
			return true
		}
	}
	return false
}

func pgDisplay(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("%s:%d", c.Host, c.Port), Path: "/" + c.Database}
	if c.User != "" {
		u.User = url.User(c.User)
	}
	return u.String()
}

// Options configure Open and WaitOpen.
type Options struct {
	// URL is the DATABASE_URL value; see Parse.
	URL string
	// Keyring encrypts linked credentials (derived from the agent's auth secret).
	Keyring *keyring.Keyring
	// Logger for the store; nil discards.
	Logger hclog.Logger
	// SkipMigrate opens without migrating (for `agent migrate`, which then uses
	// store.Migrator itself).
	SkipMigrate bool
}

// Open parses o.URL, connects and (unless o.SkipMigrate) migrates. The store also
// implements store.Migrator. A database that cannot be reached yet is an error
// wrapping store.ErrUnavailable (see WaitOpen); any other error is permanent — a
// malformed URL, a schema newer than this binary (store.ErrSchemaTooNew), a failed
// migration.
func Open(ctx context.Context, o Options) (store.Store, error) {
	t, err := Parse(o.URL)
	if err != nil {
		return nil, err
	}
	return OpenTarget(ctx, t, o)
}

// OpenTarget is Open for an already parsed target (o.URL is ignored).
func OpenTarget(ctx context.Context, t *Target, o Options) (store.Store, error) {
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	switch t.Driver {
	case SQLite:
		if t.Path == sqlite.Memory {
			log.Warn("using an in-memory database: everything is lost when the agent stops")
		}
		s, err := sqlite.Open(ctx, sqlite.Options{Path: t.Path, Keyring: o.Keyring, Logger: log, SkipMigrate: o.SkipMigrate})
		if err != nil {
			return nil, err
		}
		return s, nil
	case Postgres:
		s, err := postgres.Open(ctx, postgres.Options{Config: t.PGConfig.Copy(), Keyring: o.Keyring, Logger: log, SkipMigrate: o.SkipMigrate})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown database driver %q", t.Driver)
}

// Backoff paces WaitOpen's retries. Zero fields take the defaults.
type Backoff struct {
	// Initial is the first delay (default 500ms).
	Initial time.Duration
	// Max caps the delay (default 30s).
	Max time.Duration
	// Multiplier grows the delay after each failure (default 2).
	Multiplier float64
	// OnRetry, when set, is called after each failed attempt with the error and the
	// delay before the next one (e.g. to show the reason in /readyz).
	OnRetry func(err error, next time.Duration)
}

// WaitOpen is Open, retrying with exponential backoff (±20% jitter) for as long as
// the database is unreachable (store.ErrUnavailable) and ctx lives. Each failure is
// logged as a warning. Permanent errors return at once. When ctx ends first the error
// wraps both ctx's error and the last connection error.
func WaitOpen(ctx context.Context, o Options, b Backoff) (store.Store, error) {
	t, err := Parse(o.URL)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if b.Initial <= 0 {
		b.Initial = 500 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	delay := b.Initial
	for attempt := 1; ; attempt++ {
		s, err := OpenTarget(ctx, t, o)
		if err == nil {
			if attempt > 1 {
				log.Info("database reachable", "database", t.Display, "attempts", attempt)
			}
			return s, nil
		}
		if ctx.Err() != nil && (errors.Is(err, store.ErrUnavailable) || errors.Is(err, ctx.Err())) {
			// Given up while waiting: the database was unavailable all along, also when
			// the deadline cut the last attempt short (a ping reports only the deadline).
			if !errors.Is(err, store.ErrUnavailable) {
				err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
			}
			return nil, fmt.Errorf("waiting for the database %s: %w (last error: %w)", t.Display, ctx.Err(), err)
		}
		if !errors.Is(err, store.ErrUnavailable) {
			return nil, err
		}
		wait := time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
		log.Warn("database unavailable, retrying", "database", t.Display, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "error", err)
		if b.OnRetry != nil {
			b.OnRetry(err, wait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("waiting for the database %s: %w (last error: %w)", t.Display, ctx.Err(), err)
		case <-timer.C:
		}
		delay = min(time.Duration(float64(delay)*b.Multiplier), b.Max)
	}
}
