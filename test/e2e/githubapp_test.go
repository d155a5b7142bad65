package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// e2eAppID is the GitHub App the chart is installed with; the fake GitHub has it
// installed on the organisation acme.
const e2eAppID = 4242

// testGitHubApp: with the chart's GitHub App (id and private key Secret), a session on a
// private repository of the GitHub host, whose owner linked nothing, clones it and pushes
// to it with an installation token the agent got by signing a JWT with the App's key
// (the fake checks it against the App's public key) and looking the installation up by
// the repository's owner; the git server asks the fake GitHub whether the token may
// reach the repository. The token is limited to that repository and never in the pod
// spec.
func (p *product) testGitHubApp(t *testing.T) {
	repo, bare := p.gitHub.addAppRepo(t, "acme", "widgets")
	before := len(p.github.Issued())
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", repo, "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	issued := p.github.Issued()
	if len(issued) != before+1 {
		t.Fatalf("the App issued %d tokens for the session, want 1", len(issued)-before)
	}
	tok := issued[len(issued)-1]
	if len(tok.Repositories) != 1 || tok.Repositories[0] != "widgets" {
		t.Errorf("the session's token reaches %v, want only widgets", tok.Repositories)
	}
	pods, err := p.kube.CoreV1().Pods(p.ns).List(context.Background(), podOf(id))
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("session pod of %s: %v (%d)", id, err, len(pods.Items))
	}
	pod := pods.Items[0]
	if spec := pod.Spec.String(); strings.Contains(spec, tok.Token) {
		t.Error("the App token is in the pod spec")
	}
	var out []byte
	eventually(t, time.Minute, "the checkout cloned with the App token", func() error {
		out, err = p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, "git", "log", "-1", "--format=%s")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	for _, args := range [][]string{
		{"git", "-c", "user.name=session", "-c", "user.email=session@example.com", "commit", "-q", "--allow-empty", "-m", "from the App's session"},
		{"git", "push", "-q", "origin", "HEAD:refs/heads/cake/app-work"},
	} {
		if out, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, args...); err != nil {
			t.Fatalf("%s in the session: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	got, err := exec.Command("git", "--git-dir", bare, "log", "-1", "--format=%s", "cake/app-work").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "from the App's session" {
		t.Fatalf("the push did not land: %q %v", got, err)
	}
	sec, err := p.kube.CoreV1().Secrets(pod.Namespace).Get(context.Background(), "cake-session-"+id, metav1.GetOptions{})
	if err != nil || !strings.Contains(string(sec.Data["git-credentials"]), tok.Token) {
		t.Fatalf("the session's Secret does not hold the App token: %v", err)
	}
	// The pull request the agent opens from its branch shows on the session.
	pr := p.github.OpenPullRequest("acme", "widgets", "cake/app-work")
	if _, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, "git", "checkout", "-q", "-b", "cake/app-work"); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(p.agents(t, p.alice, "session", "get", id, "-o", "jsonpath={.currentBranch} {.pullRequestURL}")); got != "cake/app-work "+pr {
		t.Errorf("session get shows %q, want the branch and %s", got, pr)
	}
	p.agents(t, p.alice, "session", "stop", id)
	p.waitState(t, p.alice, id, apiv1.StateStopped)
}
