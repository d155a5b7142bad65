package integrations

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// world is a store with sessions in several states, some linked to "chat".
func world(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	owner := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(t.Context(), owner); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		id     string
		state  apiv1.SessionState
		source string
	}{
		{"run-chat", apiv1.StateRunning, "chat"},
		{"pend-chat", apiv1.StatePending, "chat"},
		{"stop-chat", apiv1.StateStopped, "chat"},
		{"run-other", apiv1.StateRunning, "tracker"},
		{"run-none", apiv1.StateRunning, ""},
	} {
		sess := &store.Session{ID: s.id, OwnerID: owner.ID, Repo: "https://github.com/acme/widgets", State: s.state}
		if err := st.CreateSession(t.Context(), sess, 0); err != nil {
			t.Fatal(err)
		}
		if s.source != "" {
			if err := st.CreateLink(t.Context(), &store.IntegrationLink{Source: s.source, ExternalID: "x-" + s.id, SessionID: s.id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

// steps records the sessions stepped and ends those in done.
type steps struct {
	mu   sync.Mutex
	seen map[string]int
	done map[string]bool
}

func (s *steps) step(_ context.Context, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[id]++
	return s.done[id]
}

func (s *steps) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

// TestResumeFollowsLinkedSessionsInItsStates: only sessions of its own source, in the
// states asked for, are picked up; a done step drops a session, Add brings it back.
func TestResumeFollowsLinkedSessionsInItsStates(t *testing.T) {
	st := world(t)
	rec := &steps{seen: map[string]int{}, done: map[string]bool{"pend-chat": true}}
	f := NewFollower("chat", st, nil, rec.step, apiv1.StatePending, apiv1.StateRunning)
	f.Resume(t.Context())
	if got := sortedIDs(f); len(got) != 2 || got[0] != "pend-chat" || got[1] != "run-chat" {
		t.Fatalf("followed after Resume: %v, want pend-chat and run-chat", got)
	}
	f.Once(t.Context())
	if got := sortedIDs(f); len(got) != 1 || got[0] != "run-chat" || rec.count("pend-chat") != 1 || rec.count("run-chat") != 1 {
		t.Fatalf("after Once: followed %v, steps %v", got, rec.seen)
	}
	f.Add("pend-chat")
	f.Once(t.Context())
	if rec.count("pend-chat") != 2 {
		t.Errorf("a session added again was not stepped: %v", rec.seen)
	}
}

// TestRunDoesJobsAndPicksUpOthersSessions: Run's workers do the queued jobs, and a
// session linked after start (another replica's) is followed at the next resync.
func TestRunDoesJobsAndPicksUpOthersSessions(t *testing.T) {
	st := world(t)
	rec := &steps{seen: map[string]int{}, done: map[string]bool{}}
	f := NewFollower("chat", st, nil, rec.step, apiv1.StateRunning)
	jobs := make(chan string, 4)
	var mu sync.Mutex
	var worked []string
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, 2, jobs, func(_ context.Context, j string) {
			mu.Lock()
			worked = append(worked, j)
			mu.Unlock()
		}, f, time.Millisecond)
	}()
	jobs <- "a"
	jobs <- "b"
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: steps %v", what, rec.seen)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// The first Resume is over once its session has been stepped.
	waitFor("run-chat never stepped", func() bool { return rec.count("run-chat") > 0 })
	// Then another replica links a running session to this source: only a later
	// Resume (every ResyncEvery polls) can find it.
	if err := st.CreateLink(t.Context(), &store.IntegrationLink{Source: "chat", ExternalID: "late", SessionID: "run-none"}); err != nil {
		t.Fatal(err)
	}
	waitFor("the late session was never stepped", func() bool { return rec.count("run-none") > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(worked) != 2 {
		t.Errorf("jobs done: %v, want a and b", worked)
	}
	if rec.count("run-other") != 0 || rec.count("stop-chat") != 0 {
		t.Errorf("stepped sessions it does not follow: %v", rec.seen)
	}
}

func sortedIDs(f *Follower) []string {
	ids := f.IDs()
	slices.Sort(ids)
	return ids
}
