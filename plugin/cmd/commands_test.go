package cmd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/pkg/version"
	"github.com/cakeai/cake-agents/plugin/config"
	"github.com/cakeai/cake-agents/plugin/tunnel"
)

func TestWhoAmI(t *testing.T) {
	f, _ := newFakeAgent(t).start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &WhoAmIOptions{IOStreams: streams, Factory: f}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `User:               alice@example.com
User ID:            u-1
Authenticated by:   kubernetes
Username:           alice
Groups:             dev, system:authenticated
Admin:              false
Permissions on sessions.agents.cake.ai:
  attach            yes
  create            yes
  delete            yes
  get               yes
  list              yes
  update            yes
`
	if out.String() != want {
		t.Errorf("whoami:\n%s\nwant:\n%s", out.String(), want)
	}
}

func withVersion(t *testing.T, v string) {
	old := version.Version
	version.Version = v
	t.Cleanup(func() { version.Version = old })
}

func TestVersion(t *testing.T) {
	withVersion(t, "v0.1.0")
	a := newFakeAgent(t)
	f, _ := a.start()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	f.ErrOut = errOut

	o := &VersionOptions{IOStreams: streams, Factory: f, ClientOnly: true}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "Client Version: " + version.Get().String() + "\n"; out.String() != want {
		t.Errorf("--client = %q, want %q", out.String(), want)
	}

	out.Reset()
	o.ClientOnly = false
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "Client Version: " + version.Get().String() + "\nAgent Version: v0.3.1 (commit abc1234, built 2026-11-01T00:00:00Z, go1.26.8, linux/amd64)\n"
	if out.String() != want {
		t.Errorf("version = %q, want %q", out.String(), want)
	}
	if want := "WARNING: kubectl-agents v0.1.0 is too old for the agent v0.3.1 (it supports plugins 0.2 to 0.4): upgrade the plugin with `kubectl krew upgrade agents`\n"; errOut.String() != want {
		t.Errorf("skew warning = %q, want %q", errOut.String(), want)
	}

	errOut.Reset()
	a.version.Version = "v0.2.5"
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if errOut.String() != "" {
		t.Errorf("warned within one minor version: %q", errOut.String())
	}
}

// ssarReactor answers every SelfSubjectAccessReview, denying the ones deny matches.
func ssarReactor(deny func(authorizationv1.ResourceAttributes) bool) k8stesting.ReactionFunc {
	return func(action k8stesting.Action) (bool, runtime.Object, error) {
		r := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		r.Status.Allowed = !deny(*r.Spec.ResourceAttributes)
		return true, r, nil
	}
}

func TestDoctor(t *testing.T) {
	withVersion(t, "v0.3.0")
	a := newFakeAgent(t)
	f, _ := a.start()
	kube := fake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", ssarReactor(func(authorizationv1.ResourceAttributes) bool { return false }))
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &DoctorOptions{IOStreams: streams, Factory: f, Kube: kube}
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	url := f.Client.BaseURL().String()
	want := `[ok]   agent reachable: injected client ` + url + `
[ok]   versions: plugin v0.3.0, agent v0.3.1
[ok]   agent readiness kube: ok
[ok]   agent readiness store: ok
[ok]   identity: alice@example.com (alice, authenticated by kubernetes)
[ok]   driving sessions: your own, and other users' public ones (RBAC grants you attach)
[ok]   RBAC: get sessions.agents.cake.ai; list sessions.agents.cake.ai; create sessions.agents.cake.ai; delete sessions.agents.cake.ai; attach sessions.agents.cake.ai; list pods in cake-agents; create pods/portforward in cake-agents; get configmaps in cake-agents
[ok]   forged identity headers are refused (X-Auth-Request-Email: 401)
`
	if out.String() != want {
		t.Errorf("doctor:\n%s\nwant:\n%s", out.String(), want)
	}

	// A broken setup: the agent trusts forged headers, the database is down, the user
	// may not port-forward.
	a.trustHeaders = true
	a.ready = apiv1.Readiness{Ready: false, Checks: map[string]string{"store": "dial tcp: connection refused", "kube": "ok"}}
	kube = fake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", ssarReactor(func(r authorizationv1.ResourceAttributes) bool {
		return r.Subresource == "portforward"
	}))
	out.Reset()
	o = &DoctorOptions{IOStreams: streams, Factory: f, Kube: kube}
	err := o.Run(context.Background())
	if err == nil || err.Error() != "3 check(s) failed" {
		t.Errorf("err = %v", err)
	}
	for _, line := range []string{
		"[FAIL] agent readiness store: dial tcp: connection refused\n",
		"[FAIL] RBAC: you may not create pods/portforward in cake-agents; ask for the chart's cake-agents-user ClusterRole\n",
		"[FAIL] forged identity headers are TRUSTED: the agent took X-Auth-Request-Email from a port-forward",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("doctor output misses %q:\n%s", line, out.String())
		}
	}
}

