package reliability

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/failpoint"
	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// crashStep is one failpoint of the agent (see the failpoint.Hit calls in agent/sessions
// and agent/server) and the API call that reaches it.
type crashStep struct {
	op, step string
	// call is the API operation that leads there (reconcile.observed is reached by a
	// start, when the reconciler first records what the new pod does).
	call string
	// persistent: only a persistent session has this step.
	persistent bool
}

// crashSteps are every step of create, stop, start and delete after which the database
// or the cluster has changed, and the answer to the caller.
var crashSteps = []crashStep{
	{op: "create", step: "stored", call: "create"},
	{op: "create", step: "secret", call: "create"},
	{op: "create", step: "pvc", call: "create", persistent: true},
	{op: "create", step: "pod", call: "create"},
	{op: "create", step: "respond", call: "create"},
	{op: "stop", step: "marked", call: "stop"},
	{op: "stop", step: "pod-deleted", call: "stop"},
	{op: "stop", step: "stopped", call: "stop"},
	{op: "stop", step: "respond", call: "stop"},
	{op: "start", step: "marked", call: "start"},
	{op: "start", step: "secret", call: "start"},
	{op: "start", step: "pvc", call: "start", persistent: true},
	{op: "start", step: "pod", call: "start"},
	{op: "reconcile", step: "observed", call: "start"},
	{op: "start", step: "respond", call: "start"},
	{op: "delete", step: "marked", call: "delete"},
	{op: "delete", step: "pod-deleted", call: "delete"},
	{op: "delete", step: "secret-deleted", call: "delete"},
	{op: "delete", step: "pvc-deleted", call: "delete", persistent: true},
	{op: "delete", step: "row-deleted", call: "delete"},
	{op: "delete", step: "respond", call: "delete"},
}

// TestReleaseBuildHasNoFailpoints: the agent as released carries no failpoint code at all
// (no crash function, not even the variable's name), and the test build does — so the
// crash scenario tests a build with failpoints, and users never run one.
func TestReleaseBuildHasNoFailpoints(t *testing.T) {
	t.Parallel()
	build(t)
	for _, b := range []struct {
		path string
		want bool
	}{{bins.agent, false}, {bins.crashAgent, true}} {
		bin, err := os.ReadFile(b.path)
		if err != nil {
			t.Fatal(err)
		}
		syms, err := exec.Command("go", "tool", "nm", b.path).Output()
		if err != nil {
			t.Fatalf("go tool nm %s: %v", b.path, err)
		}
		hasSym := bytes.Contains(syms, []byte("internal/failpoint.crash"))
		hasVar := bytes.Contains(bin, []byte(failpoint.EnvVar))
		if hasSym != b.want || hasVar != b.want {
			t.Errorf("%s: crash function %v, %s in the binary %v; want %v for both", b.path, hasSym, failpoint.EnvVar, hasVar, b.want)
		}
	}
}

