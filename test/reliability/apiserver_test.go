package reliability

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestAPIServerOutage stops kube-apiserver for 20 s (etcd and the rest of the cluster
// keep running) while clients use the agent, and sends create, stop, start and delete
// calls right after it went: the agent accepts what it can decide without the API
// server (its authorization answers are cached for a few seconds) and records the
// intent. Once the API server is back, the reconciler must bring every session to what
// was asked — Running sessions with their pod, Stopped ones without, deleted ones gone
// with everything they had — without anyone touching anything.
func TestAPIServerOutage(t *testing.T) {
	t.Parallel()
	build(t)
	ctx := context.Background()
	// A cluster of its own: the shared one serves other tests meanwhile.
	began := time.Now()
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(t.TempDir(), "cluster")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a cluster of its own started in %s", time.Since(began).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop the cluster: %v", err)
		}
	})
	p := install(t, c, "apiout", installOptions{})
	running, stopped := p.prepare(ctx, t, 6, 4, false)
	want := map[string]apiv1.SessionState{}
	for _, id := range running {
		want[id] = apiv1.StateRunning
	}
	for _, id := range stopped {
		want[id] = apiv1.StateStopped
	}
	pid := p.env.AgentPID()

	tctx, stopTraffic := context.WithCancel(ctx)
	tr := newTraffic(p, 200*time.Millisecond)
	rd, rdDone := probeReadiness(tctx, p, tr)
	workers := tr.run(tctx, 2)
	time.Sleep(2 * time.Second)

	// whoami asks for every verb: their answers are cached when the outage begins.
	if _, err := p.api.WhoAmI(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	tr.setPhase(during)

	// The calls, all at once while the agent still admits them.
	type op struct {
		call, id string
		want     apiv1.SessionState // "" = deleted
	}
	ops := []op{
		{"create", "", apiv1.StateRunning}, {"create", "", apiv1.StateRunning}, {"create", "", apiv1.StateRunning},
		{"stop", running[0], apiv1.StateStopped}, {"stop", running[1], apiv1.StateStopped},
		{"start", stopped[0], apiv1.StateRunning}, {"start", stopped[1], apiv1.StateRunning},
		{"delete", running[2], ""}, {"delete", stopped[2], ""},
	}
	accepted := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, o := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created, err := p.call(ctx, o.call, o.id, false)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted[o.call]++
				id := o.id
				if o.call == "create" {
					id = created
				}
				if o.want == "" {
					delete(want, id)
				} else {
					want[id] = o.want
				}
			case httpStatus(err) == http.StatusServiceUnavailable:
				// Refused, nothing recorded: the session keeps its state.
			default:
				t.Errorf("%s %s during the outage: %v", o.call, o.id, err)
			}
		}()
	}
	wg.Wait()

	time.Sleep(outageLength - time.Since(down))
	tr.setPhase(after)
	back := time.Now()
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver back in %s", time.Since(back).Round(100*time.Millisecond))
	if err := p.waitReady(ctx, 2*time.Minute); err != nil {
		t.Errorf("after the API server came back: %v", err)
	}
	t.Logf("the agent ready again %s after the API server was started", time.Since(back).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second)
	stopTraffic()
	workers.Wait()
	rdDone.Wait()

	tr.mu.Lock()
	for _, id := range tr.acked {
		want[id] = apiv1.StateRunning
	}
	bad := append([]string(nil), tr.bad...)
	requests := tr.requests
	tr.mu.Unlock()
	if got := p.env.AgentPID(); got != pid {
		t.Errorf("the agent process changed (pid %d, then %d): it must ride out the outage", pid, got)
	}

	// No manual action: the reconciler alone converges everything.
	w, pr, err := p.converge(ctx, 3*time.Minute, func(w *world) error { return expect(w, want, false) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sessions checked %s after the API server was started", len(w.rows), time.Since(back).Round(100*time.Millisecond))
	if derr := expect(w, want, false); derr != nil && pr.none() {
		pr.stuck = append(pr.stuck, derr.Error())
	}
	var runningN, stoppedN int
	for _, st := range want {
		if st == apiv1.StateRunning {
			runningN++
		} else {
			stoppedN++
		}
	}
	unavailable := tr.count(during, func(_ string, code int) bool { return code == http.StatusServiceUnavailable })
	duringTotal := tr.count(during, func(string, int) bool { return true })
	readyFailed, readyOthers := rd.get(during, http.StatusServiceUnavailable), rd.others(during, http.StatusServiceUnavailable)
	panics := p.panics()
	line, ferr := figures.Record("reliability", "API server outage",
		"kube-apiserver stopped %s under traffic (%d requests; meanwhile %d of %d answered 503 with Retry-After, the rest from cache; %d other errors); %d calls accepted meanwhile (%d creates, %d stops, %d starts, %d deletes); afterwards %d sessions converged without manual action (%d Running, %d Stopped, %d deleted): %d stuck, %d orphans, %d duplicate pods; /readyz failed %d of %d probes; %d panics",
		outageLength, requests, unavailable, duringTotal, len(bad), accepted["create"]+accepted["stop"]+accepted["start"]+accepted["delete"],
		accepted["create"], accepted["stop"], accepted["start"], accepted["delete"], len(want), runningN, stoppedN, accepted["delete"],
		len(pr.stuck)+len(pr.broken), len(pr.orphans), len(pr.duplicates), readyFailed, readyFailed+sum(readyOthers), panics)
	t.Log(line)
	if ferr != nil {
		t.Errorf("record figure: %v", ferr)
	}
	if !pr.none() {
		t.Errorf("not converged after the outage: %s", pr)
	}
	for _, b := range firstN(bad, 20) {
		t.Errorf("bad answer: %s", b)
	}
	for _, call := range []string{"create", "stop", "start", "delete"} {
		if accepted[call] == 0 {
			t.Errorf("no %s was accepted during the outage: the scenario tested nothing for it", call)
		}
	}
	if len(readyOthers) > 0 || readyFailed == 0 {
		t.Errorf("/readyz during the outage: %d times 503, others %v; want 503 every time", readyFailed, readyOthers)
	}
	if panics > 0 {
		t.Errorf("%d panics in the agent's log", panics)
	}
}