// TestDoctorReportsIntegrations: an integration that is off is said to be, one that is
// enabled and reaches its service is ok, one that cannot fails doctor, one configured
// but not enabled is a warning, as is a setting an enabled one misses.
func TestDoctorReportsIntegrations(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	kube := fake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", ssarReactor(func(authorizationv1.ResourceAttributes) bool { return false }))
	run := func(items ...apiv1.Integration) (string, error) {
		a.integrations = &apiv1.IntegrationList{Items: items}
		streams, _, out, _ := genericiooptions.NewTestIOStreams()
		err := (&DoctorOptions{IOStreams: streams, Factory: f, Kube: kube}).Run(context.Background())
		return out.String(), err
	}
	out, err := run(apiv1.Integration{Name: "slack", Detail: "off: set slack.enabled and slack.secret in the chart's values"})
	if err != nil || !strings.HasSuffix(out, "[skip] Slack: off: set slack.enabled and slack.secret in the chart's values\n") {
		t.Errorf("off: %v\n%s", err, out)
	}
	out, err = run(apiv1.Integration{Name: "slack", Enabled: true, Configured: true, Reachable: true, Detail: "bot @cake in workspace Acme"})
	if err != nil || !strings.HasSuffix(out, "[ok]   Slack: enabled and reachable: bot @cake in workspace Acme\n") {
		t.Errorf("reachable: %v\n%s", err, out)
	}
	out, err = run(apiv1.Integration{Name: "slack", Configured: true, Detail: "configured but not enabled: set slack.enabled=true in the chart's values"})
	if err != nil || !strings.HasSuffix(out, "[warn] Slack: configured but not enabled: set slack.enabled=true in the chart's values\n") {
		t.Errorf("not enabled: %v\n%s", err, out)
	}
	out, err = run(apiv1.Integration{Name: "slack", Enabled: true, Configured: true, Detail: "auth.test failed: slack auth.test: invalid_auth"})
	if err == nil || !strings.HasSuffix(out, "[FAIL] Slack: enabled but not reachable from the agent: auth.test failed: slack auth.test: invalid_auth\n") {
		t.Errorf("unreachable: %v\n%s", err, out)
	}
	out, err = run(apiv1.Integration{Name: "linear", Enabled: true, Configured: true, Reachable: true, Detail: "API key of Linear user cake (cake@example.com)", Warning: "no team has a repository"})
	if err != nil || !strings.HasSuffix(out, "[ok]   Linear: enabled and reachable: API key of Linear user cake (cake@example.com)\n[warn] Linear: no team has a repository\n") {
		t.Errorf("warning: %v\n%s", err, out)
	}
}

