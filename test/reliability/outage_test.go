package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// outageLength is how long each outage lasts.
const outageLength = 20 * time.Second

// phase tells the answers apart by when they were asked for.
type phase int

const (
	before phase = iota // the dependency is up
	during              // it is down: from the moment it stopped until it starts again
	after               // it is starting again or up
)

func (ph phase) String() string { return [...]string{"before", "during", "after"}[ph] }

// traffic is API load from a few concurrent clients: creates, gets and lists, with
// every answer checked and counted by phase.
type traffic struct {
	p     *product
	phase atomic.Int32
	// failDuring: nothing may succeed while the dependency is down (the database); with
	// the API server down, answers the agent can give from its caches may.
	failDuring bool
	// pause between one client's requests.
	pause time.Duration

	mu       sync.Mutex
	answers  map[phase]map[string]int // "POST 201", "GET 503", "error" (no answer)
	bad      []string                 // answers that break the scenario's rules
	acked    []string                 // sessions whose create was answered 2xx
	requests int
}

func newTraffic(p *product, pause time.Duration) *traffic {
	return &traffic{p: p, pause: pause, answers: map[phase]map[string]int{before: {}, during: {}, after: {}}}
}

func (tr *traffic) setPhase(ph phase) { tr.phase.Store(int32(ph)) }

// run sends requests from workers clients until ctx ends.
func (tr *traffic) run(ctx context.Context, workers int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				switch i % 3 {
				case 0:
					tr.do(ctx, http.MethodPost, "/api/v1/sessions", "", []byte(`{"title":"outage traffic"}`))
				case 1:
					tr.mu.Lock()
					var id string
					if n := len(tr.acked); n > 0 {
						id = tr.acked[(i/3)%n]
					}
					tr.mu.Unlock()
					if id != "" {
						tr.do(ctx, http.MethodGet, "/api/v1/sessions/"+id, "", nil)
					}
				case 2:
					tr.do(ctx, http.MethodGet, "/api/v1/sessions", "all=true&limit=20", nil)
				}
				select {
				case <-ctx.Done():
				case <-time.After(tr.pause):
				}
			}
		}()
	}
	return &wg
}

// do sends one request and checks its answer: 2xx, or 503 with Retry-After and the API's
// error shape (code Unavailable). A dependency outage never justifies a 500, a 4xx or a
// dropped connection; while it is down nothing succeeds that needs it. The request is
// not cut short when the traffic stops: a create's answer must be counted, since its
// session exists either way.
func (tr *traffic) do(_ context.Context, method, path, query string, body []byte) {
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ph := phase(tr.phase.Load())
	resp, out, err := tr.p.rawRequest(rctx, method, path, query, body, nil)
	if now := phase(tr.phase.Load()); now != ph && ph == during {
		// It straddled a change: count it with the phase whose rules are looser, the one
		// that is not the outage. An answer that came as the database returned may
		// succeed (during → after); so may one whose query finished just before the
		// database stopped (before → during: it stays "before").
		ph = now
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.requests++
	if err != nil {
		tr.answers[ph]["error"]++
		tr.bad = append(tr.bad, fmt.Sprintf("%s %s %s: no answer: %v", ph, method, path, err))
		return
	}
	tr.answers[ph][fmt.Sprintf("%s %d", method, resp.StatusCode)]++
	switch {
	case resp.StatusCode < 300:
		if method == http.MethodPost {
			var s apiv1.Session
			if json.Unmarshal(out, &s) != nil || s.ID == "" {
				tr.bad = append(tr.bad, fmt.Sprintf("%s: create answered %d without a session: %s", ph, resp.StatusCode, out))
				return
			}
			tr.acked = append(tr.acked, s.ID)
		}
	case resp.StatusCode == http.StatusServiceUnavailable:
		var e apiv1.Error
		if resp.Header.Get("Retry-After") == "" || json.Unmarshal(out, &e) != nil || e.Body.Code != apiv1.CodeUnavailable || e.Body.Message == "" {
			tr.bad = append(tr.bad, fmt.Sprintf("%s %s %s: 503 without Retry-After (%q) or the error shape: %s", ph, method, path, resp.Header.Get("Retry-After"), out))
		}
		return
	default:
		tr.bad = append(tr.bad, fmt.Sprintf("%s %s %s: %d %s", ph, method, path, resp.StatusCode, strings.TrimSpace(string(out))))
		return
	}
	if ph == during && tr.failDuring {
		tr.bad = append(tr.bad, fmt.Sprintf("during the outage %s %s answered %d", method, path, resp.StatusCode))
	}
}

// summary counts answers: total, 503s, and the 2xx of each phase.
func (tr *traffic) count(ph phase, pred func(method string, code int) bool) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for k, v := range tr.answers[ph] {
		var method string
		var code int
		if _, err := fmt.Sscanf(k, "%s %d", &method, &code); err == nil && pred(method, code) {
			n += v
		}
	}
	return n
}

// readiness probes /readyz every 200 ms and counts its answers by phase.
type readiness struct {
	mu     sync.Mutex
	counts map[phase]map[int]int
}