// TestCrashAtEveryStep kills the agent with SIGKILL at each step of create, stop, start
// and delete, three rounds (persistent sessions, ephemeral ones, persistent again; the
// second round deletes stopped sessions rather than running ones), restarts it and lets
// it reconcile. After every crash the installation must converge: every session Running
// with exactly one pod or Stopped with none, the operation's intent carried out once it
// was recorded, no object without its session, no session lost.
func TestCrashAtEveryStep(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	p := install(t, c, "crash", installOptions{crash: true})
	bindVolumes(t, p)
	ctx := context.Background()

	// known holds every session the test knows of and its expected state.
	known := map[string]apiv1.SessionState{}
	var crashes, lost, stuck, orphans, duplicates int
	var failures []string
	ops := map[string]int{}

	for round := 0; round < 3; round++ {
		persistent := round != 1
		deleteStopped := round == 1
		var steps []crashStep
		for _, s := range crashSteps {
			if persistent || !s.persistent {
				steps = append(steps, s)
			}
		}
		// Targets first, with the agent running normally: Running sessions for stop (and
		// delete), Stopped ones for start (and delete in the second round).
		var needRunning, needStopped int
		for _, s := range steps {
			switch {
			case s.call == "stop", s.call == "delete" && !deleteStopped:
				needRunning++
			case s.call == "start", s.call == "delete" && deleteStopped:
				needStopped++
			}
		}
		running, stopped := p.prepare(ctx, t, needRunning, needStopped, persistent)
		for _, id := range running {
			known[id] = apiv1.StateRunning
		}
		for _, id := range stopped {
			known[id] = apiv1.StateStopped
		}

		arm := func(s crashStep) (target, name string) {
			switch {
			case s.call == "create":
				return "", failpoint.Name(s.op, s.step, "")
			case s.call == "stop", s.call == "delete" && !deleteStopped:
				target, running = running[0], running[1:]
			default:
				target, stopped = stopped[0], stopped[1:]
			}
			return target, failpoint.Name(s.op, s.step, target)
		}
		p.env.StopAgent(false)
		target, armed := arm(steps[0])
		if err := p.env.StartAgentEnv(ctx, failpoint.EnvVar+"="+armed); err != nil {
			t.Fatalf("start the agent armed with %s: %v", armed, err)
		}
		for i, s := range steps {
			began := time.Now()
			before := p.log()
			exited := p.env.AgentExited()
			created, err := p.call(ctx, s.call, target, persistent)
			if err == nil && created != "" {
				known[created] = apiv1.StateRunning
			}
			if err != nil && !noAnswer(err) {
				t.Fatalf("%s (armed %s): %v", s.call, armed, err)
			}
			select {
			case <-exited:
			case <-time.After(2 * time.Minute):
				t.Fatalf("the agent did not crash at %s within 2 minutes of the %s call", armed, s.call)
			}
			if !strings.Contains(strings.TrimPrefix(p.log(), before), failpoint.Marker+armed+"\n") {
				t.Fatalf("the agent died, but not at failpoint %s:\n%s", armed, p.logTail(40))
			}
			p.env.StopAgent(true) // it is dead already: this only forgets the process
			crashes++
			ops[s.call]++

			// Restart, armed with the next step when there is one (each step fires only for
			// its own target, so reconciling this crash cannot set it off).
			done, doneTarget, doneStep := target, target, s
			var env []string
			if i+1 < len(steps) {
				target, armed = arm(steps[i+1])
				env = append(env, failpoint.EnvVar+"="+armed)
			}
			crashed := time.Now()
			if err := p.env.StartAgentEnv(ctx, env...); err != nil {
				t.Fatalf("restart after the crash at %s: %v\n%s", failpoint.Name(doneStep.op, doneStep.step, done), err, p.logTail(40))
			}
			restarted := time.Now()

			// The intent of the call was recorded before every failpoint, so it must be
			// carried out: a new session Running, a stopped one Stopped, a started one
			// Running, a deleted one gone. Every other known session keeps its state.
			want := map[string]apiv1.SessionState{}
			for id, st := range known {
				want[id] = st
			}
			switch doneStep.call {
			case "stop":
				want[doneTarget] = apiv1.StateStopped
			case "start":
				want[doneTarget] = apiv1.StateRunning
			case "delete":
				delete(want, doneTarget)
			}
			w, pr, err := p.converge(ctx, 90*time.Second, func(w *world) error {
				return expect(w, want, doneStep.call == "create")
			})
			if err != nil {
				t.Fatalf("after the crash at %s: %v", doneStep.op+"."+doneStep.step, err)
			}
			t.Logf("crash %d at %s.%s: call to crash %s, restart %s, converged %s later", crashes, doneStep.op, doneStep.step,
				crashed.Sub(began).Round(time.Millisecond), restarted.Sub(crashed).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
			if !pr.none() {
				failures = append(failures, fmt.Sprintf("crash at %s.%s: %s", doneStep.op, doneStep.step, pr))
				stuck += len(pr.stuck)
				orphans += len(pr.orphans)
				duplicates += len(pr.duplicates)
			}
			// What is there now is what the next crash starts from.
			for id := range known {
				if _, ok := w.rows[id]; !ok && want[id] != "" {
					lost++
					failures = append(failures, fmt.Sprintf("crash at %s.%s: session %s lost", doneStep.op, doneStep.step, id))
				}
			}
			known = map[string]apiv1.SessionState{}
			for id, s := range w.rows {
				known[id] = s.State
			}
		}
	}

	line, err := figures.Record("reliability", "crash at every step",
		"%d crashes (SIGKILL) over create/stop/start/delete (%d, %d, %d, %d), %d steps: %d orphans, %d lost, %d stuck, %d duplicate pods",
		crashes, ops["create"], ops["stop"], ops["start"], ops["delete"], len(crashSteps), orphans, lost, stuck, duplicates)
	t.Log(line)
	if err != nil {
		t.Errorf("record figure: %v", err)
	}
	if crashes < 50 {
		t.Errorf("only %d crashes; the scenario promises at least 50", crashes)
	}
	for _, f := range failures {
		t.Error(f)
	}
}

// expect checks the rows against want: every wanted session there in its state, nothing
// else — except, after a create, exactly one new Running session (the one being created,
// whose id the crash kept from the caller).
func expect(w *world, want map[string]apiv1.SessionState, created bool) error {
	var extra []string
	for id, s := range w.rows {
		st, ok := want[id]
		switch {
		case !ok:
			extra = append(extra, id)
		case s.State != st:
			return fmt.Errorf("session %s is %s, want %s", id, s.State, st)
		}
	}
	for id, st := range want {
		if _, ok := w.rows[id]; !ok {
			return fmt.Errorf("session %s (%s) is gone", id, st)
		}
	}
	switch {
	case created && len(extra) == 1 && w.rows[extra[0]].State == apiv1.StateRunning:
		return nil
	case created:
		return fmt.Errorf("after a create: %d new sessions %v, want one Running", len(extra), extra)
	case len(extra) > 0:
		return fmt.Errorf("sessions nobody created: %v", extra)
	}
	return nil
}

// call makes the API call of a step; for a create it returns the new session's id when
// the answer came.
func (p *product) call(ctx context.Context, call, id string, persistent bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var err error
	switch call {
	case "create":
		var s *apiv1.Session
		s, err = p.api.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "crash test", Persistent: persistent})
		if err == nil {
			return s.ID, nil
		}
	case "stop":
		_, err = p.api.StopSession(ctx, id)
	case "start":
		_, err = p.api.StartSession(ctx, id)
	case "delete":
		_, err = p.api.DeleteSession(ctx, id)
	default:
		return "", fmt.Errorf("unknown call %q", call)
	}
	return "", err
}