// An agent with header auth enabled but no trusted proxy network serves kubeconfig
// users and refuses every proxy sign-in; doctor must say so, with the value to set,
// while the rest of the checks pass.
func TestDoctorReportsInertHeaderAuth(t *testing.T) {
	withVersion(t, "v0.3.0")
	a := newFakeAgent(t)
	a.who.HeaderAuth = apiv1.HeaderAuthNoTrustedProxy
	f, _ := a.start()
	kube := fake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", ssarReactor(func(authorizationv1.ResourceAttributes) bool { return false }))
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &DoctorOptions{IOStreams: streams, Factory: f, Kube: kube}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("doctor failed on a working agent with inert header auth: %v\n%s", err, out)
	}
	want := "[warn] header auth: enabled but inert: no trusted proxy network is set, so every request signed in through the authenticating proxy is refused (401); set headerAuth.trustedProxyCIDRs in the chart's values (agent flag --trusted-proxy-cidrs) to the proxy's network\n"
	if !strings.Contains(out.String(), "[ok]   identity: alice@example.com (alice, authenticated by kubernetes)\n"+want) {
		t.Errorf("doctor:\n%s\nwant after the identity line:\n%s", out, want)
	}

	a.who.HeaderAuth = apiv1.HeaderAuthEnabled
	out.Reset()
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "[ok]   header auth: identity headers are believed from the trusted proxy networks only\n") || strings.Contains(out.String(), "inert") {
		t.Errorf("doctor with header auth enabled:\n%s", out)
	}
}

func TestLoginLogout(t *testing.T) {
	a := newFakeAgent(t)
	a.token = "cka_good"
	_, srv := a.start()
	state := filepath.Join(t.TempDir(), "plugin.json")
	f := NewFactory()
	f.StatePath = state
	streams, in, out, _ := genericiooptions.NewTestIOStreams()

	login := &LoginOptions{IOStreams: streams, Factory: f, Server: srv.URL, Token: "cka_bad", HTTPClient: srv.Client()}
	err := login.Run(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "the agent at "+srv.URL+" does not accept this token") {
		t.Errorf("bad token: %v", err)
	}
	if s, _ := config.Load(state); s.Token != "" {
		t.Errorf("a refused token was saved: %+v", s)
	}

	in.WriteString("cka_good\n")
	login.Token = ""
	f.Server = srv.URL // --server
	if err := login.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	f.Server = ""
	if err := login.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := login.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "Logged in to " + srv.URL + " as alice@example.com.\n"; out.String() != want {
		t.Errorf("out = %q, want %q", out.String(), want)
	}

	// Later commands use the saved server and token without discovery.
	out.Reset()
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"whoami", "-o", "json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("whoami after login: %v", err)
	}
	if !strings.Contains(out.String(), `"email": "alice@example.com"`) {
		t.Errorf("whoami -o json = %s", out.String())
	}
	if f.Mode() != "server "+srv.URL {
		t.Errorf("mode = %q", f.Mode())
	}

	out.Reset()
	logout := &LogoutOptions{IOStreams: streams, Factory: f}
	if err := logout.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := logout.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "Logged out of " + srv.URL + ".\nNot logged in.\n"; out.String() != want {
		t.Errorf("out = %q, want %q", out.String(), want)
	}
}

