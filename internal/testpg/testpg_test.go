package testpg

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestFreshDatabases(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two calls returned the same database %s", a)
	}
	ctx := context.Background()
	for _, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var version string
		var tables int
		if err := conn.QueryRow(ctx, `SELECT current_setting('server_version'),
			(SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public')`).Scan(&version, &tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("%s is not empty: %d tables", dsn, tables)
		}
		t.Logf("%s: PostgreSQL %s", dsn, version)
		if _, err := conn.Exec(ctx, `CREATE TABLE t (x int)`); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
}

func TestDatabaseName(t *testing.T) {
	n := databaseName("TestConformance/Quota Race#01")
	if !strings.HasPrefix(n, "t_testconformance_quota_race_01_") || len(n) > 63 {
		t.Errorf("databaseName = %q", n)
	}
	long := databaseName(strings.Repeat("x", 200))
	if len(long) > 63 {
		t.Errorf("%d characters: %q", len(long), long)
	}
}

// TestHaltRestartKeepsData: a halted server refuses connections, and after Restart the
// same URL reaches the same data.
func TestHaltRestartKeepsData(t *testing.T) {
	s := NewServer(t)
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, s.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)`)
	if err := s.Halt(); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, s.URL); err == nil {
		conn.Close(ctx)
		t.Fatal("a halted server accepted a connection")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var x int
	if err := conn.QueryRow(ctx, `SELECT x FROM kept`).Scan(&x); err != nil || x != 42 {
		t.Fatalf("after restart: x = %d, %v; want 42", x, err)
	}
}
