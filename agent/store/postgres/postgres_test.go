package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/storetest"
	"github.com/cakeai/cake-agents/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// testDB is a fresh database on the test binary's PostgreSQL server.
type testDB struct{ dsn string }

func newTestDB(tb testing.TB) storetest.DB { return &testDB{dsn: testpg.Start(tb)} }

func (d *testDB) Open(ctx context.Context, o storetest.OpenOptions) (store.Store, error) {
	s, err := Open(ctx, Options{ConnString: d.dsn, Keyring: o.Keyring, SkipMigrate: o.SkipMigrate})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (d *testDB) Exec(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, stmt)
	return err
}

// Dump reads every column of every table of the current schema in pgx's wire form:
// text as UTF-8, bytea as raw bytes.
func (d *testDB) Dump(ctx context.Context) (map[string][][]byte, error) {
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := map[string][][]byte{}
	for _, tbl := range tables {
		rows, err := conn.Query(ctx, `SELECT * FROM `+pgx.Identifier{tbl}.Sanitize())
		if err != nil {
			return nil, err
		}
		fields := rows.FieldDescriptions()
		for rows.Next() {
			for i, v := range rows.RawValues() {
				key := tbl + "." + fields[i].Name
				out[key] = append(out[key], append([]byte(nil), v...))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func TestConformance(t *testing.T) {
	storetest.Run(t, newTestDB)
}

// BenchmarkStore runs the store benchmarks. `make bench` compares them with SQLite's and
// sets CAKE_BENCH_REQUIRE_DURABLE=1: the server must then run with production durability
// (testpg's default turns fsync off), or the comparison would flatter Postgres.
func BenchmarkStore(b *testing.B) {
	if err := checkDurable(b, os.Getenv("CAKE_BENCH_REQUIRE_DURABLE") == "1"); err != nil {
		b.Fatal(err)
	}
	storetest.Bench(b, newTestDB)
}

// checkDurable reads the server's fsync, synchronous_commit and full_page_writes and, with
// require, returns an error unless all are on.
func checkDurable(b *testing.B, require bool) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testpg.Start(b))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var off []string
	for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return err
		}
		b.Logf("postgres %s = %s", name, v)
		if v != "on" {
			off = append(off, name+"="+v)
		}
	}
	if require && len(off) > 0 {
		return fmt.Errorf("the benchmarks compare Postgres with SQLite, which syncs its WAL, but this server runs with %s: start it with production durability (testpg up --durable)", strings.Join(off, ", "))
	}
	return nil
}

func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Port 9 on loopback: nothing listens there.
	_, err := Open(ctx, Options{ConnString: "postgres://u:hunter2@127.0.0.1:9/db?connect_timeout=2"})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open of an unreachable server: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %v", err)
	}
}

// TestSilentServerIsUnavailable: a server that accepts connections but never answers
// (a stopped or wedged Postgres) makes Open fail as unavailable once
// DefaultConnectTimeout is over, when nothing else bounds it, instead of hanging for
// as long as its caller waits.
func TestSilentServerIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	// The caller would wait a minute: the store's own bound must end it first.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Open(ctx, Options{ConnString: "postgres://u:p@" + ln.Addr().String() + "/db?sslmode=disable"})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Open of a silent server: %v, want ErrUnavailable", err)
		}
	case <-time.After(4 * DefaultConnectTimeout):
		t.Fatalf("Open of a silent server still waiting after %s", 4*DefaultConnectTimeout)
	}
}

func TestParseConfigRedacts(t *testing.T) {
	_, err := ParseConfig("postgres://u:hunter2@host:notaport/db")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("ParseConfig error %v", err)
	}
}

// TestSessionLockDiesWithConnection: a replica that dies (here: its lock connection is
// terminated by the server, as when its process is killed) leaves no session locked,
// and its late unlock neither hangs nor puts a broken connection back in the pool.
// Many callers waiting on one busy session must not take the lock pool's connections from
// every other session: a waiter holds no connection while it waits.
func TestSessionLockWaitersHoldNoConnection(t *testing.T) {
	dsn := testpg.Start(t)
	ctx := t.Context()
	s, err := Open(ctx, Options{ConnString: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	unlock, err := s.LockSession(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	waitCtx, stopWaiting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 3 * defaultLockConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if u, err := s.LockSession(waitCtx, "busy"); err == nil {
				u()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let the waiters pile up
	// Bounded only so a regression fails instead of hanging: before, this waited for "busy".
	other, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	u, err := s.LockSession(other, "other")
	if err != nil {
		t.Fatalf("another session could not be locked while %d callers wait on a busy one: %v", 3*defaultLockConns, err)
	}
	u()
	stopWaiting()
	wg.Wait()
}

func TestSessionLockDiesWithConnection(t *testing.T) {
	dsn := testpg.Start(t)
	ctx := t.Context()
	open := func() *Store {
		s, err := Open(ctx, Options{ConnString: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	unlockA, err := a.LockSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.LockSession(short, "s1")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock held by a live connection: %v, want a timeout", err)
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var killed int
	err = admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate the holder: %d backends, %v", killed, err)
	}
	unlockB, err := b.LockSession(ctx, "s1")
	if err != nil {
		t.Fatalf("lock after the holder's connection died: %v", err)
	}
	unlockA() // its connection is gone: must return, and must not poison a's pool
	unlockA2, err := a.LockSession(ctx, "s2")
	if err != nil {
		t.Fatalf("a's pool after the lost lock connection: %v", err)
	}
	unlockA2()
	unlockB()
}