func TestServerModeExplains401(t *testing.T) {
	a := newFakeAgent(t)
	a.token = "cka_good"
	_, srv := a.start()
	f := NewFactory()
	f.StatePath = filepath.Join(t.TempDir(), "plugin.json")
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"session", "list", "--server", srv.URL})
	err := root.Execute()
	want := "the agent did not accept your token: list sessions: invalid or expired token (HTTP 401 Unauthorized); log in again with `kubectl agents login --server " + srv.URL + " --token TOKEN`"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestAgentNamespaceIsRemembered(t *testing.T) {
	state := filepath.Join(t.TempDir(), "plugin.json")
	f := NewFactory()
	f.StatePath = state
	if f.Namespace() != tunnel.DefaultAgentNamespace {
		t.Errorf("default namespace = %q", f.Namespace())
	}
	rt := &rememberNamespace{next: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}), path: state, namespace: "platform"}
	req, _ := http.NewRequest(http.MethodGet, "https://x/healthz", nil)
	if _, err := rt.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if f.Namespace() != "platform" {
		t.Errorf("remembered namespace = %q", f.Namespace())
	}
	f.AgentNamespace = "other"
	if f.Namespace() != "other" {
		t.Errorf("--agent-namespace did not win: %q", f.Namespace())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var accessRE = regexp.MustCompile(`Forwarding (http://127\.0\.0\.1:\d+) to session/abc12 \(OpenCode\)\n  user:     opencode\n  password: ([0-9a-f]{48})\n`)

func TestAttachWithoutOpenCodePrintsAccessAndRelays(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	pr, pw := io.Pipe()
	streams.Out = pw
	o := &AttachOptions{SessionTunnelOptions: SessionTunnelOptions{IOStreams: streams, Factory: f, ID: "abc12", Address: "127.0.0.1"},
		OpenCode: "opencode-not-installed-here"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx); pw.Close() }()

	br := bufio.NewReader(pr)
	var printed strings.Builder
	for i := 0; i < 5; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read attach output: %v (so far %q)", err, printed.String())
		}
		printed.WriteString(line)
	}
	m := accessRE.FindStringSubmatch(printed.String())
	if m == nil {
		t.Fatalf("attach printed:\n%s", printed.String())
	}
	base, password := m[1], m[2]
	wantRest := fmt.Sprintf("  TUI:      OPENCODE_SERVER_PASSWORD=%s opencode attach %s\n  web UI:   %s/?auth_token=%s\n", password, base, base, tunnel.AuthToken(password))
	if !strings.HasSuffix(printed.String(), wantRest) {
		t.Errorf("attach printed:\n%s\nwant suffix:\n%s", printed.String(), wantRest)
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/global/health", nil)
	req.SetBasicAuth("opencode", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"healthy":true,"version":"1.18.33"}` {
		t.Errorf("relayed: %d %s", resp.StatusCode, body)
	}
	if len(a.proxied) != 1 || a.proxied[0] != "GET /api/v1/sessions/abc12/proxy/global/health auth=" {
		t.Errorf("agent saw %q (the local password must not reach it)", a.proxied)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("attach did not end after Ctrl-C")
	}
	wantErr := "opencode-not-installed-here was not found on your PATH: install it (npm install -g opencode-ai) to get the TUI here.\nPress Ctrl-C to close the tunnel.\n"
	if errOut.String() != wantErr {
		t.Errorf("stderr = %q, want %q", errOut.String(), wantErr)
	}
}

func TestAttachRunsOpenCodeWithThePasswordInTheEnvironment(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	dir := t.TempDir()
	report := filepath.Join(dir, "report")
	script := "#!/bin/sh\nprintf 'args=%s\\n' \"$*\" > " + report + "\nprintf 'password=%s\\n' \"$OPENCODE_SERVER_PASSWORD\" >> " + report + "\n"
	fakeOpenCode := filepath.Join(dir, "opencode")
	if err := os.WriteFile(fakeOpenCode, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	o := &AttachOptions{SessionTunnelOptions: SessionTunnelOptions{IOStreams: streams, Factory: f, ID: "abc12", Address: "127.0.0.1"},
		OpenCode: fakeOpenCode}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^args=attach (http://127\.0\.0\.1:\d+)\npassword=([0-9a-f]{48})\n$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("opencode ran with:\n%s", b)
	}
	if want := "Attaching to session/abc12 through " + m[1] + " ...\n"; errOut.String() != want {
		t.Errorf("stderr = %q, want %q", errOut.String(), want)
	}
}

// A session can be Running a moment before its OpenCode answers (an agent that trusts
// pod readiness alone, a server restarting). `opencode attach` would exit at once, so
// attach waits for the server's health through the tunnel first, and says so.
func TestAttachWaitsForOpenCodeToAnswer(t *testing.T) {
	a := seeded(t)
	a.openCodeDown = 2
	f, _ := a.start()
	dir := t.TempDir()
	report := filepath.Join(dir, "report")
	fakeOpenCode := filepath.Join(dir, "opencode")
	if err := os.WriteFile(fakeOpenCode, []byte("#!/bin/sh\necho ran > "+report+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	o := &AttachOptions{SessionTunnelOptions: SessionTunnelOptions{IOStreams: streams, Factory: f, ID: "abc12", Address: "127.0.0.1"},
		OpenCode: fakeOpenCode}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(report); err != nil || string(b) != "ran\n" {
		t.Fatalf("opencode did not run after the server answered: %q %v", b, err)
	}
	a.mu.Lock()
	proxied := slices.Clone(a.proxied)
	a.mu.Unlock()
	if len(proxied) != 3 || proxied[2] != "GET /api/v1/sessions/abc12/proxy/global/health auth=" {
		t.Errorf("agent saw %q, want three health checks", proxied)
	}
	if !strings.HasPrefix(errOut.String(), "Waiting for the OpenCode server of session/abc12 to answer ...\nAttaching to session/abc12 through ") {
		t.Errorf("stderr = %q", errOut.String())
	}
}

func TestAttachRefusesStoppedSessionsAndOpenAddresses(t *testing.T) {
	f, _ := seeded(t).start()
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	o := &AttachOptions{SessionTunnelOptions: SessionTunnelOptions{IOStreams: streams, Factory: f, ID: "def34", Address: "127.0.0.1"}, OpenCode: "x"}
	err := o.Run(context.Background())
	if err == nil || err.Error() != "session/def34 is Stopped: start it with `kubectl agents session start def34`" {
		t.Errorf("stopped: %v", err)
	}
	o.Address = "0.0.0.0"
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "must be a loopback address") {
		t.Errorf("0.0.0.0: %v", err)
	}
}

func TestExplainSaysWhyTheAgentRefused(t *testing.T) {
	f := NewFactory()
	f.StatePath = filepath.Join(t.TempDir(), "plugin.json")
	forbidden := &client.StatusError{StatusCode: http.StatusForbidden, Err: &apiv1.Error{Body: apiv1.ErrorBody{Code: apiv1.CodeForbidden, Message: `alice may not delete session "x"`}}}
	want := `the agent refused: alice may not delete session "x" (HTTP 403 Forbidden); see what you may do with ` +
		"`kubectl agents whoami` or `kubectl auth can-i --list | grep sessions.agents.cake.ai` (the chart's cake-agents-user ClusterRole grants the usual verbs)"
	if err := explain(f, forbidden); err == nil || err.Error() != want {
		t.Errorf("403:\n got %v\nwant %s", err, want)
	}
	if err := explain(f, nil); err != nil {
		t.Errorf("explain(nil) = %v", err)
	}
	plain := fmt.Errorf("boom")
	if err := explain(f, plain); err == nil || err.Error() != "boom" {
		t.Errorf("other errors must pass unchanged, got %v", err)
	}
}

// pflag takes text in backticks as the flag's value name: a backticked command in a
// usage string would show as "--server kubectl agents login" in --help.
func TestFlagUsagesShowValueNames(t *testing.T) {
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(NewFactory(), streams)
	usage := root.PersistentFlags().FlagUsages()
	if !strings.Contains(usage, "--server string ") {
		t.Errorf("--server is not shown as taking a string:\n%s", usage)
	}
	var check func(c *cobra.Command)
	check = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(fl *pflag.Flag) {
			if strings.Contains(fl.Usage, "`") {
				t.Errorf("%s --%s: backticks in the usage become the value name: %q", c.CommandPath(), fl.Name, fl.Usage)
			}
		})
		for _, sub := range c.Commands() {
			check(sub)
		}
	}
	check(root)
}

