package storetest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
