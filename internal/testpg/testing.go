package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ownerFile, in the temp dir of a server a test binary started, holds "PID STARTTIME"
// of that binary, so a later run can tell an abandoned dir from one in use.
const ownerFile = "owner"

const ownedPrefix = "cake-testpg-owned-"

// shared is this test binary's server, obtained by the first Start.
var shared struct {
	mu     sync.Mutex
	done   bool
	admin  string  // URL of a database to run CREATE DATABASE from
	server *Server // non-nil when this binary started it
	err    error
}

// Start returns the URL of a fresh, empty database on the test binary's server, dropped
// when t ends. With -short and no $CAKE_TEST_POSTGRES_URL it skips t (the unit tier runs
// without a database server); a server that cannot be had fails t, naming the fix.
func Start(t testing.TB) string {
	t.Helper()
	if testing.Short() && os.Getenv(EnvURL) == "" {
		t.Skip("needs PostgreSQL; skipped with -short (set " + EnvURL + " to run it)")
	}
	admin, err := server(t)
	if err != nil {
		t.Fatalf("test postgres: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := databaseName(t.Name())
	dsn, err := CreateDatabase(ctx, admin, name)
	if err != nil {
		t.Fatalf("test postgres: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := DropDatabase(ctx, admin, name); err != nil {
			t.Logf("test postgres: %v", err)
		}
	})
	return dsn
}

// NewServer starts a server of the test's own, stopped and removed when t ends, for
// tests that halt and restart the database (Server.Halt, Server.Restart) and so must
// not use the shared one. Its URL names the "postgres" database; CreateDatabase makes
// others. With -short it skips t, like Start.
func NewServer(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a PostgreSQL server of its own; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := StartServer(ctx, Options{})
	if err != nil {
		t.Fatalf("test postgres: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("test postgres: %v", err)
		}
	})
	return s
}

func server(t testing.TB) (string, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.done {
		shared.done = true
		if u := os.Getenv(EnvURL); u != "" {
			shared.admin = u
		} else {
			sweepAbandoned()
			began := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			s, err := StartServer(ctx, Options{Prefix: ownedPrefix})
			if err != nil {
				shared.err = err
			} else {
				shared.server, shared.admin = s, s.URL
				if err := writeOwner(s.Dir); err != nil {
					shared.err = err
				}
				t.Logf("test postgres started in %s at %s (dir %s)", time.Since(began).Round(100*time.Millisecond), s.URL, s.Dir)
			}
		}
	}
	return shared.admin, shared.err
}

// Main runs the tests and then stops the server Start started, if any:
//
//	func TestMain(m *testing.M) { testpg.Main(m) }
//
// Without it the server still dies with the test binary, but its temp dir is only
// removed by a later run.
func Main(m *testing.M) {
	m.Run()
	_ = Shutdown()
}

// Shutdown stops the server Start started in this test binary and removes its dir; a
// server from $CAKE_TEST_POSTGRES_URL is left alone.
func Shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	s := shared.server
	shared.server, shared.done, shared.err = nil, true, errors.New("test postgres already shut down")
	if s == nil {
		return nil
	}
	return s.Stop()
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName derives a valid, unique database name from a test name.
func databaseName(test string) string {
	base := strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(test), "_"), "_")
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck // never fails
	return "t_" + base + "_" + hex.EncodeToString(b[:])
}

// CreateDatabase creates database name on the server of adminURL and returns its URL.
func CreateDatabase(ctx context.Context, adminURL, name string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("%s must be a postgres:// URL", EnvURL)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", redacted(u), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// DropDatabase drops database name, disconnecting whoever still uses it.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

func redacted(u *url.URL) string {
	c := *u
	if _, ok := c.User.Password(); ok {
		c.User = url.UserPassword(c.User.Username(), "xxxxx")
	}
	return c.String()
}

func writeOwner(dir string) error {
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return err
	}
	data := strconv.Itoa(os.Getpid()) + " " + strconv.FormatUint(start, 10) + "\n"
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(data), 0o644)
}

// procStartTime is field 22 of /proc/PID/stat: it tells a live process from a later
// one that reused its pid.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// sweepAbandoned removes server dirs left by test binaries that were killed before
// Main could clean up (their servers died with them through Pdeathsig; a straggler
// postmaster is stopped first).
func sweepAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), ownedPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being created right now
		}
		var pid int
		var start uint64
		if _, err := fmt.Sscan(string(data), &pid, &start); err != nil {
			continue
		}
		if st, err := procStartTime(pid); err == nil && st == start {
			continue // its owner is alive
		}
		if pm := postmasterPID(dir); pm > 0 && isPostgres(pm) {
			if stopPID(pm, nil) != nil {
				continue
			}
		}
		_ = os.RemoveAll(dir)
	}
}

// postmasterPID reads the first line of data/postmaster.pid, 0 when absent.
func postmasterPID(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// isPostgres guards against signalling an unrelated process that reused a stale pid.
func isPostgres(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.TrimSpace(string(comm)) == "postgres"
}