// Without --server, login must say so before it asks for (and swallows) a token.
func TestLoginWithoutServerAsksForNoToken(t *testing.T) {
	f := NewFactory()
	f.StatePath = filepath.Join(t.TempDir(), "plugin.json")
	streams, in, _, errOut := genericiooptions.NewTestIOStreams()
	in.WriteString("cka_typed\n")
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"login"})
	err := root.Execute()
	if err == nil || !strings.HasPrefix(err.Error(), "--server is required") {
		t.Errorf("err = %v, want --server is required", err)
	}
	if errOut.String() != "" {
		t.Errorf("stderr = %q, want no token prompt", errOut.String())
	}
	if in.String() != "cka_typed\n" {
		t.Errorf("standard input was read: %q left", in.String())
	}
}

func TestJudgeTrust(t *testing.T) {
	for _, tc := range []struct {
		name   string
		info   apiv1.HeaderAuthInfo
		status string
		line   string
	}{
		{name: "the proxy's own addresses", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"10.4.2.17/32", "10.4.3.0/28", "fd00::17/128"}},
			status: "ok", line: "header auth: identity headers are trusted only from the proxy: 10.4.2.17/32, 10.4.3.0/28, fd00::17/128"},
		{name: "a node's pod range is still narrow", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"10.244.1.0/24"}},
			status: "ok", line: "header auth: identity headers are trusted only from the proxy: 10.244.1.0/24"},
		{name: "the Istio sidecar", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"127.0.0.6/32", "::6/128"}},
			status: "ok", line: "header auth: identity headers are trusted only from the proxy: the Istio sidecar (127.0.0.6); the sidecar hides the client's address, so the NetworkPolicy on the agent's HTTP port is what keeps other pods out"},
		{name: "the pod network", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"10.4.2.17/32", "10.0.0.0/8"}},
			status: "warn", line: "header auth: identity headers are trusted from the pod network (10.0.0.0/8): any pod there, session pods included, can claim any identity unless a NetworkPolicy keeps it off the agent's HTTP port (the chart's networkPolicy.enabled). Narrow headerAuth.trustedProxyCIDRs to the proxy's addresses, or set headerAuth.jwksURL"},
		{name: "a /23 is a network of pods", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"192.168.4.0/23"}}, status: "warn", line: "(192.168.4.0/23)"},
		{name: "every address holds loopback too", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"0.0.0.0/0"}}, status: "FAIL", line: "from loopback (0.0.0.0/0)"},
		{name: "the pod network with verified JWTs", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"10.0.0.0/8"}, JWTVerified: true, JWTAudiences: []string{"cake-agents"}},
			status: "ok", line: "header auth: identity headers are trusted from the pod network (10.0.0.0/8), but a forged header also needs a JWT signed by the identity provider; the proxy's JWT is verified against the JWKS"},
		{name: "verified without an audience", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"10.1.1.1/32"}, JWTVerified: true},
			status: "ok", line: "10.1.1.1/32; the proxy's JWT is verified against the JWKS (its audience is not checked: set headerAuth.jwt.audience)"},
		{name: "loopback", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"127.0.0.6/32", "127.0.0.0/8"}},
			status: "FAIL", line: "header auth: identity headers are trusted from loopback (127.0.0.0/8), where port-forwarded connections arrive: anyone allowed to port-forward to the agent can claim any identity. Remove it from headerAuth.trustedProxyCIDRs (behind Istio the chart trusts the sidecar's 127.0.0.6 by itself)"},
		{name: "IPv6 loopback beats the pod network", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"10.0.0.0/8", "::1/128"}}, status: "FAIL", line: "from loopback (::1/128)"},
		{name: "all of IPv6", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"::/0"}}, status: "FAIL", line: "from loopback (::/0)"},
		{name: "127.0.0.1 alone", info: apiv1.HeaderAuthInfo{TrustedProxyCIDRs: []string{"127.0.0.1/32"}, JWTVerified: true},
			status: "FAIL", line: "anyone allowed to port-forward to the agent can speak as the proxy (a JWT signed by the identity provider is still required)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, line := judgeTrust(tc.info.TrustedProxyCIDRs).report(&tc.info)
			if status != tc.status || !strings.Contains(line, tc.line) {
				t.Errorf("got [%s] %s\nwant [%s] ...%s...", status, line, tc.status, tc.line)
			}
		})
	}
}

