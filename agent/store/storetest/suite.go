package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Run runs the conformance suite; each subtest gets a fresh database from newDB.
func Run(t *testing.T, newDB NewDB) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"Ping", testPing},
		{"Users", testUsers},
		{"SessionCRUD", testSessionCRUD},
		{"SessionValidation", testSessionValidation},
		{"UpdateStaleVersion", testUpdateStale},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"Quota", testQuota},
		{"QuotaRace", testQuotaRace},
		{"QuotaRaceAcrossStores", testQuotaRaceAcrossStores},
		{"ActivateQuota", testActivateQuota},
		{"QuotaRaceCreatesAndStarts", testQuotaRaceCreatesAndStarts},
		{"SessionLock", testSessionLock},
		{"ConflictingTransitions", testConflictingTransitions},
		{"ConflictingUpdatesAcrossStores", testConflictingUpdatesAcrossStores},
		{"TouchSession", testTouch},
		{"ListOrder", testListOrder},
		{"ListFilters", testListFilters},
		{"ListLimits", testListLimits},
		{"ListPaginationWhileInserting", testListWhileInserting},
		{"CountSessions", testCount},
		{"FindUsers", testFindUsers},
		{"Tokens", testTokens},
		{"DeleteUserTokens", testDeleteUserTokens},
		{"Credentials", testCredentials},
		{"EncryptionAtRest", testEncryptionAtRest},
		{"CredentialBoundToRow", testCredentialBoundToRow},
		{"RotateCredentials", testRotate},
		{"ModelKeys", testModelKeys},
		{"SessionVCS", testSessionVCS},
		{"Transcripts", testTranscripts},
		{"Providers", testProviders},
		{"ProviderSecretsAtRest", testProviderSecretsAtRest},
		{"IntegrationEvents", testIntegrationEvents},
		{"IntegrationLinks", testIntegrationLinks},
		{"Audit", testAudit},
		{"Settings", testSettings},
		{"MigrateFromEmpty", testMigrateFromEmpty},
		{"MigrateConcurrently", testMigrateConcurrently},
		{"UpgradeFromEarlierSchemas", testUpgradeFromEarlierSchemas},
		{"SchemaTooNew", testSchemaTooNew},
		{"CanceledContext", testCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &harness{t: t, db: newDB(t), newDB: newDB})
		})
	}
}

// harness is one subtest's database.
type harness struct {
	t     *testing.T
	db    DB
	newDB NewDB // for tests that need more databases
}

const (
	secretA = "conformance-suite secret A, 32+ bytes long"
	secretB = "conformance-suite secret B, 32+ bytes long"
)

func mustKeyring(t testing.TB, secret string, previous ...string) *keyring.Keyring {
	t.Helper()
	var prev [][]byte
	for _, p := range previous {
		prev = append(prev, []byte(p))
	}
	kr, err := keyring.New([]byte(secret), prev...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// open opens a migrated store with keyring A unless told otherwise.
func (h *harness) open(o ...OpenOptions) store.Store {
	h.t.Helper()
	opts := OpenOptions{Keyring: mustKeyring(h.t, secretA)}
	if len(o) > 0 {
		opts = o[0]
	}
	s, err := h.db.Open(h.t.Context(), opts)
	if err != nil {
		h.t.Fatalf("open store: %v", err)
	}
	h.t.Cleanup(func() { s.Close() })
	return s
}

func user(t testing.TB, s store.Store, subject string) *store.User {
	t.Helper()
	u := &store.User{Source: "header", Subject: subject, Email: subject + "@example.com"}
	if err := s.UpsertUser(context.Background(), u); err != nil {
		t.Fatalf("upsert user %s: %v", subject, err)
	}
	return u
}

// fullSession has every field set to a non-zero value.
func fullSession(id, owner string, created time.Time) *store.Session {
	started := created.Add(3 * time.Second)
	return &store.Session{
		ID: id, Title: "fix the flaky test", OwnerID: owner, Private: true,
		Repo: "https://github.com/org/repo", Branch: "main", Prompt: "make it green",
		Model: "litellm/m", Persistent: true, IdleTimeout: 90 * time.Minute, TTL: 36 * time.Hour,
		State: apiv1.StateRunning, Reason: "PodReady", Message: "the pod is ready",
		PodName: "session-" + id, PodNamespace: "cake-sessions", Image: "img:1", InitImage: "init:1",
		OpenCodeSessionID: "ses_123", PromptSent: true, StartKind: apiv1.StartKindWarm, ForkedFrom: "src0",
		CreatedAt: created, StartedAt: &started,
		LastActivityAt: created.Add(time.Second), LastActivitySource: "create",
	}
}

func session(id, owner string, state apiv1.SessionState) *store.Session {
	return &store.Session{ID: id, OwnerID: owner, State: state, Private: true}
}

func mustCreate(t testing.TB, s store.Store, sess *store.Session) {
	t.Helper()
	if err := s.CreateSession(context.Background(), sess, 0); err != nil {
		t.Fatalf("create session %s: %v", sess.ID, err)
	}
}

// norm returns a copy with every time in UTC, truncated to microseconds.
func norm(s *store.Session) store.Session {
	c := *s
	tr := func(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
	c.CreatedAt, c.UpdatedAt, c.LastActivityAt = tr(c.CreatedAt), tr(c.UpdatedAt), tr(c.LastActivityAt)
	if c.StartedAt != nil {
		v := tr(*c.StartedAt)
		c.StartedAt = &v
	}
	if c.StoppedAt != nil {
		v := tr(*c.StoppedAt)
		c.StoppedAt = &v
	}
	return c
}

func sameSession(t testing.TB, want, got *store.Session) {
	t.Helper()
	w, g := norm(want), norm(got)
	if !reflect.DeepEqual(w, g) {
		t.Errorf("session mismatch\nwant %s\ngot  %s", fmtSession(&w), fmtSession(&g))
	}
	for name, tm := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt, "LastActivityAt": got.LastActivityAt} {
		if tm.Location() != time.UTC {
			t.Errorf("%s is in %v, want UTC", name, tm.Location())
		}
	}
}

func fmtSession(s *store.Session) string {
	str := func(p *time.Time) string {
		if p == nil {
			return "nil"
		}
		return p.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%+v started=%s stopped=%s", *s, str(s.StartedAt), str(s.StoppedAt))
}

func wantErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func testPing(t *testing.T, h *harness) {
	s := h.open()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func testCanceled(t *testing.T, h *harness) {
	s := h.open()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.GetSession(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetSession with a canceled context: %v", err)
	}
	if err := s.CreateSession(ctx, session("x", "y", apiv1.StatePending), 1); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateSession with a canceled context: %v", err)
	}
}
