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

// testIntegrationEvents: the first delivery of an event is reported first, every later
// one (from this or another store on the database) a duplicate, per source; concurrent
// deliveries have exactly one winner; pruning forgets events received before a time.
func testIntegrationEvents(t *testing.T, h *harness) {
	s, other, ctx := h.open(), h.open(), t.Context()
	if first, err := s.RecordEvent(ctx, "slack", "Ev1"); err != nil || !first {
		t.Fatalf("first delivery: %v, %v; want true", first, err)
	}
	if first, err := other.RecordEvent(ctx, "slack", "Ev1"); err != nil || first {
		t.Fatalf("retry through another store: %v, %v; want false", first, err)
	}
	if first, err := s.RecordEvent(ctx, "linear", "Ev1"); err != nil || !first {
		t.Fatalf("the same id from another source: %v, %v; want true", first, err)
	}
	if _, err := s.RecordEvent(ctx, "", "x"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("no source: %v, want ErrInvalid", err)
	}
	if _, err := s.RecordEvent(ctx, "slack", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("no event id: %v, want ErrInvalid", err)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			first, err := st.RecordEvent(ctx, "slack", "EvRace")
			if err != nil {
				t.Errorf("concurrent delivery: %v", err)
			}
			if first {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent deliveries were first, want 1", wins)
	}

	if n, err := s.PruneEvents(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("prune before an hour ago: %d, %v; want 0", n, err)
	}
	if first, err := s.RecordEvent(ctx, "slack", "Ev1"); err != nil || first {
		t.Errorf("after a prune that kept it: %v, %v; want a duplicate", first, err)
	}
	if n, err := s.PruneEvents(ctx, time.Now().Add(time.Minute)); err != nil || n != 3 {
		t.Errorf("prune everything: %d, %v; want 3", n, err)
	}
	if first, err := s.RecordEvent(ctx, "slack", "Ev1"); err != nil || !first {
		t.Errorf("after it was pruned: %v, %v; want first again", first, err)
	}
}

// testIntegrationLinks: a link is created once per (source, external id) — a second
// create is ErrConflict even when racing —, read back as written, listed per session,
// its data replaced; it goes with its session.
func testIntegrationLinks(t *testing.T, h *harness) {
	s, other, ctx := h.open(), h.open(), t.Context()
	owner := user(t, s, "owner")
	mustCreate(t, s, session("s1", owner.ID, apiv1.StateRunning))
	mustCreate(t, s, session("s2", owner.ID, apiv1.StateRunning))

	if _, err := s.GetLink(ctx, "slack", "C1:1.0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing link: %v, want ErrNotFound", err)
	}
	if got, err := s.ListLinks(ctx, "s1"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no links: %#v, %v; want empty", got, err)
	}
	before := time.Now().Add(-time.Second)
	l := &store.IntegrationLink{Source: "slack", ExternalID: "C1:1.0", SessionID: "s1", Data: []byte(`{"channel":"C1"}`)}
	if err := s.CreateLink(ctx, l); err != nil {
		t.Fatal(err)
	}
	if l.CreatedAt.Before(before) || !l.UpdatedAt.Equal(l.CreatedAt) {
		t.Errorf("created at %v, updated at %v", l.CreatedAt, l.UpdatedAt)
	}
	got, err := other.GetLink(ctx, "slack", "C1:1.0")
	if err != nil || got.SessionID != "s1" || string(got.Data) != `{"channel":"C1"}` || !got.CreatedAt.Equal(l.CreatedAt) || !got.UpdatedAt.Equal(l.UpdatedAt) {
		t.Fatalf("got %+v, %v; want %+v", got, err, l)
	}
	if err := other.CreateLink(ctx, &store.IntegrationLink{Source: "slack", ExternalID: "C1:1.0", SessionID: "s2"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second link of the thread: %v, want ErrConflict", err)
	}
	if err := s.CreateLink(ctx, &store.IntegrationLink{Source: "linear", ExternalID: "C1:1.0", SessionID: "s1"}); err != nil {
		t.Errorf("the same id in another source: %v", err)
	}
	if err := s.CreateLink(ctx, &store.IntegrationLink{Source: "slack", ExternalID: "x", SessionID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing session: %v, want ErrNotFound", err)
	}
	for _, bad := range []*store.IntegrationLink{{ExternalID: "x", SessionID: "s1"}, {Source: "slack", SessionID: "s1"}, {Source: "slack", ExternalID: "x"}} {
		if err := s.CreateLink(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("create %+v: %v, want ErrInvalid", bad, err)
		}
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			err := st.CreateLink(ctx, &store.IntegrationLink{Source: "slack", ExternalID: "race", SessionID: "s2"})
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("concurrent create: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent creates succeeded, want 1", wins)
	}

	read, err := s.GetLink(ctx, "slack", "C1:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateLinkData(ctx, "slack", "C1:1.0", read.Data, []byte(`{"channel":"C1","status":"9.9"}`)); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetLink(ctx, "slack", "C1:1.0"); err != nil || string(got.Data) != `{"channel":"C1","status":"9.9"}` || got.UpdatedAt.Before(l.UpdatedAt) || !got.CreatedAt.Equal(l.CreatedAt) {
		t.Errorf("after the update: %+v, %v", got, err)
	}
	// A swap from data read before that update is refused, and changes nothing.
	if err := s.UpdateLinkData(ctx, "slack", "C1:1.0", read.Data, []byte(`{"stale":true}`)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update from stale data: %v, want ErrConflict", err)
	}
	if got, err = s.GetLink(ctx, "slack", "C1:1.0"); err != nil || string(got.Data) != `{"channel":"C1","status":"9.9"}` {
		t.Errorf("after the refused update: %+v, %v", got, err)
	}
	if err := s.UpdateLinkData(ctx, "slack", "nope", nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update a missing link: %v, want ErrNotFound", err)
	}
	// Agents racing to post the same answer (replicas, both stores on one database):
	// every one read the same data, exactly one swap wins.
	cur, err := s.GetLink(ctx, "slack", "C1:1.0")
	if err != nil {
		t.Fatal(err)
	}
	swaps := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			err := st.UpdateLinkData(ctx, "slack", "C1:1.0", cur.Data, []byte(fmt.Sprintf(`{"answered":"m%d"}`, i)))
			switch {
			case err == nil:
				mu.Lock()
				swaps++
				mu.Unlock()
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("concurrent swap: %v", err)
			}
		}()
	}
	wg.Wait()
	if swaps != 1 {
		t.Errorf("%d concurrent swaps from the same data succeeded, want 1", swaps)
	}

	list, err := s.ListLinks(ctx, "s1")
	if err != nil || len(list) != 2 {
		t.Fatalf("links of s1: %+v, %v; want 2", list, err)
	}
	for _, l := range list {
		if l.SessionID != "s1" {
			t.Errorf("links of s1 include %+v", l)
		}
	}
	if err := s.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLink(ctx, "slack", "C1:1.0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the session was deleted: %v, want ErrNotFound", err)
	}
	if list, err := s.ListLinks(ctx, "s2"); err != nil || len(list) != 1 || list[0].ExternalID != "race" {
		t.Errorf("links of s2: %+v, %v", list, err)
	}
}
