package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
	if minimal.State != apiv1.StatePending || minimal.CreatedAt.Before(before) || !minimal.LastActivityAt.Equal(minimal.CreatedAt) ||
		minimal.StartKind != apiv1.StartKindCold {
		t.Errorf("defaults: %s", fmtSession(minimal))
	}
	got, err = s.GetSession(ctx, "crud2")
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, minimal, got)

	wantErr(t, s.CreateSession(ctx, fullSession("crud1", owner.ID, created), 0), store.ErrConflict, "duplicate id")
	badKind := session("crud4", owner.ID, apiv1.StatePending)
	badKind.StartKind = "lukewarm"
	wantErr(t, s.CreateSession(ctx, badKind, 0), store.ErrInvalid, "unknown start kind")
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
