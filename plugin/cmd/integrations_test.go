package cmd

import (
	"context"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// `integrations` lists Slack and Linear as the agent reports them, and shows, sets and
// clears a Slack channel's and a Linear team's repository; a channel name, a bad team key
// or a bad URL is refused before anything is sent.
func TestIntegrationsCommand(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	run := func(args ...string) (string, error) {
		t.Helper()
		streams, _, out, _ := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(append([]string{"integrations"}, args...))
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}

	if _, err := run("list"); err == nil || !strings.Contains(err.Error(), "upgrade the chart") {
		t.Errorf("an agent before integrations: %v", err)
	}
	a.integrations = &apiv1.IntegrationList{Items: []apiv1.Integration{
		{Name: "slack", Enabled: true, Configured: true, Reachable: true, Detail: "bot @cake in\nworkspace Acme"},
		{Name: "linear", Detail: "off: set linear.enabled", Warning: "no team has a repository"},
	}}
	out, err := run("list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ENABLED CONFIGURED REACHABLE DETAIL" ||
		strings.Join(strings.Fields(lines[1]), " ") != "slack true true true bot @cake in workspace Acme" ||
		strings.Join(strings.Fields(lines[2]), " ") != "linear false false false off: set linear.enabled. no team has a repository" {
		t.Errorf("list: %v\n%s", err, out)
	}
	if out, err := run("list", "-o", "json"); err != nil || !strings.Contains(out, `"reachable": true`) {
		t.Errorf("list -o json: %v\n%s", err, out)
	}

	const repo = "https://github.com/org/repo"
	if out, err := run("slack-channel", "C0123ABCD"); err != nil || out != "Slack channel C0123ABCD: no repository (set one with --repo URL)\n" {
		t.Errorf("unset channel: %v %q", err, out)
	}
	if out, err := run("slack-channel", "C0123ABCD", "--repo", repo); err != nil || out != "Slack channel C0123ABCD: "+repo+"\n" || a.repos["slack/C0123ABCD"] != repo {
		t.Errorf("set channel: %v %q %v", err, out, a.repos)
	}
	if out, err := run("slack-channel", "C0123ABCD", "-o", "json"); err != nil || !strings.Contains(out, `"repo": "`+repo+`"`) {
		t.Errorf("channel -o json: %v %s", err, out)
	}
	if out, err := run("slack-channel", "C0123ABCD", "--clear"); err != nil || out != "Slack channel C0123ABCD: repository removed\n" || a.repos["slack/C0123ABCD"] != "" {
		t.Errorf("clear channel: %v %q", err, out)
	}
	if out, err := run("linear-team", "eng"); err != nil || out != "Linear team ENG: no repository (set one with --repo URL)\n" {
		t.Errorf("unset team: %v %q", err, out)
	}
	if out, err := run("linear-team", "eng", "--repo", repo); err != nil || out != "Linear team ENG: "+repo+"\n" {
		t.Errorf("set team: %v %q", err, out)
	}
	if out, err := run("linear-team", "ENG"); err != nil || out != "Linear team ENG: "+repo+"\n" {
		t.Errorf("get team: %v %q", err, out)
	}

	before := len(a.repos)
	for _, c := range []struct{ args []string }{
		{[]string{"slack-channel", "#general", "--repo", repo}},
		{[]string{"linear-team", "ENG-123", "--repo", repo}},
		{[]string{"linear-team", "ENG", "--repo", "file:///etc"}},
		{[]string{"linear-team", "ENG", "--repo", repo, "--clear"}},
		{[]string{"linear-team", "ENG", "-o", "table"}},
	} {
		if _, err := run(c.args...); err == nil {
			t.Errorf("%v: accepted", c.args)
		}
	}
	if _, err := run("slack-channel", "general"); err == nil || !strings.Contains(err.Error(), "not its name") {
		t.Errorf("a channel name: %v", err)
	}
	if len(a.repos) != before || a.repos["linear/ENG"] != repo {
		t.Errorf("a refused command changed the agent: %v", a.repos)
	}
	if _, err := run("nope"); err == nil || !strings.Contains(err.Error(), `unknown command "nope"`) {
		t.Errorf("unknown subcommand: %v", err)
	}
}