// An agent that publishes its header configuration is probed with its own header names
// (not oauth2-proxy's defaults, which it would ignore), and doctor says whom it trusts.
func TestDoctorProbesTheConfiguredHeaders(t *testing.T) {
	withVersion(t, "v0.3.0")
	a := newFakeAgent(t)
	a.who.HeaderAuth = apiv1.HeaderAuthEnabled
	a.who.HeaderAuthInfo = &apiv1.HeaderAuthInfo{State: apiv1.HeaderAuthEnabled, EmailHeader: "X-Forwarded-Email", UserHeader: "X-Forwarded-User",
		JWTHeader: "X-Forwarded-Access-Token", TrustedProxyCIDRs: []string{"10.0.0.0/8"}}
	f, _ := a.start()
	kube := fake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", ssarReactor(func(authorizationv1.ResourceAttributes) bool { return false }))
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &DoctorOptions{IOStreams: streams, Factory: f, Kube: kube}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	for _, line := range []string{
		"[warn] header auth: identity headers are trusted from the pod network (10.0.0.0/8): any pod there, session pods included, can claim any identity",
		"[ok]   forged identity headers are refused (X-Forwarded-Access-Token, X-Forwarded-Email, X-Forwarded-User: 401)\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("doctor output misses %q:\n%s", line, out)
		}
	}
	sort.Strings(a.identityHeaders)
	want := []string{
		"X-Forwarded-Access-Token: eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJlbWFpbCI6ImZvcmdlZC1ieS1rdWJlY3RsLWFnZW50cy1kb2N0b3JAaW52YWxpZCJ9.",
		"X-Forwarded-Email: forged-by-kubectl-agents-doctor@invalid",
		"X-Forwarded-User: forged-by-kubectl-agents-doctor",
	}
	if !slices.Equal(a.identityHeaders, want) {
		t.Errorf("identity headers sent: %q\nwant %q", a.identityHeaders, want)
	}

	// The same agent trusting what arrives through the port-forward is caught under its
	// own header name.
	a.trustHeaders = true
	a.who.HeaderAuthInfo.TrustedProxyCIDRs = []string{"127.0.0.0/8"}
	out.Reset()
	err := o.Run(context.Background())
	if err == nil || err.Error() != "2 check(s) failed" {
		t.Errorf("err = %v", err)
	}
	for _, line := range []string{
		"[FAIL] header auth: identity headers are trusted from loopback (127.0.0.0/8)",
		"[FAIL] forged identity headers are TRUSTED: the agent took X-Forwarded-Access-Token, X-Forwarded-Email, X-Forwarded-User from a port-forward",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("doctor output misses %q:\n%s", line, out)
		}
	}
}

