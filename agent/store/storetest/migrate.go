package storetest

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func testSettings(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	_, err := s.GetSetting(ctx, "missing")
	wantErr(t, err, store.ErrNotFound, "missing setting")
	for _, kv := range [][2]string{{"k", "v1"}, {"k", "v2"}, {"other", ""}, {"json", `{"a":[1,2]}`}} {
		if err := s.PutSetting(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for k, want := range map[string]string{"k": "v2", "other": "", "json": `{"a":[1,2]}`} {
		if got, err := s.GetSetting(ctx, k); err != nil || got != want {
			t.Errorf("GetSetting(%q) = %q, %v; want %q", k, got, err, want)
		}
	}
}

func migrator(t testing.TB, s store.Store) store.Migrator {
	t.Helper()
	m, ok := s.(store.Migrator)
	if !ok {
		t.Fatalf("%T does not implement store.Migrator", s)
	}
	return m
}

func testMigrateFromEmpty(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open(OpenOptions{Keyring: mustKeyring(t, secretA), SkipMigrate: true})
	m := migrator(t, s)
	cur, latest, err := m.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur != 0 || latest < 1 {
		t.Fatalf("empty database: version %d, latest %d", cur, latest)
	}
	applied, err := m.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 || applied[len(applied)-1] != latest || !sort.IntsAreSorted(applied) {
		t.Errorf("applied %v, want ascending up to %d", applied, latest)
	}
	if cur, _, err := m.SchemaVersion(ctx); err != nil || cur != latest {
		t.Errorf("after migrate: version %d, %v; want %d", cur, err, latest)
	}
	owner := user(t, s, "owner")
	mustCreate(t, s, session("survivor", owner.ID, apiv1.StateRunning))

	// Running again, directly or through Open, is a no-op that keeps the data.
	if applied, err := m.Migrate(ctx); err != nil || len(applied) != 0 {
		t.Errorf("second migrate applied %v, %v", applied, err)
	}
	again := h.open()
	if cur, _, err := migrator(t, again).SchemaVersion(ctx); err != nil || cur != latest {
		t.Errorf("reopened: version %d, %v", cur, err)
	}
	if _, err := again.GetSession(ctx, "survivor"); err != nil {
		t.Errorf("data lost by re-running migrations: %v", err)
	}
}

func testMigrateConcurrently(t *testing.T, h *harness) {
	ctx := t.Context()
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := h.db.Open(ctx, OpenOptions{Keyring: mustKeyring(t, secretA)})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent open %d: %v", i, err)
		}
	}
	s := h.open()
	if cur, latest, err := migrator(t, s).SchemaVersion(ctx); err != nil || cur != latest {
		t.Errorf("after concurrent migrations: %d/%d, %v", cur, latest, err)
	}
}

func testSchemaTooNew(t *testing.T, h *harness) {
	ctx := t.Context()
	s := h.open()
	_, latest, err := migrator(t, s).SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.db.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')`); err != nil {
		t.Fatal(err)
	}
	_, err = h.db.Open(ctx, OpenOptions{Keyring: mustKeyring(t, secretA)})
	wantErr(t, err, store.ErrSchemaTooNew, "opening a database from a newer binary")
	msg := fmt.Sprintf("database schema version 9999 is newer than this agent (max %d): upgrade the agent or restore a backup", latest)
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not say %q", err, msg)
	}
	_, err = migrator(t, s).Migrate(ctx)
	wantErr(t, err, store.ErrSchemaTooNew, "Migrate on a database from a newer binary")
	if cur, _, err := migrator(t, s).SchemaVersion(ctx); err != nil || cur != 9999 {
		t.Errorf("SchemaVersion = %d, %v; want 9999", cur, err)
	}
}