func probeReadiness(ctx context.Context, p *product, tr *traffic) (*readiness, *sync.WaitGroup) {
	r := &readiness{counts: map[phase]map[int]int{before: {}, during: {}, after: {}}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			ph := phase(tr.phase.Load())
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			code := 0
			if req, err := http.NewRequestWithContext(rctx, http.MethodGet, p.env.HTTPURL+"/readyz", nil); err == nil {
				if resp, err := http.DefaultClient.Do(req); err == nil {
					code = resp.StatusCode
					_ = resp.Body.Close()
				}
			}
			cancel()
			// A probe that straddled a phase change proves nothing about either phase (one
			// answered 200 from before the halt would count as "during"): it is not counted.
			if phase(tr.phase.Load()) == ph && ctx.Err() == nil {
				r.mu.Lock()
				r.counts[ph][code]++
				r.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return r, &wg
}

func (r *readiness) get(ph phase, code int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[ph][code]
}

func (r *readiness) others(ph phase, code int) map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[int]int{}
	for c, n := range r.counts[ph] {
		if c != code {
			out[c] = n
		}
	}
	return out
}

// waitReady waits until the agent's /readyz answers 200.
func (p *product) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rd, err := p.api.Readyz(rctx)
		cancel()
		if err == nil && rd.Ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz not ready after %s: %+v %v", timeout, rd, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDatabaseOutage stops the agent's Postgres for 20 s while clients create, read and
// list sessions. While it is down every API answer is a 503 with Retry-After and the
// API's JSON error, /readyz fails, nothing panics; once it is back the same agent
// process (never restarted) serves again, and every create it acknowledged is there.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	pg := testpg.NewServer(t)
	ctx := context.Background()
	dsn, err := testpg.CreateDatabase(ctx, pg.URL, "agents")
	if err != nil {
		t.Fatal(err)
	}
	p := install(t, c, "dbout", installOptions{databaseURL: dsn, values: []string{
		// Postgres installs must configure the auth secret (replicas share it).
		"betterAuth.secret.create=true", "betterAuth.secret.value=reliability-auth-secret-0123456789",
	}})
	pid := p.env.AgentPID()

	tctx, stop := context.WithCancel(ctx)
	tr := newTraffic(p, 50*time.Millisecond)
	tr.failDuring = true
	rd, rdDone := probeReadiness(tctx, p, tr)
	workers := tr.run(tctx, 3)
	time.Sleep(3 * time.Second)

	if err := pg.Halt(); err != nil {
		t.Fatal(err)
	}
	tr.setPhase(during)
	time.Sleep(outageLength)
	tr.setPhase(after)
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.waitReady(ctx, 2*time.Minute); err != nil {
		t.Errorf("after postgres came back: %v", err)
	}
	// Traffic goes on for a while against the recovered agent.
	time.Sleep(3 * time.Second)
	stop()
	workers.Wait()
	rdDone.Wait()

	if got := p.env.AgentPID(); got != pid {
		t.Errorf("the agent process changed (pid %d, then %d): it must ride out the outage", pid, got)
	}
	select {
	case <-p.env.AgentExited():
		t.Errorf("the agent exited")
	default:
	}

	// Every acknowledged create is there, Running with its pod: nothing written was lost
	// and the reconciler caught up.
	tr.mu.Lock()
	acked := append([]string(nil), tr.acked...)
	bad := append([]string(nil), tr.bad...)
	requests := tr.requests
	tr.mu.Unlock()
	lost := 0
	_, pr, err := p.converge(ctx, 2*time.Minute, func(w *world) error {
		lost = 0
		var missing []string
		for _, id := range acked {
			s, ok := w.rows[id]
			if !ok {
				lost++
				missing = append(missing, id)
			} else if s.State != apiv1.StateRunning {
				return fmt.Errorf("session %s is %s", id, s.State)
			}
		}
		if lost > 0 {
			return fmt.Errorf("acknowledged sessions missing: %v", missing)
		}
		return nil
	})
	if err != nil || !pr.none() {
		t.Errorf("after the outage: %v %s", err, pr)
	}

	unavailable := tr.count(during, func(_ string, code int) bool { return code == http.StatusServiceUnavailable })
	duringTotal := tr.count(during, func(string, int) bool { return true })
	afterOK := tr.count(after, func(_ string, code int) bool { return code < 300 })
	readyFailed, readyOthers := rd.get(during, http.StatusServiceUnavailable), rd.others(during, http.StatusServiceUnavailable)
	panics := p.panics()
	line, ferr := figures.Record("reliability", "database outage",
		"Postgres stopped %s under traffic (%d requests): %d of %d answers meanwhile 503 with Retry-After, %d other errors; /readyz failed %d of %d probes; recovered without a restart (%d answers 2xx after); %d acknowledged creates, %d lost; %d panics",
		outageLength, requests, unavailable, duringTotal, len(bad), readyFailed, readyFailed+sum(readyOthers), afterOK, len(acked), lost, panics)
	t.Log(line)
	if ferr != nil {
		t.Errorf("record figure: %v", ferr)
	}
	tr.mu.Lock()
	t.Logf("answers by phase: %v", tr.answers)
	tr.mu.Unlock()
	for _, b := range firstN(bad, 20) {
		t.Errorf("bad answer: %s", b)
	}
	if duringTotal == 0 || unavailable != duringTotal {
		t.Errorf("during the outage %d of %d answers were 503", unavailable, duringTotal)
	}
	if len(readyOthers) > 0 || readyFailed == 0 {
		t.Errorf("/readyz during the outage: %d times 503, others %v; want 503 every time", readyFailed, readyOthers)
	}
	if afterOK == 0 {
		t.Errorf("no request succeeded after postgres came back")
	}
	if panics > 0 {
		t.Errorf("%d panics in the agent's log", panics)
	}
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func firstN(l []string, n int) []string {
	sort.Strings(l)
	if len(l) > n {
		return l[:n]
	}
	return l
}
