package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Two stores opened on one database stand for two agent replicas: whatever the suite
// proves across them holds across processes sharing the database.

// testSessionLock: a session lock excludes every other store on the database, other
// ids are independent, a release hands the lock to the next waiter, and a wait ends
// with its context.
func testSessionLock(t *testing.T, h *harness) {
	a, b, ctx := h.open(), h.open(), t.Context()
	unlockA, err := a.LockSession(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	// Held by a: b's wait for the same id ends only with its context.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.LockSession(short, "shared")
	cancel()
	wantErr(t, err, context.DeadlineExceeded, "locking an id another store holds")
	if _, err := a.LockSession(short, "shared"); err == nil {
		t.Fatal("the holder's own store locked the id a second time: the lock must exclude every holder")
	}

	// Another id is not blocked (and the row need not exist).
	unlockOther, err := b.LockSession(ctx, "another-id")
	if err != nil {
		t.Fatalf("locking a different id while one is held: %v", err)
	}
	unlockOther()

	// A waiter gets the lock once the holder releases it.
	got := make(chan func(), 1)
	errc := make(chan error, 1)
	go func() {
		u, err := b.LockSession(ctx, "shared")
		if err != nil {
			errc <- err
			return
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("the waiter got the lock while it was held")
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(200 * time.Millisecond):
	}
	unlockA()
	unlockA() // releasing twice is harmless
	var unlockB func()
	select {
	case unlockB = <-got:
	case err := <-errc:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("the waiter never got the released lock")
	}
	unlockB()

	// A cancelled context fails at once and leaves nothing held.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.LockSession(canceled, "shared"); !errors.Is(err, context.Canceled) {
		t.Errorf("LockSession with a cancelled context: %v, want context.Canceled", err)
	}
	u, err := b.LockSession(ctx, "shared")
	if err != nil {
		t.Fatalf("the lock after a cancelled attempt: %v", err)
	}
	u()
}

// testConflictingTransitions: operations that read a session, decide and write a
// transition, each under the session lock, sent to two stores at once: they never
// overlap, exactly one of the conflicting transitions wins, and the stored row is the
// winner's. This is what the agent's stop/start/delete do across replicas.
func testConflictingTransitions(t *testing.T, h *harness) {
	stores := []store.Store{h.open(), h.open()}
	ctx := t.Context()
	owner := user(t, stores[0], "owner")
	const rounds, perRound = 10, 8
	for r := range rounds {
		id := fmt.Sprintf("conflict-%02d", r)
		mustCreate(t, stores[0], session(id, owner.ID, apiv1.StateStopped))
		var (
			wg      sync.WaitGroup
			inside  atomic.Int32
			overlap atomic.Bool
			mu      sync.Mutex
			winners []apiv1.SessionState
			errs    []error
		)
		start := make(chan struct{})
		for i := range perRound {
			// Half of them start the session, half delete it; either needs it Stopped.
			target := apiv1.StatePending
			if i%2 == 1 {
				target = apiv1.StateDeleting
			}
			s := stores[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				unlock, err := s.LockSession(ctx, id)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				defer unlock()
				if inside.Add(1) > 1 {
					overlap.Store(true)
				}
				defer inside.Add(-1)
				cur, err := s.GetSession(ctx, id)
				if err == nil && cur.State == apiv1.StateStopped {
					time.Sleep(time.Millisecond) // widen the window a missing lock would leave
					cur.State = target
					err = s.UpdateSession(ctx, cur)
					if err == nil {
						mu.Lock()
						winners = append(winners, target)
						mu.Unlock()
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		if overlap.Load() {
			t.Fatalf("round %d: two holders of the lock of %s at once", r, id)
		}
		if len(errs) > 0 {
			t.Fatalf("round %d: under the lock no write may conflict: %v", r, errs)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d transitions won (%v), want exactly 1", r, len(winners), winners)
		}
		got, err := stores[1].GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != winners[0] || got.ResourceVersion != 2 {
			t.Fatalf("round %d: stored %s at rv %d, want the winner's %s at rv 2", r, got.State, got.ResourceVersion, winners[0])
		}
	}
}

// testConflictingUpdatesAcrossStores: without any lock, conflicting writes from the
// same version through two stores are still decided by the database: one succeeds,
// the rest get ErrConflict.
func testConflictingUpdatesAcrossStores(t *testing.T, h *harness) {
	a, b, ctx := h.open(), h.open(), t.Context()
	owner := user(t, a, "owner")
	mustCreate(t, a, session("cas", owner.ID, apiv1.StateRunning))
	base, err := a.GetSession(ctx, "cas")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var (
		wg        sync.WaitGroup
		successes atomic.Int32
		mu        sync.Mutex
		others    []error
	)
	start := make(chan struct{})
	for i := range n {
		s := []store.Store{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := *base
			mine.State = []apiv1.SessionState{apiv1.StateStopping, apiv1.StateDeleting}[i%2]
			<-start
			err := s.UpdateSession(ctx, &mine)
			switch {
			case err == nil:
				successes.Add(1)
			case !errors.Is(err, store.ErrConflict):
				mu.Lock()
				others = append(others, err)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if successes.Load() != 1 || len(others) > 0 {
		t.Fatalf("%d conflicting updates over two stores: %d succeeded (want 1), unexpected errors %v", n, successes.Load(), others)
	}
	got, _ := b.GetSession(ctx, "cas")
	if got.ResourceVersion != 2 {
		t.Errorf("rv %d, want 2", got.ResourceVersion)
	}
}

// testActivateQuota: starting a session counts against the owner's quota like
// creating one; a session already active is not counted twice.
func testActivateQuota(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "starter")
	for _, id := range []string{"act-a", "act-b"} {
		mustCreate(t, s, session(id, owner.ID, apiv1.StateRunning))
	}
	mustCreate(t, s, session("act-stopped", owner.ID, apiv1.StateStopped))
	stopped, _ := s.GetSession(ctx, "act-stopped")
	stopped.State = apiv1.StatePending
	wantErr(t, s.ActivateSession(ctx, stopped, 2), store.ErrQuotaExceeded, "starting a third session with limit 2")
	if got, _ := s.GetSession(ctx, "act-stopped"); got.State != apiv1.StateStopped || got.ResourceVersion != 1 {
		t.Fatalf("a refused start changed the row: %s", fmtSession(got))
	}
	// An active session moving between active states is not a new one.
	a, _ := s.GetSession(ctx, "act-a")
	a.State = apiv1.StateStarting
	if err := s.ActivateSession(ctx, a, 2); err != nil {
		t.Fatalf("an active session at the limit changing state: %v", err)
	}
	// No limit, then a freed slot.
	if err := s.ActivateSession(ctx, stopped, 0); err != nil {
		t.Fatalf("start without a limit: %v", err)
	}
	stopped.State = apiv1.StateStopped
	if err := s.UpdateSession(ctx, stopped); err != nil {
		t.Fatal(err)
	}
	b, _ := s.GetSession(ctx, "act-b")
	b.State = apiv1.StateStopped
	if err := s.UpdateSession(ctx, b); err != nil {
		t.Fatal(err)
	}
	stopped.State = apiv1.StatePending
	if err := s.ActivateSession(ctx, stopped, 2); err != nil {
		t.Fatalf("start after another stopped: %v", err)
	}
	if got, _ := s.GetSession(ctx, "act-stopped"); got.State != apiv1.StatePending || got.ResourceVersion != stopped.ResourceVersion {
		t.Fatalf("after the start: %s (caller has rv %d)", fmtSession(got), stopped.ResourceVersion)
	}
	// Stale versions and missing rows keep their errors.
	b.State = apiv1.StatePending
	b.ResourceVersion--
	wantErr(t, s.ActivateSession(ctx, b, 5), store.ErrConflict, "a start from a stale version")
	wantErr(t, s.ActivateSession(ctx, session("act-missing", owner.ID, apiv1.StatePending), 5), store.ErrNotFound, "starting a missing session")
}

// testQuotaRaceCreatesAndStarts: creates and starts of one owner racing through two
// stores never take the owner past the limit.
func testQuotaRaceCreatesAndStarts(t *testing.T, h *harness) {
	stores := []store.Store{h.open(), h.open()}
	ctx := t.Context()
	owner := user(t, stores[0], "racer")
	const n, limit = 12, 3
	for i := range n {
		mustCreate(t, stores[0], session(fmt.Sprintf("stopped-%02d", i), owner.ID, apiv1.StateStopped))
	}
	var (
		wg      sync.WaitGroup
		won     atomic.Int32
		mu      sync.Mutex
		others  []error
		refused atomic.Int32
	)
	start := make(chan struct{})
	note := func(err error) {
		switch {
		case err == nil:
			won.Add(1)
		case errors.Is(err, store.ErrQuotaExceeded):
			refused.Add(1)
		default:
			mu.Lock()
			others = append(others, err)
			mu.Unlock()
		}
	}
	for i := range n {
		s := stores[i%2]
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			note(s.CreateSession(ctx, session(fmt.Sprintf("new-%02d", i), owner.ID, apiv1.StatePending), limit))
		}()
		go func() {
			defer wg.Done()
			<-start
			cur, err := s.GetSession(ctx, fmt.Sprintf("stopped-%02d", i))
			if err != nil {
				note(err)
				return
			}
			cur.State = apiv1.StatePending
			note(s.ActivateSession(ctx, cur, limit))
		}()
	}
	close(start)
	wg.Wait()
	if won.Load() != limit || refused.Load() != 2*n-limit || len(others) > 0 {
		t.Fatalf("%d creates and %d starts with limit %d: %d succeeded, %d refused, other errors %v", n, n, limit, won.Load(), refused.Load(), others)
	}
	page, err := stores[1].ListSessions(ctx, store.SessionFilter{OwnerID: owner.ID, States: []apiv1.SessionState{apiv1.StatePending}})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != limit {
		t.Fatalf("%d active sessions stored, want %d", len(page.Items), limit)
	}
}
