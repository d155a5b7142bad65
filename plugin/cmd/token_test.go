package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// runRoot runs the whole command tree against the fake agent.
func runRoot(t *testing.T, f *Factory, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestTokenCreate(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()

	// The secret alone on standard output, so `> token.txt` keeps just it; the rest on
	// standard error.
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	o := &TokenCreateOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), Name: " laptop "}
	o.PrintFlags.now = func() time.Time { return a.now }
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "cka_secret_tok1\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := errOut.String(), `Created token.agents.cake.ai/tok1 "laptop", expiring 2026-12-31T12:00:00Z (in 30d). This is the only time it is shown:`+"\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	if req := a.tokenRequests[0]; req.Name != "laptop" || req.ExpiresIn != nil {
		t.Errorf("request = %+v, want name laptop and the agent's default lifetime", req)
	}

	out2, _, err := runRoot(t, f, "token", "create", "ci", "--expires-in", "168h", "-o", "jsonpath={.metadata.name} {.token} {.expiresAt}")
	if err != nil {
		t.Fatal(err)
	}
	if want := "tok2 cka_secret_tok2 2026-12-08T12:00:00Z"; out2 != want {
		t.Errorf("-o jsonpath = %q, want %q", out2, want)
	}
	if req := a.tokenRequests[1]; req.ExpiresIn == nil || req.ExpiresIn.Duration != 168*time.Hour {
		t.Errorf("request = %+v, want expiresIn 168h", req)
	}

	// The agent's limit comes back with the agent's words.
	_, _, err = runRoot(t, f, "token", "create", "forever", "--expires-in", "8760h")
	if err == nil || !strings.Contains(err.Error(), "8760h0m0s is longer than this agent's maximum token lifetime of 2160h0m0s (--token-max-ttl, chart value tokens.maxTTL)") {
		t.Errorf("above the maximum: err = %v", err)
	}
	for args, want := range map[string]string{
		"token create":                          "accepts 1 arg(s), received 0",
		"token create x --expires-in -1h":       "--expires-in -1h0m0s is negative: every token expires",
		"token create x --expires-in 10s":       "--expires-in 10s is shorter than the minimum of 1m",
		"token create x -o bogus":               "--output",
		"token revoke":                          "name the tokens to revoke",
		"token revoke tok1 --all-of me":         "not both",
		"token bogus":                           `unknown command "bogus" for "kubectl agents token"`,
		"token list --owner bob@example.com":    "the tokens of another user (bob@example.com) are for admins",
		"token revoke --all-of bob@example.com": "revoke the tokens of bob@example.com: the tokens of another user (bob@example.com) are for admins",
	} {
		if _, _, err := runRoot(t, f, strings.Fields(args)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to contain %q", args, err, want)
		}
	}
	if n := len(a.tokenRequests); n != 3 {
		t.Errorf("%d create requests reached the agent, want 3 (invalid flags are caught first)", n)
	}
}

func TestTokenListAndRevoke(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	used := a.now.Add(-5 * time.Minute)
	for i, name := range []string{"laptop", "ci"} {
		exp := a.now.Add(time.Duration(i+1) * 24 * time.Hour)
		a.tokens["tok"+name] = apiv1.Token{ID: "tok" + name, Name: name, OwnerID: "u-1", Owner: "alice@example.com",
			CreatedAt: a.now.Add(-time.Hour), ExpiresAt: &exp}
	}
	old := a.now.Add(-time.Minute)
	a.tokens["tokold"] = apiv1.Token{ID: "tokold", Name: "old", OwnerID: "u-1", Owner: "alice@example.com", CreatedAt: a.now.Add(-40 * 24 * time.Hour), ExpiresAt: &old, LastUsedAt: &used}

	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &TokenListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	o.PrintFlags.now = func() time.Time { return a.now }
	wide := "wide"
	o.PrintFlags.OutputFormat = &wide
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `ID          NAME     EXPIRES           LAST USED   AGE   OWNER               OWNER ID
tokci       ci       in 2d             <never>     60m   alice@example.com   u-1
toklaptop   laptop   in 24h            <never>     60m   alice@example.com   u-1
tokold      old      expired 60s ago   5m ago      40d   alice@example.com   u-1
`
	if out.String() != want {
		t.Errorf("token list -o wide:\n%s\nwant:\n%s", out, want)
	}

	got, _, err := runRoot(t, f, "token", "list", "-o", "name", "--owner", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want := "token.agents.cake.ai/tokci\ntoken.agents.cake.ai/toklaptop\ntoken.agents.cake.ai/tokold\n"; got != want {
		t.Errorf("token list -o name = %q, want %q", got, want)
	}
	got, _, err = runRoot(t, f, "token", "list", "-o", "jsonpath={.kind} {.items[*].name}")
	if err != nil {
		t.Fatal(err)
	}
	if want := "TokenList ci laptop old"; got != want {
		t.Errorf("token list -o jsonpath = %q, want %q", got, want)
	}

	got, _, err = runRoot(t, f, "token", "revoke", "toklaptop", "nosuch")
	if err == nil || !strings.Contains(err.Error(), `token "nosuch" not found among yours`) {
		t.Errorf("revoke of an unknown token: err = %v", err)
	}
	if want := "token.agents.cake.ai/toklaptop revoked\n"; got != want {
		t.Errorf("revoke = %q, want %q", got, want)
	}
	got, _, err = runRoot(t, f, "token", "revoke", "--all-of", "me")
	if err != nil {
		t.Fatal(err)
	}
	if want := "2 token(s) revoked of kubernetes user alice\n"; got != want {
		t.Errorf("revoke --all-of me = %q, want %q", got, want)
	}
	_, errOut, err := runRoot(t, f, "token", "list")
	if err != nil || errOut != "No tokens found.\n" {
		t.Errorf("list after revoking all: %q %v", errOut, err)
	}
	if want := []string{"list ", "list alice@example.com", "list ", "revoke me", "list "}; strings.Join(a.tokenQueries, "|") != strings.Join(want, "|") {
		t.Errorf("?user= sent: %q, want %q", a.tokenQueries, want)
	}
}
