package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// BenchSessions is the table size of the read benchmarks.
const BenchSessions = 10000

// Bench runs the store benchmarks on fresh databases from newDB:
//
//	CreateSession          one insert with the quota check (sessions/s, p50/p99)
//	GetSession             by id among BenchSessions rows (p50/p99)
//	ListSessionsPage       a page of 100 at a random depth of BenchSessions rows (p50/p99)
//	ListSessionsVisible    the same with VisibleTo and an active-states filter, as the UI lists
//
// Latencies are reported as extra metrics p50-us and p99-us (microseconds).
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
		var lat []time.Duration
		i := 0
		start := time.Now()
		for b.Loop() {
			i++
			sess := session(fmt.Sprintf("bench-%09d", i), owners[i%len(owners)], apiv1.StateStopped)
			t0 := time.Now()
			if err := s.CreateSession(context.Background(), sess, 1000); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "sessions/s")
		reportLatency(b, lat)
	})

	// The read benchmarks share one seeded database.
	s := open(newDB(b))
	owners := benchOwners(b, s, 20)
	seeded := seed(b, s, owners, BenchSessions)

	b.Run("GetSession", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, 2))
		var lat []time.Duration
		for b.Loop() {
			id := seeded[rng.IntN(len(seeded))]
			t0 := time.Now()
			if _, err := s.GetSession(context.Background(), id); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportLatency(b, lat)
	})

	listBench := func(f store.SessionFilter) func(b *testing.B) {
		return func(b *testing.B) {
			// Continue tokens for every page, so each iteration lists a random depth.
			tokens := []string{""}
			for g := f; ; {
				page, err := s.ListSessions(context.Background(), g)
				if err != nil {
					b.Fatal(err)
				}
				if page.Continue == "" {
					break
				}
				tokens = append(tokens, page.Continue)
				g.Continue = page.Continue
			}
			rng := rand.New(rand.NewPCG(3, 4))
			var lat []time.Duration
			for b.Loop() {
				g := f
				g.Continue = tokens[rng.IntN(len(tokens))]
				t0 := time.Now()
				if _, err := s.ListSessions(context.Background(), g); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportLatency(b, lat)
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

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
}
