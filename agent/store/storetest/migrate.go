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

// testUpgradeFromEarlierSchemas: a database left by any earlier release, with its users and
// sessions, is migrated forward by this binary and everything in it stays readable and
// writable. For each earlier schema version k the rows are written with plain SQL in the
// first schema's columns (which every later migration must keep), then the store migrates
// from k to the latest and reads them back through its API.
func testUpgradeFromEarlierSchemas(t *testing.T, h *harness) {
	ctx := t.Context()
	_, latest, err := migrator(t, h.open(OpenOptions{Keyring: mustKeyring(t, secretA), SkipMigrate: true})).SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := 1; k < latest; k++ {
		t.Run(fmt.Sprintf("from%d", k), func(t *testing.T) {
			h := &harness{t: t, db: h.newDB(t)}
			old := h.open(OpenOptions{Keyring: mustKeyring(t, secretA), SkipMigrate: true})
			if _, err := migrator(t, old).MigrateTo(ctx, k); err != nil {
				t.Fatal(err)
			}
			if cur, _, err := migrator(t, old).SchemaVersion(ctx); err != nil || cur != k {
				t.Fatalf("MigrateTo(%d): at version %d, %v", k, cur, err)
			}
			for _, stmt := range []string{
				`INSERT INTO users (id, source, subject, email, admin, created_at, last_seen_at)
				 VALUES ('u-old', 'header', 'old', 'old@example.com', TRUE, '2026-01-02T03:04:05.000000Z', '2026-01-02T03:04:05.000000Z')`,
				`INSERT INTO sessions (id, title, owner_id, private, repo, branch, prompt, model, persistent, idle_timeout_ns, ttl_ns,
				   state, pod_name, pod_namespace, opencode_session_id, prompt_sent, created_at, updated_at, started_at, last_activity_at, last_activity_source)
				 VALUES ('s-old', 'from an earlier release', 'u-old', TRUE, 'https://github.com/org/repo', 'main', 'fix it', 'acme/big', TRUE, 1800000000000, 0,
				   'Running', 'cake-session-s-old', 'sessions', 'ses_old', TRUE, '2026-01-02T03:04:05.000000Z', '2026-01-02T03:04:05.000000Z',
				   '2026-01-02T03:04:05.000000Z', '2026-01-02T03:04:06.000000Z', 'create')`,
			} {
				if err := h.db.Exec(ctx, stmt); err != nil {
					t.Fatalf("write rows at schema %d: %v", k, err)
				}
			}
			s := h.open() // migrates from k to the latest, as the new agent does at start
			if cur, _, err := migrator(t, s).SchemaVersion(ctx); err != nil || cur != latest {
				t.Fatalf("after the upgrade: version %d, %v; want %d", cur, err, latest)
			}
			got, err := s.GetSession(ctx, "s-old")
			if err != nil {
				t.Fatalf("the session written at schema %d: %v", k, err)
			}
			if got.Title != "from an earlier release" || got.OwnerID != "u-old" || !got.Private || got.Repo != "https://github.com/org/repo" ||
				got.Branch != "main" || got.Prompt != "fix it" || got.Model != "acme/big" || !got.Persistent || got.IdleTimeout.Minutes() != 30 ||
				got.State != apiv1.StateRunning || got.PodName != "cake-session-s-old" || got.OpenCodeSessionID != "ses_old" || !got.PromptSent ||
				got.StartedAt == nil || got.LastActivitySource != "create" {
				t.Errorf("the session after the upgrade from schema %d: %+v", k, got)
			}
			if u, err := s.GetUser(ctx, "u-old"); err != nil || u.Email != "old@example.com" || !u.Admin {
				t.Errorf("the user after the upgrade from schema %d: %+v, %v", k, u, err)
			}
			got.State = apiv1.StateStopped
			if err := s.UpdateSession(ctx, got); err != nil {
				t.Errorf("update the upgraded session: %v", err)
			}
			page, err := s.ListSessions(ctx, store.SessionFilter{OwnerID: "u-old"})
			if err != nil || len(page.Items) != 1 || page.Items[0].State != apiv1.StateStopped {
				t.Errorf("list after the upgrade from schema %d: %+v, %v", k, page, err)
			}
		})
	}
}
