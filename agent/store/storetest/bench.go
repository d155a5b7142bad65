package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/benchsample"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Bench runs the store benchmarks on fresh databases from newDB, on a table of
// benchsample.Sessions() rows (10,000 unless $CAKE_BENCH_SESSIONS):
//
//	CreateSession          one insert with the quota check (sessions/s, p50/p99)
//	GetSession             by id among the rows (p50/p99)
//	ListSessionsPage       a page of 100 at a random depth of the rows (p50/p99)
//	ListSessionsVisible    the same with VisibleTo and an active-states filter, as the UI lists
//
// Each figure is the median of at least benchsample.MinSamples samples (ns/op), with
// p50-us, p99-us, min-us and max-us (microseconds) as extra metrics. Each checks its work:
// the created rows are counted, a get returns the row asked for, a page has the rows the
// same page had before the timing.
func Bench(b *testing.B, newDB NewDB) {
	kr := mustKeyring(b, secretA)
	open := func(db DB) store.Store {
		s, err := db.Open(context.Background(), OpenOptions{Keyring: kr})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}

	b.Run("CreateSession", func(b *testing.B) {
		s := open(newDB(b))
		owners := benchOwners(b, s, 10)
		var lat benchsample.Samples
		n := benchsample.N(b, 100)
		start := time.Now()
		for i := range n {
			sess := session(fmt.Sprintf("bench-%09d", i), owners[i%len(owners)], apiv1.StateStopped)
			t0 := time.Now()
			if err := s.CreateSession(context.Background(), sess, 1000); err != nil {
				b.Fatal(err)
			}
			lat.Add(time.Since(t0))
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "sessions/s")
		if got := countRows(b, s); got != n {
			b.Fatalf("%d rows after %d creates", got, n)
		}
		lat.Report(b, "us")
	})

	// The read benchmarks share one seeded database.
	s := open(newDB(b))
	owners := benchOwners(b, s, 20)
	rows := benchsample.Sessions()
	seeded := seed(b, s, owners, rows)
	if got := countRows(b, s); got != rows {
		b.Fatalf("%d rows after seeding %d", got, rows)
	}

	b.Run("GetSession", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, 2))
		var lat benchsample.Samples
		for range benchsample.N(b, 1000) {
			id := seeded[rng.IntN(len(seeded))]
			t0 := time.Now()
			got, err := s.GetSession(context.Background(), id)
			lat.Add(time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			if got.ID != id {
				b.Fatalf("GetSession(%s) returned %s", id, got.ID)
			}
		}
		lat.Report(b, "us")
	})

	listBench := func(f store.SessionFilter) func(b *testing.B) {
		return func(b *testing.B) {
			// Continue tokens for every page, so each iteration lists a random depth, and
			// each page's length, which the timed lists must return again.
			tokens, sizes := []string{""}, []int{}
			for g := f; ; {
				page, err := s.ListSessions(context.Background(), g)
				if err != nil {
					b.Fatal(err)
				}
				sizes = append(sizes, len(page.Items))
				if page.Continue == "" {
					break
				}
				tokens = append(tokens, page.Continue)
				g.Continue = page.Continue
			}
			rng := rand.New(rand.NewPCG(3, 4))
			var lat benchsample.Samples
			for range benchsample.N(b, 200) {
				g := f
				k := rng.IntN(len(tokens))
				g.Continue = tokens[k]
				t0 := time.Now()
				page, err := s.ListSessions(context.Background(), g)
				lat.Add(time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				if len(page.Items) != sizes[k] {
					b.Fatalf("page %d has %d rows, had %d", k, len(page.Items), sizes[k])
				}
			}
			lat.Report(b, "us")
		}
	}
	b.Run("ListSessionsPage", listBench(store.SessionFilter{Limit: 100}))
	b.Run("ListSessionsVisible", listBench(store.SessionFilter{
		Limit: 100, VisibleTo: owners[0],
		States: []apiv1.SessionState{apiv1.StatePending, apiv1.StateStarting, apiv1.StateRunning},
	}))
}

func benchOwners(b *testing.B, s store.Store, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = user(b, s, fmt.Sprintf("bench-user-%d", i)).ID
	}
	return out
}

// seed creates n sessions spread over owners, states and visibility.
func seed(b *testing.B, s store.Store, owners []string, n int) []string {
	ids := make([]string, n)
	base := time.Now().Add(-time.Duration(n) * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				sess := fullSession(fmt.Sprintf("seed-%06d", i), owners[i%len(owners)], base.Add(time.Duration(i)*time.Second))
				sess.State = apiv1.AllStates[i%len(apiv1.AllStates)]
				sess.Private = i%2 == 0
				if err := s.CreateSession(context.Background(), sess, 0); err != nil {
					errs <- err
					return
				}
				ids[i] = sess.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return ids
}

// countRows counts every session in s, page by page.
func countRows(b *testing.B, s store.Store) int {
	b.Helper()
	n := 0
	for f := (store.SessionFilter{Limit: 1000}); ; {
		page, err := s.ListSessions(context.Background(), f)
		if err != nil {
			b.Fatal(err)
		}
		n += len(page.Items)
		if page.Continue == "" {
			return n
		}
		f.Continue = page.Continue
	}
}
