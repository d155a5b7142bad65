package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testSessionBranch: `session get` shows the branch the session's workspace is on, read
// through the agent's tunnel from the session's real OpenCode as it is now: after the
// agent in the session checks out a branch of its own, that branch; after the session
// stops, still the one last seen.
func (p *product) testSessionBranch(t *testing.T) {
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	pods, err := p.kube.CoreV1().Pods(p.ns).List(context.Background(), podOf(id))
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("session pod of %s: %v (%d)", id, err, len(pods.Items))
	}
	pod := pods.Items[0]
	exec := func(args ...string) error {
		out, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, args...)
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	eventually(t, time.Minute, "the checkout", func() error { return exec("git", "rev-parse", "HEAD") })
	branch := func() string {
		return strings.TrimSpace(p.agents(t, p.alice, "session", "get", id, "-o", "jsonpath={.currentBranch}"))
	}
	if got := branch(); got != "main" {
		t.Fatalf("currentBranch of a fresh clone = %q, want main", got)
	}
	if err := exec("git", "checkout", "-q", "-b", "cake/e2e-work"); err != nil {
		t.Fatal(err)
	}
	if got := branch(); got != "cake/e2e-work" {
		t.Fatalf("currentBranch after the checkout = %q, want cake/e2e-work", got)
	}
	p.agents(t, p.alice, "session", "stop", id)
	p.waitState(t, p.alice, id, apiv1.StateStopped)
	if wide := p.agents(t, p.alice, "session", "get", id, "-o", "wide"); !strings.Contains(wide, "cake/e2e-work") {
		t.Fatalf("session get -o wide of the stopped session does not show its last branch:\n%s", wide)
	}
}
