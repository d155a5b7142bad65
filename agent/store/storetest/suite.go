package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
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
		{"Audit", testAudit},
		{"Settings", testSettings},
		{"MigrateFromEmpty", testMigrateFromEmpty},
		{"MigrateConcurrently", testMigrateConcurrently},
		{"SchemaTooNew", testSchemaTooNew},
		{"CanceledContext", testCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &harness{t: t, db: newDB(t)})
		})
	}
}

// harness is one subtest's database.
type harness struct {
	t  *testing.T
	db DB
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
		OpenCodeSessionID: "ses_123", PromptSent: true,
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

func testUsers(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	seen := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.FixedZone("X", 3600))
	u := &store.User{Source: "header", Subject: "ada@example.com", Email: "ada@example.com",
		DisplayName: "Ada", Groups: []string{"eng", "admins"}, Admin: true, LastSeenAt: seen}
	if err := s.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[a-z2-7]{12}$`).MatchString(u.ID) {
		t.Errorf("user id %q is not 12 lowercase base32 characters", u.ID)
	}
	if u.CreatedAt.IsZero() || !u.LastSeenAt.Equal(seen.Truncate(time.Microsecond)) {
		t.Errorf("CreatedAt %v, LastSeenAt %v", u.CreatedAt, u.LastSeenAt)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || got.Source != u.Source || got.Subject != u.Subject || got.Email != u.Email ||
		got.DisplayName != "Ada" || !slices.Equal(got.Groups, []string{"eng", "admins"}) || !got.Admin ||
		!got.CreatedAt.Equal(u.CreatedAt) || !got.LastSeenAt.Equal(u.LastSeenAt) {
		t.Errorf("GetUser = %+v, want %+v", got, u)
	}

	// Same (source, subject): same id and creation time, fields replaced.
	later := seen.Add(time.Hour)
	again := &store.User{Source: "header", Subject: "ada@example.com", Email: "ada@new.example.com",
		DisplayName: "Ada L.", LastSeenAt: later}
	if err := s.UpsertUser(ctx, again); err != nil {
		t.Fatal(err)
	}
	if again.ID != u.ID || !again.CreatedAt.Equal(u.CreatedAt) {
		t.Errorf("upsert of an existing user: id %q created %v, want %q %v", again.ID, again.CreatedAt, u.ID, u.CreatedAt)
	}
	got, err = s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Email != "ada@new.example.com" || got.DisplayName != "Ada L." || got.Groups != nil || got.Admin ||
		!got.LastSeenAt.Equal(later.Truncate(time.Microsecond)) {
		t.Errorf("after update GetUser = %+v", got)
	}

	// Same subject from another source is another user.
	k := &store.User{Source: "kubernetes", Subject: "ada@example.com"}
	if err := s.UpsertUser(ctx, k); err != nil {
		t.Fatal(err)
	}
	if k.ID == u.ID {
		t.Error("users from different sources share an id")
	}
	if k.LastSeenAt.IsZero() {
		t.Error("LastSeenAt not defaulted")
	}
	_, err = s.GetUser(ctx, "nosuchuser00")
	wantErr(t, err, store.ErrNotFound, "GetUser of a missing id")
	wantErr(t, s.UpsertUser(ctx, &store.User{Source: "header"}), store.ErrInvalid, "UpsertUser without subject")
}

func testSessionCRUD(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	created := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.FixedZone("CET", 3600))
	in := fullSession("crud1", owner.ID, created)
	if err := s.CreateSession(ctx, in, 0); err != nil {
		t.Fatal(err)
	}
	if in.ResourceVersion != 1 || !in.UpdatedAt.Equal(in.CreatedAt) || in.CreatedAt.Location() != time.UTC {
		t.Errorf("after create: rv %d, created %v, updated %v", in.ResourceVersion, in.CreatedAt, in.UpdatedAt)
	}
	got, err := s.GetSession(ctx, "crud1")
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, in, got)

	// Defaults: Pending, CreatedAt now, LastActivityAt = CreatedAt.
	before := time.Now().Add(-time.Second)
	minimal := &store.Session{ID: "crud2", OwnerID: owner.ID}
	if err := s.CreateSession(ctx, minimal, 0); err != nil {
		t.Fatal(err)
	}
	if minimal.State != apiv1.StatePending || minimal.CreatedAt.Before(before) || !minimal.LastActivityAt.Equal(minimal.CreatedAt) {
		t.Errorf("defaults: %s", fmtSession(minimal))
	}
	got, err = s.GetSession(ctx, "crud2")
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, minimal, got)

	wantErr(t, s.CreateSession(ctx, fullSession("crud1", owner.ID, created), 0), store.ErrConflict, "duplicate id")
	wantErr(t, s.CreateSession(ctx, session("crud3", "nosuchowner0", apiv1.StatePending), 0), store.ErrNotFound, "unknown owner")

	// Update every mutable field.
	upd := *got
	stopped := time.Now().UTC()
	upd.Title, upd.Private, upd.Repo, upd.Branch, upd.Prompt, upd.Model = "t2", true, "r2", "b2", "p2", "m2"
	upd.Persistent, upd.IdleTimeout, upd.TTL = true, time.Minute, 2*time.Hour
	upd.State, upd.Reason, upd.Message = apiv1.StateStopped, "StoppedByUser", "stopped"
	upd.PodName, upd.PodNamespace, upd.Image, upd.InitImage = "pod2", "ns2", "img2", "init2"
	upd.OpenCodeSessionID, upd.PromptSent = "ses_2", true
	started := stopped.Add(-time.Hour)
	upd.StartedAt, upd.StoppedAt = &started, &stopped
	upd.LastActivityAt, upd.LastActivitySource = stopped, "message"
	beforeUpdate := time.Now().Add(-time.Second)
	if err := s.UpdateSession(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	if upd.ResourceVersion != 2 || upd.UpdatedAt.Before(beforeUpdate) {
		t.Errorf("after update: rv %d, updated %v", upd.ResourceVersion, upd.UpdatedAt)
	}
	got, err = s.GetSession(ctx, "crud2")
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, &upd, got)

	// Clearing optional times.
	upd.StartedAt, upd.StoppedAt = nil, nil
	upd.Private = false
	if err := s.UpdateSession(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetSession(ctx, "crud2")
	sameSession(t, &upd, got)
	if got.ResourceVersion != 3 {
		t.Errorf("rv %d, want 3", got.ResourceVersion)
	}

	if err := s.DeleteSession(ctx, "crud2"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetSession(ctx, "crud2")
	wantErr(t, err, store.ErrNotFound, "GetSession after delete")
	wantErr(t, s.DeleteSession(ctx, "crud2"), store.ErrNotFound, "second delete")
	wantErr(t, s.UpdateSession(ctx, &upd), store.ErrNotFound, "update of a deleted session")
	_, err = s.GetSession(ctx, "never")
	wantErr(t, err, store.ErrNotFound, "GetSession of a missing id")
}

func testSessionValidation(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	wantErr(t, s.CreateSession(ctx, session("", owner.ID, apiv1.StatePending), 0), store.ErrInvalid, "empty id")
	wantErr(t, s.CreateSession(ctx, session("v1", "", apiv1.StatePending), 0), store.ErrInvalid, "empty owner")
	wantErr(t, s.CreateSession(ctx, session("v1", owner.ID, "Sleeping"), 0), store.ErrInvalid, "unknown state")
	ok := session("v2", owner.ID, apiv1.StatePending)
	mustCreate(t, s, ok)
	ok.State = "Sleeping"
	wantErr(t, s.UpdateSession(ctx, ok), store.ErrInvalid, "update to an unknown state")
	_, err := s.ListSessions(ctx, store.SessionFilter{States: []apiv1.SessionState{"Sleeping"}})
	wantErr(t, err, store.ErrInvalid, "list with an unknown state")
	_, err = s.ListSessions(ctx, store.SessionFilter{Continue: "not a token"})
	wantErr(t, err, store.ErrInvalid, "list with a malformed continue token")
	_, err = s.ListAudit(ctx, store.AuditFilter{Continue: "@@@"})
	wantErr(t, err, store.ErrInvalid, "audit with a malformed continue token")
}

func testUpdateStale(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	mustCreate(t, s, session("occ", owner.ID, apiv1.StatePending))
	a, _ := s.GetSession(ctx, "occ")
	b, _ := s.GetSession(ctx, "occ")
	a.State = apiv1.StateStarting
	if err := s.UpdateSession(ctx, a); err != nil {
		t.Fatal(err)
	}
	b.Title = "stale writer"
	wantErr(t, s.UpdateSession(ctx, b), store.ErrConflict, "update with a stale resource version")
	if b.ResourceVersion != 1 {
		t.Errorf("a failed update changed the caller's copy: rv %d", b.ResourceVersion)
	}
	got, _ := s.GetSession(ctx, "occ")
	if got.Title != "" || got.State != apiv1.StateStarting || got.ResourceVersion != 2 {
		t.Errorf("stale update leaked: %s", fmtSession(got))
	}
	// Re-read and retry succeeds.
	got.Title = "fresh writer"
	if err := s.UpdateSession(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != 3 {
		t.Errorf("rv %d, want 3", got.ResourceVersion)
	}
}

func testConcurrentUpdates(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	mustCreate(t, s, session("race", owner.ID, apiv1.StatePending))
	base, _ := s.GetSession(ctx, "race")
	const n = 20
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		successes int
		others    []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := *base
			mine.Title = fmt.Sprintf("writer %d", i)
			err := s.UpdateSession(ctx, &mine)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				successes++
			case !errors.Is(err, store.ErrConflict):
				others = append(others, err)
			}
		}()
	}
	wg.Wait()
	if successes != 1 || len(others) > 0 {
		t.Fatalf("%d concurrent updates from one version: %d succeeded (want 1), unexpected errors %v", n, successes, others)
	}
	got, _ := s.GetSession(ctx, "race")
	if got.ResourceVersion != 2 {
		t.Errorf("rv %d, want 2", got.ResourceVersion)
	}
}

func testQuota(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	// Inactive sessions do not count.
	for i, st := range []apiv1.SessionState{apiv1.StateStopped, apiv1.StateFailed, apiv1.StateStopping, apiv1.StateDeleting} {
		if err := s.CreateSession(ctx, session(fmt.Sprintf("q-inactive-%d", i), a.ID, st), 2); err != nil {
			t.Fatalf("inactive session %s: %v", st, err)
		}
	}
	for i, st := range []apiv1.SessionState{apiv1.StatePending, apiv1.StateRunning} {
		if err := s.CreateSession(ctx, session(fmt.Sprintf("q-active-%d", i), a.ID, st), 2); err != nil {
			t.Fatalf("active session %d: %v", i, err)
		}
	}
	err := s.CreateSession(ctx, session("q-over", a.ID, apiv1.StateStarting), 2)
	wantErr(t, err, store.ErrQuotaExceeded, "third active session with limit 2")
	if _, err := s.GetSession(ctx, "q-over"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused session was stored: %v", err)
	}
	// Another owner has their own quota; zero means no limit.
	if err := s.CreateSession(ctx, session("q-b", b.ID, apiv1.StatePending), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, session("q-unlimited", a.ID, apiv1.StatePending), 0); err != nil {
		t.Fatal(err)
	}
	// Stopping one active session frees a slot.
	for _, id := range []string{"q-active-0", "q-active-1"} {
		sess, _ := s.GetSession(ctx, id)
		sess.State = apiv1.StateStopped
		if err := s.UpdateSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSession(ctx, session("q-after-stop", a.ID, apiv1.StatePending), 2); err != nil {
		t.Fatalf("after stopping two sessions: %v", err)
	}
}

func testQuotaRace(t *testing.T, h *harness) { quotaRace(t, h.open()) }

// testQuotaRaceAcrossStores: the quota holds when the creates come through two stores
// on one database, as they do from two agent replicas.
func testQuotaRaceAcrossStores(t *testing.T, h *harness) { quotaRace(t, h.open(), h.open()) }

func quotaRace(t *testing.T, stores ...store.Store) {
	s, ctx := stores[0], t.Context()
	owner := user(t, s, "racer")
	const n, limit = 50, 3
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		success, denied int
		others          []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := stores[i%len(stores)].CreateSession(ctx, session(fmt.Sprintf("quota-%02d", i), owner.ID, apiv1.StatePending), limit)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				success++
			case errors.Is(err, store.ErrQuotaExceeded):
				denied++
			default:
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if success != limit || denied != n-limit || len(others) > 0 {
		t.Fatalf("%d concurrent creates with limit %d: %d succeeded, %d denied, other errors %v", n, limit, success, denied, others)
	}
	page, err := s.ListSessions(ctx, store.SessionFilter{OwnerID: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != limit {
		t.Fatalf("%d sessions stored, want %d", len(page.Items), limit)
	}
}

func testTouch(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	in := session("touch", owner.ID, apiv1.StateRunning)
	in.CreatedAt, in.LastActivityAt, in.LastActivitySource = t0, t0, "create"
	mustCreate(t, s, in)

	check := func(at time.Time, source string, rv int64) {
		t.Helper()
		got, err := s.GetSession(ctx, "touch")
		if err != nil {
			t.Fatal(err)
		}
		if !got.LastActivityAt.Equal(at) || got.LastActivitySource != source || got.ResourceVersion != rv {
			t.Errorf("activity %v %q rv %d, want %v %q rv %d", got.LastActivityAt, got.LastActivitySource, got.ResourceVersion, at, source, rv)
		}
	}
	if err := s.TouchSession(ctx, "touch", t0.Add(time.Minute), "attach"); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(time.Minute), "attach", 1)
	if err := s.TouchSession(ctx, "touch", t0.Add(30*time.Second), "proxy"); err != nil {
		t.Fatalf("an older touch must be a silent no-op: %v", err)
	}
	check(t0.Add(time.Minute), "attach", 1)
	// Sub-millisecond steps still count.
	if err := s.TouchSession(ctx, "touch", t0.Add(time.Minute+time.Microsecond), "proxy"); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(time.Minute+time.Microsecond), "proxy", 1)
	wantErr(t, s.TouchSession(ctx, "nosuch", t0, "x"), store.ErrNotFound, "touch of a missing session")

	// An update carrying an older LastActivityAt does not rewind it...
	stale := *in
	stale.State = apiv1.StateStopping
	if err := s.UpdateSession(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	if !stale.LastActivityAt.Equal(t0.Add(time.Minute+time.Microsecond)) || stale.LastActivitySource != "proxy" {
		t.Errorf("update returned activity %v %q", stale.LastActivityAt, stale.LastActivitySource)
	}
	check(t0.Add(time.Minute+time.Microsecond), "proxy", 2)
	// ...but a newer one moves it.
	stale.LastActivityAt, stale.LastActivitySource = t0.Add(time.Hour), "message"
	if err := s.UpdateSession(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(time.Hour), "message", 3)
}

// listAll pages through f with the given page size.
func listAll(t testing.TB, s store.Store, f store.SessionFilter) []*store.Session {
	t.Helper()
	var out []*store.Session
	for i := 0; ; i++ {
		page, err := s.ListSessions(context.Background(), f)
		if err != nil {
			t.Fatalf("list page %d: %v", i, err)
		}
		if f.Limit > 0 && len(page.Items) > f.Limit {
			t.Fatalf("page of %d items with limit %d", len(page.Items), f.Limit)
		}
		out = append(out, page.Items...)
		if page.Continue == "" {
			return out
		}
		if len(page.Items) == 0 {
			t.Fatal("empty page with a continue token")
		}
		f.Continue = page.Continue
		if i > 100000 {
			t.Fatal("pagination does not end")
		}
	}
}

func ids(ss []*store.Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func testListOrder(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	base := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	// Created out of order, with ties on CreatedAt broken by id, and microsecond steps.
	specs := []struct {
		id string
		at time.Duration
	}{
		{"o-e", 2 * time.Second}, {"o-a", 2 * time.Second}, {"o-c", 2 * time.Second},
		{"o-z", 0}, {"o-b", time.Hour}, {"o-d", 2*time.Second + time.Microsecond},
		{"o-y", time.Microsecond}, {"o-x", 2 * time.Second},
	}
	for _, sp := range specs {
		sess := session(sp.id, owner.ID, apiv1.StatePending)
		sess.CreatedAt = base.Add(sp.at)
		mustCreate(t, s, sess)
	}
	want := []string{"o-z", "o-y", "o-a", "o-c", "o-e", "o-x", "o-d", "o-b"}
	page, err := s.ListSessions(ctx, store.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(page.Items); !slices.Equal(got, want) || page.Continue != "" {
		t.Errorf("order %v (continue %q), want %v", got, page.Continue, want)
	}
	for _, limit := range []int{1, 2, 3, 7} {
		if got := ids(listAll(t, s, store.SessionFilter{Limit: limit})); !slices.Equal(got, want) {
			t.Errorf("paged by %d: %v, want %v", limit, got, want)
		}
	}
	// Exactly one full page: no continue token.
	page, err = s.ListSessions(ctx, store.SessionFilter{Limit: len(want)})
	if err != nil {
		t.Fatal(err)
	}
	if page.Continue != "" {
		t.Errorf("a page holding the last row has continue %q", page.Continue)
	}
	// Nothing matches: empty, non-nil page.
	page, err = s.ListSessions(ctx, store.SessionFilter{OwnerID: "nobody"})
	if err != nil || page == nil || len(page.Items) != 0 || page.Continue != "" {
		t.Errorf("empty list = %+v, %v", page, err)
	}
}

func testListFilters(t *testing.T, h *harness) {
	s := h.open()
	a, b := user(t, s, "a"), user(t, s, "b")
	mk := func(id, owner string, private bool, st apiv1.SessionState) {
		sess := session(id, owner, st)
		sess.Private = private
		mustCreate(t, s, sess)
	}
	mk("f1", a.ID, true, apiv1.StateRunning)
	mk("f2", a.ID, false, apiv1.StateStopped)
	mk("f3", b.ID, true, apiv1.StateRunning)
	mk("f4", b.ID, false, apiv1.StatePending)
	mk("f5", b.ID, true, apiv1.StateFailed)
	cases := []struct {
		name string
		f    store.SessionFilter
		want []string
	}{
		{"all", store.SessionFilter{}, []string{"f1", "f2", "f3", "f4", "f5"}},
		{"owner", store.SessionFilter{OwnerID: a.ID}, []string{"f1", "f2"}},
		{"visible to a", store.SessionFilter{VisibleTo: a.ID}, []string{"f1", "f2", "f4"}},
		{"visible to b", store.SessionFilter{VisibleTo: b.ID}, []string{"f2", "f3", "f4", "f5"}},
		{"visible to stranger", store.SessionFilter{VisibleTo: "stranger"}, []string{"f2", "f4"}},
		{"state", store.SessionFilter{States: []apiv1.SessionState{apiv1.StateRunning}}, []string{"f1", "f3"}},
		{"states", store.SessionFilter{States: []apiv1.SessionState{apiv1.StateRunning, apiv1.StatePending}}, []string{"f1", "f3", "f4"}},
		{"visible + states", store.SessionFilter{VisibleTo: a.ID, States: []apiv1.SessionState{apiv1.StateRunning, apiv1.StatePending}}, []string{"f1", "f4"}},
		{"owner + state", store.SessionFilter{OwnerID: b.ID, States: []apiv1.SessionState{apiv1.StateFailed}}, []string{"f5"}},
		{"owner + visible", store.SessionFilter{OwnerID: b.ID, VisibleTo: a.ID}, []string{"f4"}},
	}
	for _, c := range cases {
		for _, limit := range []int{0, 1, 2} {
			f := c.f
			f.Limit = limit
			if got := ids(listAll(t, s, f)); !slices.Equal(got, c.want) {
				t.Errorf("%s (limit %d): %v, want %v", c.name, limit, got, c.want)
			}
		}
	}
}

func testListLimits(t *testing.T, h *harness) {
	if testing.Short() {
		t.Skip("creates 1001 sessions")
	}
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	createMany(t, s, owner.ID, 1001, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, c := range []struct{ limit, want int }{{0, 100}, {-5, 100}, {100, 100}, {1000, 1000}, {5000, 1000}} {
		page, err := s.ListSessions(ctx, store.SessionFilter{Limit: c.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != c.want || page.Continue == "" {
			t.Errorf("limit %d: %d items (continue %q), want %d and a continue token", c.limit, len(page.Items), page.Continue, c.want)
		}
	}
	if got := listAll(t, s, store.SessionFilter{Limit: 1000}); len(got) != 1001 {
		t.Errorf("paged through %d sessions, want 1001", len(got))
	}
}

// createMany creates n sessions one second apart from base, with a few concurrent writers.
func createMany(t testing.TB, s store.Store, owner string, n int, base time.Time) []string {
	t.Helper()
	out := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				sess := session(fmt.Sprintf("many-%06d", i), owner, apiv1.AllStates[i%len(apiv1.AllStates)])
				sess.Private = i%3 == 0
				sess.CreatedAt = base.Add(time.Duration(i) * time.Second)
				if err := s.CreateSession(context.Background(), sess, 0); err != nil {
					errs <- err
					return
				}
				out[i] = sess.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return out
}

func testListWhileInserting(t *testing.T, h *harness) {
	s := h.open()
	owner := user(t, s, "owner")
	base := time.Now().Add(-time.Hour)
	pre := createMany(t, s, owner.ID, 25, base)

	f := store.SessionFilter{Limit: 7}
	seen := map[string]int{}
	var order []string
	inserted := 0
	for pageNo := 0; ; pageNo++ {
		page, err := s.ListSessions(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			seen[it.ID]++
			order = append(order, it.ID)
		}
		if page.Continue == "" {
			break
		}
		f.Continue = page.Continue
		// Between pages: new sessions now (after every cursor) and some back-dated
		// into pages already read (which must not cause duplicates or skips).
		for range 3 {
			inserted++
			mustCreate(t, s, session(fmt.Sprintf("new-%03d", inserted), owner.ID, apiv1.StatePending))
		}
		old := session(fmt.Sprintf("backdated-%03d", pageNo), owner.ID, apiv1.StatePending)
		old.CreatedAt = base.Add(-time.Minute)
		mustCreate(t, s, old)
		if pageNo > 100 {
			t.Fatal("pagination does not end while rows are inserted")
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%s listed %d times", id, n)
		}
	}
	for _, id := range pre {
		if seen[id] != 1 {
			t.Errorf("pre-existing %s listed %d times", id, seen[id])
		}
	}
	// Pre-existing rows keep their relative order.
	var preOrder []string
	for _, id := range order {
		if strings.HasPrefix(id, "many-") {
			preOrder = append(preOrder, id)
		}
	}
	if !slices.IsSorted(preOrder) {
		t.Errorf("pre-existing rows out of order: %v", preOrder)
	}
	if seen["new-001"] != 1 {
		t.Errorf("a session created after the first page (later than every cursor) was not listed")
	}
}

func testCount(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	got, err := s.CountSessions(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store counts %v, %v", got, err)
	}
	owner := user(t, s, "owner")
	for i, st := range []apiv1.SessionState{apiv1.StateRunning, apiv1.StateRunning, apiv1.StateFailed, apiv1.StatePending} {
		mustCreate(t, s, session(fmt.Sprintf("c%d", i), owner.ID, st))
	}
	got, err = s.CountSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[apiv1.SessionState]int{apiv1.StateRunning: 2, apiv1.StateFailed: 1, apiv1.StatePending: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CountSessions = %v, want %v", got, want)
	}
}

func testFindUsers(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	mk := func(source, subject, email string, at time.Duration) *store.User {
		u := &store.User{Source: source, Subject: subject, Email: email, LastSeenAt: t0.Add(at)}
		if err := s.UpsertUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	header := mk("header", "jane@example.com", "jane@example.com", 0)
	kube := mk("kubernetes", "jane", "Jane@Example.com", time.Second)
	oidc := mk("kubernetes", "jane@example.com", "", 2*time.Second)
	other := mk("kubernetes", "john", "", 3*time.Second)
	ids := func(name string) []string {
		t.Helper()
		us, err := s.FindUsers(ctx, name)
		if err != nil {
			t.Fatalf("FindUsers(%q): %v", name, err)
		}
		if us == nil {
			t.Fatalf("FindUsers(%q) = nil, want an empty slice", name)
		}
		out := []string{}
		for _, u := range us {
			out = append(out, u.ID)
		}
		return out
	}
	for name, want := range map[string][]string{
		"jane@example.com": {header.ID, kube.ID, oidc.ID}, // subject of two, email of two
		"JANE@example.COM": {header.ID, kube.ID},          // emails ignore case, subjects do not
		"jane":             {kube.ID},
		other.ID:           {other.ID},
		"nobody":           {},
		"":                 {}, // no user has an empty email that matches
		"%":                {}, // no pattern matching
	} {
		if got := ids(name); !slices.Equal(got, want) {
			t.Errorf("FindUsers(%q) = %v, want %v", name, got, want)
		}
	}
	us, err := s.FindUsers(ctx, "jane")
	if err != nil || len(us) != 1 || us[0].Source != "kubernetes" || us[0].Subject != "jane" || us[0].Email != "Jane@Example.com" ||
		!us[0].CreatedAt.Equal(kube.CreatedAt) {
		t.Errorf("FindUsers(jane) = %+v, %v; want the full row of %+v", us, err, kube)
	}
}

func testDeleteUserTokens(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	for i, owner := range []*store.User{a, a, a, b} {
		if err := s.CreateToken(ctx, &store.Token{OwnerID: owner.ID, Name: fmt.Sprint("t", i), Hash: hashOf(fmt.Sprint("secret", i))}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DeleteUserTokens(ctx, a.ID)
	if err != nil || n != 3 {
		t.Fatalf("DeleteUserTokens(a) = %d, %v; want 3", n, err)
	}
	if list, _ := s.ListTokens(ctx, a.ID); len(list) != 0 {
		t.Errorf("a still has tokens: %+v", list)
	}
	for i := range 3 {
		_, err := s.GetTokenByHash(ctx, hashOf(fmt.Sprint("secret", i)))
		wantErr(t, err, store.ErrNotFound, "a revoked token")
	}
	if list, _ := s.ListTokens(ctx, b.ID); len(list) != 1 {
		t.Errorf("b's tokens were touched: %+v", list)
	}
	if n, err := s.DeleteUserTokens(ctx, a.ID); err != nil || n != 0 {
		t.Errorf("second DeleteUserTokens(a) = %d, %v; want 0", n, err)
	}
	if n, err := s.DeleteUserTokens(ctx, "nosuchowner0"); err != nil || n != 0 {
		t.Errorf("DeleteUserTokens(unknown) = %d, %v; want 0", n, err)
	}
}

func hashOf(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func testTokens(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	exp := time.Now().Add(24 * time.Hour)
	t1 := &store.Token{OwnerID: a.ID, Name: "laptop", Hash: hashOf("cake_pat_one"), ExpiresAt: &exp}
	if err := s.CreateToken(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if t1.ID == "" || t1.CreatedAt.IsZero() {
		t.Errorf("CreateToken did not fill id/created: %+v", t1)
	}
	t2 := &store.Token{ID: "tok-two", OwnerID: a.ID, Name: "ci", Hash: hashOf("cake_pat_two"), CreatedAt: t1.CreatedAt.Add(time.Second)}
	if err := s.CreateToken(ctx, t2); err != nil {
		t.Fatal(err)
	}
	t3 := &store.Token{OwnerID: b.ID, Name: "laptop", Hash: hashOf("cake_pat_three")}
	if err := s.CreateToken(ctx, t3); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: b.ID, Name: "other", Hash: hashOf("cake_pat_one")}), store.ErrConflict, "duplicate hash")
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: a.ID, Name: "laptop", Hash: hashOf("x")}), store.ErrConflict, "duplicate name for one owner")
	wantErr(t, s.CreateToken(ctx, &store.Token{ID: t2.ID, OwnerID: a.ID, Name: "y", Hash: hashOf("y")}), store.ErrConflict, "duplicate id")
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: "nosuchowner0", Name: "z", Hash: hashOf("z")}), store.ErrNotFound, "unknown owner")
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: a.ID, Name: "nohash"}), store.ErrInvalid, "no hash")

	got, err := s.GetTokenByHash(ctx, hashOf("cake_pat_one"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != t1.ID || got.OwnerID != a.ID || got.Name != "laptop" || !bytes.Equal(got.Hash, t1.Hash) ||
		!got.CreatedAt.Equal(t1.CreatedAt) || got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp.Truncate(time.Microsecond)) || got.LastUsedAt != nil {
		t.Errorf("GetTokenByHash = %+v, want %+v", got, t1)
	}
	_, err = s.GetTokenByHash(ctx, hashOf("cake_pat_unknown"))
	wantErr(t, err, store.ErrNotFound, "unknown hash")

	list, err := s.ListTokens(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != t1.ID || list[1].ID != "tok-two" || list[1].ExpiresAt != nil {
		t.Errorf("ListTokens(a) = %+v", list)
	}
	if list, _ := s.ListTokens(ctx, "nobody"); list == nil || len(list) != 0 {
		t.Errorf("ListTokens(nobody) = %v, want empty", list)
	}

	used := time.Now().Add(time.Minute)
	if err := s.TouchToken(ctx, "tok-two", used); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchToken(ctx, "tok-two", used.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetTokenByHash(ctx, hashOf("cake_pat_two"))
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(used.Truncate(time.Microsecond)) {
		t.Errorf("LastUsedAt %v, want %v", got.LastUsedAt, used)
	}
	wantErr(t, s.TouchToken(ctx, "nosuch", used), store.ErrNotFound, "touch of a missing token")

	wantErr(t, s.DeleteToken(ctx, b.ID, t1.ID), store.ErrNotFound, "deleting another owner's token")
	if err := s.DeleteToken(ctx, a.ID, t1.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetTokenByHash(ctx, hashOf("cake_pat_one"))
	wantErr(t, err, store.ErrNotFound, "deleted token")
	wantErr(t, s.DeleteToken(ctx, a.ID, t1.ID), store.ErrNotFound, "second delete")
}

func testCredentials(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	c := &store.Credential{OwnerID: a.ID, Provider: "github", Secret: []byte("gho_first")}
	if err := s.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	if c.CreatedAt.IsZero() || !c.UpdatedAt.Equal(c.CreatedAt) {
		t.Errorf("times after first put: %v %v", c.CreatedAt, c.UpdatedAt)
	}
	got, err := s.GetCredential(ctx, a.ID, "github")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Secret) != "gho_first" || got.OwnerID != a.ID || got.Provider != "github" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Errorf("GetCredential = %+v", got)
	}
	time.Sleep(2 * time.Millisecond)
	c2 := &store.Credential{OwnerID: a.ID, Provider: "github", Secret: []byte("gho_second")}
	if err := s.PutCredential(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if !c2.CreatedAt.Equal(c.CreatedAt) || !c2.UpdatedAt.After(c.UpdatedAt) {
		t.Errorf("replace: created %v (want %v), updated %v", c2.CreatedAt, c.CreatedAt, c2.UpdatedAt)
	}
	got, _ = s.GetCredential(ctx, a.ID, "github")
	if string(got.Secret) != "gho_second" {
		t.Errorf("after replace secret %q", got.Secret)
	}
	for _, p := range []string{"openai", "anthropic"} {
		if err := s.PutCredential(ctx, &store.Credential{OwnerID: a.ID, Provider: p, Secret: []byte("k-" + p)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutCredential(ctx, &store.Credential{OwnerID: b.ID, Provider: "github", Secret: []byte("gho_b")}); err != nil {
		t.Fatal(err)
	}
	// An empty secret is a value too.
	if err := s.PutCredential(ctx, &store.Credential{OwnerID: b.ID, Provider: "empty"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetCredential(ctx, b.ID, "empty"); err != nil || len(got.Secret) != 0 {
		t.Errorf("empty secret: %+v, %v", got, err)
	}
	list, err := s.ListCredentials(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	var providers []string
	for _, l := range list {
		providers = append(providers, l.Provider)
		if l.Secret != nil {
			t.Errorf("ListCredentials returned the secret of %s", l.Provider)
		}
	}
	if !slices.Equal(providers, []string{"anthropic", "github", "openai"}) {
		t.Errorf("ListCredentials providers %v", providers)
	}
	if got, _ := s.GetCredential(ctx, b.ID, "github"); got == nil || string(got.Secret) != "gho_b" {
		t.Errorf("b's credential: %+v", got)
	}
	_, err = s.GetCredential(ctx, a.ID, "gitlab")
	wantErr(t, err, store.ErrNotFound, "missing credential")
	wantErr(t, s.PutCredential(ctx, &store.Credential{OwnerID: "nosuchowner0", Provider: "x", Secret: []byte("x")}), store.ErrNotFound, "unknown owner")
	if err := s.DeleteCredential(ctx, a.ID, "github"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetCredential(ctx, a.ID, "github")
	wantErr(t, err, store.ErrNotFound, "deleted credential")
	wantErr(t, s.DeleteCredential(ctx, a.ID, "github"), store.ErrNotFound, "second delete")
}

func testEncryptionAtRest(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	secrets := []string{
		"sk-live-CANARY-credential-0123456789abcdef",
		"gho_CANARYgithubtoken9876543210",
	}
	for i, sec := range secrets {
		if err := s.PutCredential(ctx, &store.Credential{OwnerID: owner.ID, Provider: fmt.Sprintf("provider-canary-%d", i), Secret: []byte(sec)}); err != nil {
			t.Fatal(err)
		}
	}
	tokenSecret := "cake_pat_CANARYtokensecret424242"
	if err := s.CreateToken(ctx, &store.Token{OwnerID: owner.ID, Name: "canary", Hash: hashOf(tokenSecret)}); err != nil {
		t.Fatal(err)
	}
	// Rotation must not leave plaintext behind either.
	s.Close()
	s = h.open(OpenOptions{Keyring: mustKeyring(t, secretB, secretA)})
	if n, err := s.RotateCredentials(ctx); err != nil || n != len(secrets) {
		t.Fatalf("rotate: %d, %v", n, err)
	}
	s.Close()

	dump, err := h.db.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The dump must actually show the rows, or this test proves nothing.
	if !dumpContains(dump, []byte("provider-canary-0")) || !dumpContains(dump, hashOf(tokenSecret)) && !dumpContains(dump, []byte(hex.EncodeToString(hashOf(tokenSecret)))) {
		t.Fatalf("the raw dump (%d columns) does not show the credential and token rows", len(dump))
	}
	for _, sec := range append(secrets, tokenSecret) {
		for _, form := range encodings(sec) {
			for col, vals := range dump {
				for _, v := range vals {
					if bytes.Contains(v, form) {
						t.Errorf("%s holds %q (a form of a secret) in plain text", col, form)
					}
				}
			}
		}
	}
	for _, sec := range []string{secretA, secretB} {
		if dumpContains(dump, []byte(sec)) {
			t.Error("the raw database contains the auth secret")
		}
	}
}

func dumpContains(dump map[string][][]byte, needle []byte) bool {
	for _, vals := range dump {
		for _, v := range vals {
			if bytes.Contains(v, needle) {
				return true
			}
		}
	}
	return false
}

// encodings are the forms a leaked secret could take in a raw dump.
func encodings(s string) [][]byte {
	b := []byte(s)
	return [][]byte{
		b,
		[]byte(hex.EncodeToString(b)),
		[]byte(strings.ToUpper(hex.EncodeToString(b))),
		[]byte(base64.StdEncoding.EncodeToString(b)[:len(s)*4/3-2]),
		[]byte(base64.RawURLEncoding.EncodeToString(b)[:len(s)*4/3-2]),
	}
}

func testCredentialBoundToRow(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	for _, p := range []string{"alpha", "beta"} {
		if err := s.PutCredential(ctx, &store.Credential{OwnerID: owner.ID, Provider: p, Secret: []byte("secret-of-" + p)}); err != nil {
			t.Fatal(err)
		}
	}
	// Copy beta's ciphertext over alpha's: it must not decrypt as alpha's secret.
	if err := h.db.Exec(ctx, `UPDATE credentials SET ciphertext = (SELECT ciphertext FROM credentials WHERE provider = 'beta') WHERE provider = 'alpha'`); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCredential(ctx, owner.ID, "alpha")
	if err == nil {
		t.Fatalf("a ciphertext moved to another row decrypted to %q", got.Secret)
	}
	if errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tampered credential reported as missing: %v", err)
	}
	if got, err := s.GetCredential(ctx, owner.ID, "beta"); err != nil || string(got.Secret) != "secret-of-beta" {
		t.Errorf("untouched row: %+v, %v", got, err)
	}
}

func testRotate(t *testing.T, h *harness) {
	ctx := t.Context()
	old := h.open(OpenOptions{Keyring: mustKeyring(t, secretA)})
	a, b := user(t, old, "a"), user(t, old, "b")
	want := map[string]string{}
	for _, u := range []*store.User{a, b} {
		for _, p := range []string{"github", "openai"} {
			sec := "secret-" + u.Subject + "-" + p
			want[u.ID+"/"+p] = sec
			if err := old.PutCredential(ctx, &store.Credential{OwnerID: u.ID, Provider: p, Secret: []byte(sec)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := old.RotateCredentials(ctx); err != nil || n != 0 {
		t.Fatalf("rotating with the same primary: %d, %v; want 0", n, err)
	}
	check := func(s store.Store, what string) {
		t.Helper()
		for k, sec := range want {
			owner, provider, _ := strings.Cut(k, "/")
			got, err := s.GetCredential(ctx, owner, provider)
			if err != nil || string(got.Secret) != sec {
				t.Fatalf("%s: %s = %v, %v", what, k, got, err)
			}
		}
	}

	// New secret, old one kept for decryption: reads work before rotating.
	both := h.open(OpenOptions{Keyring: mustKeyring(t, secretB, secretA)})
	check(both, "new primary, before rotation")
	// A credential written now uses the new key: rotation rewrites only the old ones.
	if err := both.PutCredential(ctx, &store.Credential{OwnerID: a.ID, Provider: "fresh", Secret: []byte("fresh")}); err != nil {
		t.Fatal(err)
	}
	want[a.ID+"/fresh"] = "fresh"
	n, err := both.RotateCredentials(ctx)
	if err != nil || n != 4 {
		t.Fatalf("RotateCredentials = %d, %v; want 4", n, err)
	}
	if n, err := both.RotateCredentials(ctx); err != nil || n != 0 {
		t.Fatalf("second rotation = %d, %v; want 0", n, err)
	}
	check(both, "after rotation")

	// The old secret can now be dropped...
	onlyNew := h.open(OpenOptions{Keyring: mustKeyring(t, secretB)})
	check(onlyNew, "new key only")
	// ...and a keyring with only the old key reads nothing.
	_, err = old.GetCredential(ctx, a.ID, "github")
	wantErr(t, err, keyring.ErrUnknownKey, "old keyring after rotation")
	other := h.open(OpenOptions{Keyring: mustKeyring(t, "an unrelated secret")})
	_, err = other.GetCredential(ctx, a.ID, "github")
	wantErr(t, err, keyring.ErrUnknownKey, "unrelated keyring")
	if _, err := other.RotateCredentials(ctx); err == nil {
		t.Error("rotating with a keyring that cannot read the data succeeded")
	}
	check(onlyNew, "after a failed rotation")
}

func testAudit(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	base := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	var all []*store.AuditEvent
	for i := range 25 {
		e := &store.AuditEvent{
			Time: base.Add(time.Duration(i) * time.Second), Actor: []string{"alice", "bob"}[i%2],
			Action: "session.create", Target: fmt.Sprintf("s%d", i%5), Outcome: "success",
			Detail: fmt.Sprintf("detail %d", i), RequestID: fmt.Sprintf("req-%d", i),
		}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
		if e.ID <= 0 || (len(all) > 0 && e.ID <= all[len(all)-1].ID) {
			t.Fatalf("event ids not increasing: %d after %v", e.ID, all)
		}
		all = append(all, e)
	}
	zero := &store.AuditEvent{Actor: "carol", Action: "token.create", Outcome: "denied"}
	before := time.Now().Add(-time.Second)
	if err := s.AppendAudit(ctx, zero); err != nil {
		t.Fatal(err)
	}
	if zero.Time.Before(before) {
		t.Errorf("zero Time not filled: %v", zero.Time)
	}
	all = append(all, zero)

	listAudit := func(f store.AuditFilter) []*store.AuditEvent {
		t.Helper()
		var out []*store.AuditEvent
		for {
			page, err := s.ListAudit(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if f.Limit > 0 && len(page.Items) > f.Limit {
				t.Fatalf("page of %d with limit %d", len(page.Items), f.Limit)
			}
			out = append(out, page.Items...)
			if page.Continue == "" {
				return out
			}
			f.Continue = page.Continue
		}
	}
	got := listAudit(store.AuditFilter{Limit: 10})
	if len(got) != len(all) {
		t.Fatalf("listed %d events, want %d", len(got), len(all))
	}
	for i, e := range got {
		w := all[len(all)-1-i]
		if e.ID != w.ID || !e.Time.Equal(w.Time) || e.Actor != w.Actor || e.Action != w.Action || e.Target != w.Target ||
			e.Outcome != w.Outcome || e.Detail != w.Detail || e.RequestID != w.RequestID {
			t.Errorf("event %d = %+v, want %+v (newest first)", i, e, w)
		}
	}
	if got := listAudit(store.AuditFilter{Actor: "alice", Limit: 4}); len(got) != 13 || got[0].ID != all[24].ID {
		t.Errorf("actor filter: %d events", len(got))
	}
	got = listAudit(store.AuditFilter{Target: "s3", Limit: 2})
	if len(got) != 5 {
		t.Errorf("target filter: %d events, want 5", len(got))
	}
	for _, e := range got {
		if e.Target != "s3" {
			t.Errorf("target filter returned %+v", e)
		}
	}
	if got := listAudit(store.AuditFilter{Actor: "bob", Target: "s1"}); len(got) != 3 {
		t.Errorf("actor+target filter: %d events, want 3", len(got))
	}
	// Events appended while paging appear on no later page: newest-first pages
	// continue strictly below the last id seen.
	page, _ := s.ListAudit(ctx, store.AuditFilter{Limit: 5})
	if err := s.AppendAudit(ctx, &store.AuditEvent{Actor: "late"}); err != nil {
		t.Fatal(err)
	}
	rest := listAudit(store.AuditFilter{Limit: 5, Continue: page.Continue})
	if len(page.Items)+len(rest) != len(all) {
		t.Errorf("paging while appending: %d + %d events, want %d", len(page.Items), len(rest), len(all))
	}
	if p, err := s.ListAudit(ctx, store.AuditFilter{Actor: "nobody"}); err != nil || len(p.Items) != 0 || p.Continue != "" {
		t.Errorf("empty audit page = %+v, %v", p, err)
	}
}

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
