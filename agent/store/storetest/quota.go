package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
