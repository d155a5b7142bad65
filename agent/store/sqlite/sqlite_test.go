package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/storetest"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testDB is a database file in a test's temp dir.
type testDB struct{ path string }

func newTestDB(tb testing.TB) storetest.DB {
	return &testDB{path: filepath.Join(tb.TempDir(), "agents.db")}
}

func (d *testDB) Open(ctx context.Context, o storetest.OpenOptions) (store.Store, error) {
	s, err := Open(ctx, Options{Path: d.path, Keyring: o.Keyring, SkipMigrate: o.SkipMigrate})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (d *testDB) raw() (*sql.DB, error) {
	return sql.Open("sqlite3", "file:"+escapePath(d.path)+"?_busy_timeout=10000")
}

func (d *testDB) Exec(ctx context.Context, stmt string) error {
	db, err := d.raw()
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// Dump reads every column of every table, then the raw bytes of the database file
// and its WAL (where recently written pages live until a checkpoint).
func (d *testDB) Dump(ctx context.Context) (map[string][][]byte, error) {
	db, err := d.raw()
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		return nil, err
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		tables = append(tables, n)
	}
	rows.Close()
	out := map[string][][]byte{}
	for _, tbl := range tables {
		rows, err := db.QueryContext(ctx, `SELECT * FROM "`+tbl+`"`)
		if err != nil {
			return nil, err
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			for i, v := range vals {
				var b []byte
				switch v := v.(type) {
				case nil:
				case []byte:
					b = v
				case string:
					b = []byte(v)
				default:
					b = fmt.Append(nil, v)
				}
				out[tbl+"."+cols[i]] = append(out[tbl+"."+cols[i]], b)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(d.path + suffix)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		out["file:agents.db"+suffix] = [][]byte{b}
	}
	return out, nil
}

func TestConformance(t *testing.T) {
	storetest.Run(t, newTestDB)
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, newTestDB)
}

func TestMemory(t *testing.T) {
	ctx := t.Context()
	kr, _ := keyring.New([]byte("memory test secret"))
	s, err := Open(ctx, Options{Path: Memory, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := Open(ctx, Options{Path: Memory})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	u := &store.User{Source: "header", Subject: "mem"}
	if err := s.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	// Concurrent quota-checked creates work on the single connection too.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.CreateSession(ctx, &store.Session{ID: fmt.Sprintf("m%d", i), OwnerID: u.ID, State: apiv1.StatePending}, 2)
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, store.ErrQuotaExceeded) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 2 {
		t.Errorf("%d creates succeeded, want 2", ok)
	}
	// Each in-memory store is private.
	if _, err := other.GetUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("in-memory stores share data: %v", err)
	}
	// Without a keyring the credential methods refuse to work.
	if err := other.PutCredential(ctx, &store.Credential{OwnerID: u.ID, Provider: "p"}); err == nil {
		t.Error("PutCredential without a keyring succeeded")
	}
}

func TestPathWithURIChars(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird#dir%20")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a.db")
	s, err := Open(t.Context(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutSetting(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at %s: %v", path, err)
	}
}
