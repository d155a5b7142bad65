package cmd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// `audit` reads the log page by page up to --limit, passes the filters to the agent and
// prints a table (one line per event), wide with request ids, or the objects.
func TestAuditCommand(t *testing.T) {
	a := newFakeAgent(t)
	now := time.Now().UTC()
	for i := range 2500 {
		e := apiv1.AuditEvent{ID: int64(2500 - i), Time: now.Add(-time.Duration(i) * time.Minute), Actor: "alice@example.com",
			Action: "session.create", Target: fmt.Sprintf("s%04d", i), Outcome: "success", RequestID: fmt.Sprintf("req%d", i)}
		if i == 1 {
			e.Actor, e.Action, e.Target, e.Outcome, e.Detail = "bob@example.com", "session.delete", "s0000", "denied", "not the owner:\nask alice"
		}
		a.audit = append(a.audit, e)
	}
	f, _ := a.start()
	run := func(args ...string) (string, string, error) {
		t.Helper()
		streams, _, out, errOut := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(append([]string{"audit"}, args...))
		err := root.ExecuteContext(context.Background())
		return out.String(), errOut.String(), err
	}

	out, _, err := run()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 51 || !strings.HasPrefix(lines[0], "AGE ") || strings.Join(strings.Fields(lines[2])[1:], " ") != "bob@example.com session.delete s0000 denied not the owner: ask alice" {
		t.Errorf("default: %d lines:\n%s", len(lines), strings.Join(lines[:3], "\n"))
	}
	// --limit 0 reads every page (1000 at a time).
	a.auditQueries = nil
	if out, _, err = run("--limit", "0", "-o", "name"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "auditevent"); n != 2500 || len(a.auditQueries) != 3 {
		t.Errorf("--limit 0: %d events in %d requests", n, len(a.auditQueries))
	}
	// Filters go to the agent; wide shows the time and request id.
	a.auditQueries = nil
	if out, _, err = run("--target", "s0000", "-o", "wide"); err != nil {
		t.Fatal(err)
	}
	if len(a.auditQueries) != 1 || !strings.Contains(a.auditQueries[0], "target=s0000") ||
		!strings.Contains(out, "REQUEST ID") || !strings.Contains(out, "req0") || strings.Count(out, "\n") != 3 {
		t.Errorf("--target -o wide (%v):\n%s", a.auditQueries, out)
	}
	if out, _, err = run("--actor", "bob@example.com", "-o", "json"); err != nil || !strings.Contains(out, `"action": "session.delete"`) || strings.Contains(out, "session.create") {
		t.Errorf("--actor -o json: %v\n%s", err, out)
	}
	if _, errOut, err := run("--actor", "nobody"); err != nil || errOut != "No audit events found.\n" {
		t.Errorf("no events: %v %q", err, errOut)
	}
	if _, _, err := run("--limit", "-1"); err == nil || !strings.Contains(err.Error(), "--limit must be 0 (all) or more") {
		t.Errorf("--limit -1: %v", err)
	}
}
