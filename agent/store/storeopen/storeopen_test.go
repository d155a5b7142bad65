package storeopen

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/internal/syncbuf"
	"github.com/cakeai/cake-agents/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

func clearPGEnv(t *testing.T) {
	for _, k := range PGEnv {
		t.Setenv(k, "")
	}
	// Setenv("") still counts as set: unset for real, restored by t.Setenv's cleanup.
	for _, k := range PGEnv {
		unsetenv(t, k)
	}
}

func TestParse(t *testing.T) {
	clearPGEnv(t)
	cases := []struct {
		url, driver, path, display string
	}{
		{"sqlite:///data/agents.db", "sqlite", "/data/agents.db", "sqlite:///data/agents.db"},
		{"sqlite://agents.db", "sqlite", "agents.db", "sqlite://agents.db"},
		{"sqlite://data/dir with space.db", "sqlite", "data/dir with space.db", ""},
		{"sqlite:///a%20b.db", "sqlite", "/a b.db", ""},
		{"SQLITE:///x.db", "sqlite", "/x.db", ""},
		{"sqlite://:memory:", "sqlite", sqlite.Memory, "sqlite://:memory:"},
		{"  sqlite:///trimmed.db\n", "sqlite", "/trimmed.db", ""},
		{"postgres://agent:hunter2@db.example:6543/agents?sslmode=disable", "postgres", "", "postgres://agent@db.example:6543/agents"},
		{"postgresql://agent@db/agents", "postgres", "", "postgres://agent@db:5432/agents"},
	}
	for _, c := range cases {
		tg, err := Parse(c.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.url, err)
			continue
		}
		if string(tg.Driver) != c.driver || tg.Path != c.path || (c.display != "" && tg.Display != c.display) {
			t.Errorf("Parse(%q) = %+v", c.url, tg)
		}
		if strings.Contains(tg.Display, "hunter2") {
			t.Errorf("Display leaks the password: %s", tg.Display)
		}
	}
	tg, _ := Parse("postgres://agent:hunter2@db.example:6543/agents?sslmode=disable")
	if c := tg.PGConfig.ConnConfig; c.Password != "hunter2" || c.Database != "agents" || c.Port != 6543 {
		t.Errorf("pg config %+v", c)
	}

	bad := []struct{ url, want string }{
		{"", "DATABASE_URL is not set"},
		{"/data/agents.db", "DATABASE_URL is not a URL"},
		{"mysql://u:hunter2@h/db", `unsupported scheme "mysql"`},
		{"sqlite://", "needs a file path"},
		{"sqlite:///x.db?mode=ro", "take no parameters"},
		{"sqlite:///x%zz.db", "needs a file path"},
		{"postgres://u:hunter2@h:notaport/db", "DATABASE_URL"},
		{"u:hunter2@host/db", "is not a URL"},
	}
	for _, c := range bad {
		_, err := Parse(c.url)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", c.url)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) || !strings.Contains(msg, "DATABASE_URL") {
			t.Errorf("Parse(%q) = %q, want it to mention %q and DATABASE_URL", c.url, msg, c.want)
		}
		if strings.Contains(msg, "hunter2") {
			t.Errorf("Parse(%q) error leaks the password: %s", c.url, msg)
		}
		if c.url != "" && !strings.Contains(msg, "sqlite://") && !strings.Contains(msg, "postgres://") {
			t.Errorf("Parse(%q) error shows no example: %s", c.url, msg)
		}
	}
}

func TestParsePGEnv(t *testing.T) {
	clearPGEnv(t)
	t.Setenv("PGHOST", "pg.internal")
	t.Setenv("PGUSER", "agent")
	t.Setenv("PGPASSWORD", "hunter2")
	t.Setenv("PGDATABASE", "agents")
	tg, err := Parse("")
	if err != nil {
		t.Fatal(err)
	}
	c := tg.PGConfig.ConnConfig
	if tg.Driver != Postgres || c.Host != "pg.internal" || c.User != "agent" || c.Password != "hunter2" || c.Database != "agents" {
		t.Errorf("from PG* variables: %+v %+v", tg, c)
	}
	if strings.Contains(tg.Display, "hunter2") || !strings.Contains(tg.Display, "PG*") {
		t.Errorf("Display %q", tg.Display)
	}
	// An explicit URL wins over PG* variables.
	if tg, err := Parse("sqlite:///x.db"); err != nil || tg.Driver != SQLite {
		t.Errorf("explicit URL with PG* set: %+v, %v", tg, err)
	}
}