// TestVersionSkewWarnsOnce: the plugin sends its version; an agent that finds it outside
// its window answers every request with a Warning, which the plugin prints once, on
// stderr, for the whole command. version shows the chart's version.
func TestVersionSkewWarnsOnce(t *testing.T) {
	var sent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = append(sent, r.Header.Get(version.HeaderClient))
		w.Header().Set(version.HeaderAgent, "0.9.0")
		w.Header().Add("Warning", version.WarningHeader("kubectl-agents dev is too old: upgrade the plugin"))
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/version":
			_, _ = w.Write([]byte(`{"version":"0.9.0","commit":"abc","date":"d","goVersion":"go","platform":"linux/amd64","chartVersion":"0.9.1","supportedClients":"0.8 to 0.10"}`))
		default:
			_, _ = w.Write([]byte(`{"items":[]}`))
		}
	}))
	t.Cleanup(srv.Close)
	f := NewFactory()
	f.StatePath = filepath.Join(t.TempDir(), "plugin.json")
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"version", "--server", srv.URL})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	c, err := f.Agent(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListSessions(context.Background(), client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(errOut.String(), "WARNING: kubectl-agents dev is too old: upgrade the plugin\n"); got != 1 || strings.Count(errOut.String(), "\n") != 1 {
		t.Errorf("stderr %q: want the warning once", errOut.String())
	}
	if !strings.Contains(out.String(), "Chart Version: 0.9.1\n") {
		t.Errorf("version printed %q", out.String())
	}
	for _, v := range sent {
		if v != version.Version {
			t.Errorf("a request said plugin version %q, want %q", v, version.Version)
		}
	}
}