// prepare creates running+stopped sessions, stops the latter, and waits until all are
// where they should be.
func (p *product) prepare(ctx context.Context, t *testing.T, running, stopped int, persistent bool) (runIDs, stopIDs []string) {
	t.Helper()
	began := time.Now()
	defer func() {
		t.Logf("%d running and %d stopped target sessions ready in %s", running, stopped, time.Since(began).Round(100*time.Millisecond))
	}()
	ids := make([]string, running+stopped)
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.api.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "crash target", Persistent: persistent})
			if err != nil {
				errs <- err
				return
			}
			ids[i] = s.ID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create a target session: %v", err)
	}
	runIDs, stopIDs = ids[:running], ids[running:]
	inState := func(st apiv1.SessionState, ids []string) func(*world) error {
		return func(w *world) error {
			for _, id := range ids {
				if s := w.rows[id]; s.State != st {
					return fmt.Errorf("session %s is %s, not yet %s", id, s.State, st)
				}
			}
			return nil
		}
	}
	if _, pr, err := p.converge(ctx, 2*time.Minute, inState(apiv1.StateRunning, ids)); err != nil || !pr.none() {
		t.Fatalf("target sessions did not start: %v %s", err, pr)
	}
	for _, id := range stopIDs {
		if _, err := p.api.StopSession(ctx, id); err != nil {
			t.Fatalf("stop target %s: %v", id, err)
		}
	}
	if _, pr, err := p.converge(ctx, 2*time.Minute, inState(apiv1.StateStopped, stopIDs)); err != nil || !pr.none() {
		t.Fatalf("target sessions did not stop: %v %s", err, pr)
	}
	return runIDs, stopIDs
}
