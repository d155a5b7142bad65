package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestGitHubLink(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	run := func(script ...apiv1.GitHubLinkStatus) (string, string, []time.Duration, error) {
		a.mu.Lock()
		a.githubScript, a.githubPolls = script, 0
		a.mu.Unlock()
		streams, _, out, errOut := genericiooptions.NewTestIOStreams()
		var waits []time.Duration
		o := &GitHubLinkOptions{IOStreams: streams, Factory: f, sleep: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		}}
		err := o.Run(context.Background())
		return out.String(), errOut.String(), waits, err
	}

	// Pending, slowed down, then linked: the code on stderr, the interval followed.
	out, errOut, waits, err := run(
		apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkPending, Interval: 5},
		apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkPending, Interval: 10},
		apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkLinked, Message: "linked"},
	)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(errOut, "Open https://github.com/login/device and enter the code ABCD-1234 (it expires at ") {
		t.Errorf("stderr = %q", errOut)
	}
	if !strings.HasPrefix(out, "GitHub account linked") {
		t.Errorf("stdout = %q", out)
	}
	if want := []time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Second}; len(waits) != 3 || waits[0] != want[0] || waits[1] != want[1] || waits[2] != want[2] {
		t.Errorf("waits = %v, want %v", waits, want)
	}

	// A declined authorization is an error with the agent's words.
	_, _, _, err = run(apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkDenied, Message: "the authorization was declined at GitHub"})
	if err == nil || err.Error() != "link GitHub: denied: the authorization was declined at GitHub" {
		t.Errorf("denied: %v", err)
	}
}