func TestOpenSQLite(t *testing.T) {
	ctx := t.Context()
	kr, _ := keyring.New([]byte("secret"))
	path := filepath.Join(t.TempDir(), "agents.db")
	for _, u := range []string{"sqlite://" + path, "sqlite://:memory:"} {
		s, err := Open(ctx, Options{URL: u, Keyring: kr})
		if err != nil {
			t.Fatalf("Open(%s): %v", u, err)
		}
		if err := s.PutSetting(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		cur, latest, err := s.(store.Migrator).SchemaVersion(ctx)
		if err != nil || cur != latest {
			t.Errorf("%s: schema %d/%d, %v", u, cur, latest, err)
		}
		s.Close()
	}
	// Relative paths are relative to the working directory.
	dir := t.TempDir()
	t.Chdir(dir)
	s, err := Open(ctx, Options{URL: "sqlite://rel.db"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, "rel.db")); err != nil {
		t.Fatalf("relative sqlite path: %v", err)
	}
	// SkipMigrate leaves the schema alone.
	s, err = Open(ctx, Options{URL: "sqlite://skip.db", SkipMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if cur, _, _ := s.(store.Migrator).SchemaVersion(ctx); cur != 0 {
		t.Errorf("SkipMigrate migrated to %d", cur)
	}
}

func TestOpenPostgresFromPGEnv(t *testing.T) {
	dsn := testpg.Start(t)
	u, _ := url.Parse(dsn)
	clearPGEnv(t)
	t.Setenv("PGHOST", u.Hostname())
	t.Setenv("PGPORT", u.Port())
	t.Setenv("PGUSER", u.User.Username())
	t.Setenv("PGDATABASE", strings.TrimPrefix(u.Path, "/"))
	t.Setenv("PGSSLMODE", "disable")
	s, err := Open(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutSetting(t.Context(), "from", "env"); err != nil {
		t.Fatal(err)
	}
}

func TestWaitOpenGivesUp(t *testing.T) {
	port := freePort(t)
	var logs syncbuf.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	retries := 0
	_, err := WaitOpen(ctx, Options{URL: "postgres://u:hunter2@127.0.0.1:" + port + "/db?connect_timeout=1", Logger: log},
		Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond, OnRetry: func(error, time.Duration) { retries++ }})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("WaitOpen = %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if retries < 2 || strings.Count(logs.String(), "database unavailable, retrying") != retries {
		t.Errorf("%d retries; logs:\n%s", retries, logs.String())
	}
	if strings.Contains(logs.String()+err.Error(), "hunter2") {
		t.Error("the password leaked into logs or the error")
	}
}

func TestWaitOpenPermanentError(t *testing.T) {
	start := time.Now()
	_, err := WaitOpen(t.Context(), Options{URL: "mysql://x"}, Backoff{})
	if err == nil || errors.Is(err, store.ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("malformed URL: %v after %v", err, time.Since(start))
	}
}

// TestWaitOpenRecovers starts with nothing listening, then puts a proxy to a real
// server on the port: WaitOpen must connect and migrate once it can.
func TestWaitOpenRecovers(t *testing.T) {
	dsn := testpg.Start(t)
	target, _ := url.Parse(dsn)
	port := freePort(t)
	u := *target
	u.Host = "127.0.0.1:" + port

	go func() {
		time.Sleep(700 * time.Millisecond)
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Errorf("listen: %v", err)
			return
		}
		t.Cleanup(func() { l.Close() })
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go proxy(c, target.Host)
		}
	}()

	var logs syncbuf.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := WaitOpen(ctx, Options{URL: u.String(), Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})},
		Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "database unavailable, retrying") || !strings.Contains(logs.String(), "database reachable") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func proxy(c net.Conn, to string) {
	defer c.Close()
	d, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	defer d.Close()
	go io.Copy(d, c) //nolint:errcheck
	io.Copy(c, d)    //nolint:errcheck
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// unsetenv removes k for the rest of the test (t.Setenv already arranged the restore).
func unsetenv(t *testing.T, k string) {
	t.Helper()
	if err := os.Unsetenv(k); err != nil {
		t.Fatal(err)
	}
}
