package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

var fixedNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func seeded(t *testing.T) *fakeAgent {
	a := newFakeAgent(t)
	started := fixedNow.Add(-50 * time.Minute)
	a.add(apiv1.Session{ID: "abc12", Title: "fix the flaky test", State: apiv1.StateRunning, Owner: "alice@example.com",
		Repo: "https://github.com/org/repo.git", Branch: "main", Model: "litellm/m", Private: true, PodName: "cake-agents-session-abc12",
		PodNamespace: "sessions", CreatedAt: fixedNow.Add(-time.Hour), StartedAt: &started,
		LastActivityAt: fixedNow.Add(-2 * time.Minute), LastActivitySource: "attach", StartKind: apiv1.StartKindWarm})
	a.add(apiv1.Session{ID: "def34", State: apiv1.StateStopped, Owner: "bob@example.com", Reason: "IdleTimeout",
		CreatedAt: fixedNow.Add(-49 * time.Hour)})
	a.add(apiv1.Session{ID: "ghi56", Title: "docs", State: apiv1.StatePending, Owner: "alice@example.com",
		Repo: "https://github.com/org/docs", CreatedAt: fixedNow.Add(-30 * time.Second)})
	return a
}

func runList(t *testing.T, f *Factory, mutate func(*SessionListOptions)) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	o := NewSessionListOptions(f, streams)
	o.PrintFlags.now = func() time.Time { return fixedNow }
	if mutate != nil {
		mutate(o)
	}
	ctx := context.Background()
	if err := o.Validate(); err != nil {
		return "", "", err
	}
	err := o.Run(ctx)
	return out.String(), errOut.String(), err
}

func setOutput(o *PrintFlags, format string) { *o.OutputFormat = format }

func TestSessionListTable(t *testing.T) {
	f, _ := seeded(t).start()
	out, _, err := runList(t, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `NAME    TITLE                STATE     OWNER               REPO                  AGE
abc12   fix the flaky test   Running   alice@example.com   github.com/org/repo   60m
def34   <none>               Stopped   bob@example.com     <none>                2d1h
ghi56   docs                 Pending   alice@example.com   github.com/org/docs   30s
`
	if out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}
}

func TestSessionListWideAndFilters(t *testing.T) {
	f, _ := seeded(t).start()
	out, _, err := runList(t, f, func(o *SessionListOptions) {
		setOutput(o.PrintFlags, "wide")
		o.State = "Running"
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `NAME    TITLE                STATE     OWNER               REPO                  AGE   BRANCH   MODEL       PRIVATE   POD                         START   LAST ACTIVITY     REASON
abc12   fix the flaky test   Running   alice@example.com   github.com/org/repo   60m   main     litellm/m   true      cake-agents-session-abc12   warm    2m ago (attach)   <none>
`
	if out != want {
		t.Errorf("wide:\n%s\nwant:\n%s", out, want)
	}

	_, _, err = runList(t, f, func(o *SessionListOptions) { o.State = "running" })
	if err == nil || !strings.Contains(err.Error(), `--state "running" is not a session state`) {
		t.Errorf("bad state: %v", err)
	}
}

func TestSessionListEmpty(t *testing.T) {
	f, _ := newFakeAgent(t).start()
	out, errOut, err := runList(t, f, nil)
	if err != nil || out != "" || errOut != "No sessions found.\n" {
		t.Errorf("empty list: out=%q errOut=%q err=%v", out, errOut, err)
	}
}

func TestSessionListPrinters(t *testing.T) {
	f, _ := seeded(t).start()
	for _, tc := range []struct{ format, want string }{
		{"name", "session.agents.cake.ai/abc12\nsession.agents.cake.ai/def34\nsession.agents.cake.ai/ghi56\n"},
		{"jsonpath={.items[*].metadata.name}", "abc12 def34 ghi56"},
		{"jsonpath={range .items[*]}{.id}={.state}{\"\\n\"}{end}", "abc12=Running\ndef34=Stopped\nghi56=Pending\n"},
		{"custom-columns=ID:.id,STATE:.state,REASON:.reason", "ID      STATE     REASON\nabc12   Running   <none>\ndef34   Stopped   IdleTimeout\nghi56   Pending   <none>\n"},
	} {
		out, _, err := runList(t, f, func(o *SessionListOptions) { setOutput(o.PrintFlags, tc.format) })
		if err != nil {
			t.Errorf("-o %s: %v", tc.format, err)
			continue
		}
		if out != tc.want {
			t.Errorf("-o %s:\n%q\nwant\n%q", tc.format, out, tc.want)
		}
	}

	out, _, err := runList(t, f, func(o *SessionListOptions) { setOutput(o.PrintFlags, "yaml"); o.State = "Stopped" })
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"apiVersion: agents.cake.ai/v1\nitems:\n- apiVersion: agents.cake.ai/v1\n", "  kind: Session\n", "    name: def34\n", "  reason: IdleTimeout\n", "kind: SessionList\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("yaml misses %q:\n%s", want, out)
		}
	}

	_, _, err = runList(t, f, func(o *SessionListOptions) { setOutput(o.PrintFlags, "xml") })
	if err == nil || !strings.Contains(err.Error(), `--output: unable to match a printer suitable for the output format "xml"`) {
		t.Errorf("-o xml: %v", err)
	}
	_, _, err = runList(t, f, func(o *SessionListOptions) { setOutput(o.PrintFlags, "custom-columns=ID") })
	if err == nil || !strings.Contains(err.Error(), `expected HEADER:.field`) {
		t.Errorf("bad custom-columns: %v", err)
	}
}

func TestSessionGet(t *testing.T) {
	f, _ := seeded(t).start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &SessionGetOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), IDs: []string{"abc12", "nope"}}
	setOutput(o.PrintFlags, "jsonpath={.items[*].state}")
	err := o.Run(context.Background())
	if err == nil || err.Error() != `session "nope" not found: list sessions with `+"`kubectl agents session list`" {
		t.Errorf("err = %v", err)
	}
	if out.String() != "Running" {
		t.Errorf("out = %q (found sessions print before the error)", out.String())
	}
}

// TestSessionGetSpend: the session's LiteLLM spend shows in -o wide and in JSON.
func TestSessionGetSpend(t *testing.T) {
	a := newFakeAgent(t)
	usd := 0.0375
	a.add(apiv1.Session{ID: "abc12", State: apiv1.StateRunning, Owner: "alice@example.com", Model: "litellm/m",
		CreatedAt: fixedNow.Add(-time.Hour), ModelSpend: &usd})
	f, _ := a.start()
	for format, want := range map[string]string{"wide": "$0.0375   <none>\n", "jsonpath={.modelSpend}": "0.0375"} {
		streams, _, out, _ := genericiooptions.NewTestIOStreams()
		o := &SessionGetOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), IDs: []string{"abc12"}}
		o.PrintFlags.now = func() time.Time { return fixedNow }
		setOutput(o.PrintFlags, format)
		if err := o.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(out.String(), want) {
			t.Errorf("-o %s:\n%s\nwant it to end with %q", format, out.String(), want)
		}
	}
}

func runCreate(t *testing.T, f *Factory, mutate func(*SessionCreateOptions)) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	o := NewSessionCreateOptions(f, streams)
	o.PollInterval = time.Millisecond
	mutate(o)
	if err := o.Validate(); err != nil {
		return "", "", err
	}
	err := o.Run(context.Background())
	return out.String(), errOut.String(), err
}

func TestSessionCreateWait(t *testing.T) {
	a := newFakeAgent(t)
	a.progress = []apiv1.SessionState{apiv1.StatePending, apiv1.StateStarting, apiv1.StateStarting, apiv1.StateRunning}
	f, _ := a.start()
	out, errOut, err := runCreate(t, f, func(o *SessionCreateOptions) {
		o.Repo, o.Prompt, o.Wait, o.TTL = "https://github.com/org/repo", "fix it", true, 2*time.Hour
	})
	if err != nil {
		t.Fatal(err)
	}
	if out != "session/s1 created\n" {
		t.Errorf("out = %q", out)
	}
	if want := "session/s1: Pending\nsession/s1: Starting\nsession/s1: Running\n"; errOut != want {
		t.Errorf("progress = %q, want %q", errOut, want)
	}
	req := a.created[0]
	if req.Repo != "https://github.com/org/repo" || req.Prompt != "fix it" || req.TTL == nil || req.TTL.Duration != 2*time.Hour ||
		req.Private != nil || req.IdleTimeout != nil {
		t.Errorf("request = %+v (private and idle timeout must be left to the agent)", req)
	}
}

func TestSessionCreateWaitFailsAndTimesOut(t *testing.T) {
	a := newFakeAgent(t)
	a.progress = []apiv1.SessionState{apiv1.StateStarting, apiv1.StateFailed}
	f, _ := a.start()
	_, errOut, err := runCreate(t, f, func(o *SessionCreateOptions) { o.Wait = true })
	want := "session/s1 is Failed instead of Running: cannot pull image data-plane:1.0; see `kubectl agents session why s1`"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
	if errOut != "session/s1: Pending\nsession/s1: Starting\nsession/s1: Failed (ImagePullBackOff)\n" {
		t.Errorf("progress = %q", errOut)
	}

	a = newFakeAgent(t)
	f, _ = a.start()
	_, _, err = runCreate(t, f, func(o *SessionCreateOptions) { o.Wait, o.Timeout = true, 20*time.Millisecond })
	if err == nil || !strings.HasPrefix(err.Error(), "session/s1 is still Pending after 20ms: raise --timeout") {
		t.Errorf("timeout err = %v", err)
	}
}

func TestSessionCreateValidateAndOutput(t *testing.T) {
	f, _ := newFakeAgent(t).start()
	_, _, err := runCreate(t, f, func(o *SessionCreateOptions) { o.Repo = "github.com/org/repo" })
	if err == nil || err.Error() != `--repo: "github.com/org/repo" is not a repository URL: use an https:// or ssh:// URL (https://host/org/repo.git) or git@host:org/repo.git` {
		t.Errorf("err = %v", err)
	}
	_, _, err = runCreate(t, f, func(o *SessionCreateOptions) { o.Prompt = strings.Repeat("x", apiv1.MaxPromptBytes+1) })
	if err == nil || !strings.Contains(err.Error(), "send the rest with `kubectl agents session send`") {
		t.Errorf("err = %v", err)
	}
	out, _, err := runCreate(t, f, func(o *SessionCreateOptions) { setOutput(o.PrintFlags, "name") })
	if err != nil || out != "session.agents.cake.ai/s1\n" {
		t.Errorf("-o name: %q, %v", out, err)
	}
}

func TestSessionDelete(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	streams, in, out, errOut := genericiooptions.NewTestIOStreams()
	o := &SessionDeleteOptions{IOStreams: streams, Factory: f, IDs: []string{"abc12", "nope", "def34"}}
	err := o.Run(context.Background())
	if err == nil || err.Error() != `session "nope" not found: list sessions with `+"`kubectl agents session list`" {
		t.Errorf("err = %v", err)
	}
	if out.String() != "session/abc12 deleted\nsession/def34 deleted\n" {
		t.Errorf("out = %q", out.String())
	}

	out.Reset()
	o = &SessionDeleteOptions{IOStreams: streams, Factory: f, All: true}
	in.WriteString("n\n")
	err = o.Run(context.Background())
	if err == nil || err.Error() != "nothing deleted: not confirmed (pass --yes to skip the question)" {
		t.Errorf("declined: %v", err)
	}
	if errOut.String() != "Delete 1 session(s): ghi56? [y/N]: " {
		t.Errorf("question = %q", errOut.String())
	}
	in.WriteString("y\n")
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out.String() != "session/ghi56 deleted\n" {
		t.Errorf("out = %q", out.String())
	}

	if err := (&SessionDeleteOptions{All: true, IDs: []string{"x"}}).Validate(); err == nil {
		t.Error("names with --all accepted")
	}
	if err := (&SessionDeleteOptions{}).Validate(); err == nil {
		t.Error("nothing to delete accepted")
	}
}

func TestSessionStopStart(t *testing.T) {
	f, _ := seeded(t).start()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	for _, verb := range []string{"stop", "start"} {
		o := &SessionLifecycleOptions{IOStreams: streams, Factory: f, Verb: verb, IDs: []string{"abc12"}}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := o.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if want := "session/abc12 stopped (Stopping)\nsession/abc12 started (Pending)\n"; out.String() != want {
		t.Errorf("out = %q, want %q", out.String(), want)
	}
	// Not persistent: the start says the conversation begins afresh, from a digest.
	if !strings.Contains(errOut.String(), "new conversation seeded with a digest") {
		t.Errorf("stderr = %q", errOut.String())
	}
}

func TestSessionLogsAndFollow(t *testing.T) {
	a := seeded(t)
	a.messages["abc12"] = []apiv1.Message{
		{ID: "m1", Role: "user", Text: "fix the flaky test", CreatedAt: fixedNow.Add(-3 * time.Minute)},
		{ID: "m2", Role: "assistant", Text: "Done: the test waited on a timer.\n", CreatedAt: fixedNow.Add(-2 * time.Minute),
			Tools: []apiv1.ToolCall{{Tool: "bash", Title: "go test ./...", Status: "completed"}}},
	}
	delta := func(msg, part, text string) string {
		b, _ := json.Marshal(map[string]any{"type": "message.part.delta", "properties": map[string]string{"messageID": msg, "partID": part, "field": "text", "delta": text}})
		return "data: " + string(b) + "\n\n"
	}
	// The first stream drops in the middle of an answer (an agent restart); the
	// answer went on meanwhile; the second stream carries the rest; then the session
	// stops.
	a.events = []string{
		"data: {\"type\":\"server.connected\",\"properties\":{}}\n\n" +
			"data: {\"type\":\"message.part.updated\",\"properties\":{\"part\":{\"id\":\"r1\",\"messageID\":\"m3\",\"type\":\"reasoning\"}}}\n\n" +
			delta("m3", "r1", "thinking, not shown") +
			delta("m3", "p1", "Looking") +
			": heartbeat\n\n" +
			delta("m3", "p1", " at"),
		delta("m3", "p1", " the rest.") +
			delta("m3", "p2", "Second part.") +
			"data: {\"type\":\"session.idle\",\"properties\":{}}\n\n",
	}
	resumed := append(slices.Clone(a.messages["abc12"]), apiv1.Message{ID: "m3", Role: "assistant", Text: "Looking at it.", CreatedAt: fixedNow.Add(-time.Minute)})
	final := append(slices.Clone(a.messages["abc12"]), apiv1.Message{ID: "m3", Role: "assistant", Text: "Looking at it. the rest.\nSecond part.", CreatedAt: fixedNow.Add(-time.Minute)})
	a.afterStream = [][]apiv1.Message{resumed, final}
	f, _ := a.start()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	o := &SessionLogsOptions{IOStreams: streams, Factory: f, ID: "abc12", Timestamps: true}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "2026-11-28T11:57:00Z user:\nfix the flaky test\n\n2026-11-28T11:58:00Z assistant:\nDone: the test waited on a timer.\n  [bash: go test ./... (completed)]\n"
	if out.String() != want {
		t.Errorf("logs:\n%q\nwant\n%q", out.String(), want)
	}

	out.Reset()
	o.Follow, o.Timestamps = true, false
	err := o.Run(context.Background())
	if err == nil || err.Error() != "follow session/abc12: the session is no longer running" {
		t.Errorf("err = %v", err)
	}
	// Every word once: " it." came while the stream was down and is printed from the
	// conversation at the resume; the rest from the new stream.
	want = "user:\nfix the flaky test\n\nassistant:\nDone: the test waited on a timer.\n  [bash: go test ./... (completed)]\n\nassistant:\nLooking at it. the rest.\nSecond part.\n"
	if out.String() != want {
		t.Errorf("follow:\n%q\nwant\n%q\nstderr %q", out.String(), want, errOut.String())
	}
	if !strings.Contains(errOut.String(), "resuming") || !strings.Contains(errOut.String(), "resumed following session/abc12") {
		t.Errorf("stderr: %q", errOut.String())
	}
}

func TestSessionLogsFormats(t *testing.T) {
	a := seeded(t)
	a.messages["abc12"] = []apiv1.Message{
		{ID: "m1", Role: "user", Text: "run the tests", CreatedAt: fixedNow.Add(-3 * time.Minute)},
		{ID: "m2", Role: "assistant", Text: "They pass.", CreatedAt: fixedNow.Add(-2 * time.Minute),
			Tools: []apiv1.ToolCall{{Tool: "bash", Title: "go test", Status: "completed", Input: json.RawMessage(`{"command":"go test"}`), Output: "ok ```x```"}}},
	}
	f, _ := a.start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := &SessionLogsOptions{IOStreams: streams, Factory: f, ID: "abc12", Output: "markdown"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "# Session abc12\n\n## user · 2026-11-28T11:57:00Z\n\nrun the tests\n\n## assistant · 2026-11-28T11:58:00Z\n\nThey pass.\n\n**bash**: go test (completed)\n\n```json\n{\"command\":\"go test\"}\n```\n\n````\nok ```x```\n````\n"
	if out.String() != want {
		t.Errorf("markdown:\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	o.Output = "json"
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got apiv1.MessageList
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got.Items) != 2 || got.Items[1].Tools[0].Output != "ok ```x```" {
		t.Errorf("json: %v %s", err, out.String())
	}
	for _, bad := range []*SessionLogsOptions{{ID: "abc12", Output: "yaml"}, {ID: "abc12", Output: "json", Follow: true}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) passed", bad)
		}
	}
}

func TestSessionSend(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	streams, in, out, _ := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	in.WriteString("from stdin\n")
	root.SetArgs([]string{"session", "send", "abc12"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	root.SetArgs([]string{"session", "send", "abc12", "now", "add", "a", "test"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if len(a.sent) != 2 || a.sent[0] != "from stdin\n" || a.sent[1] != "now add a test" {
		t.Errorf("sent = %q", a.sent)
	}
	if out.String() != "session/abc12: message sent\nsession/abc12: message sent\n" {
		t.Errorf("out = %q", out.String())
	}
	root.SetArgs([]string{"session", "send", "def34", "hello"})
	err := root.Execute()
	want := "send to session/def34: session is Stopped (HTTP 409 SessionNotRunning); start it with `kubectl agents session start def34`"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestSessionWhy(t *testing.T) {
	a := seeded(t)
	idle := fixedNow.Add(28 * time.Minute)
	expires := fixedNow.Add(23 * time.Hour)
	a.sessions["abc12"].IdleTimeout = apiv1.Duration{Duration: 30 * time.Minute}
	a.sessions["abc12"].IdleDeadline = &idle
	a.sessions["abc12"].TTL = apiv1.Duration{Duration: 24 * time.Hour}
	a.sessions["abc12"].ExpiresAt = &expires
	f, _ := a.start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	for _, id := range []string{"abc12", "def34"} {
		o := &SessionWhyOptions{IOStreams: streams, Factory: f, ID: id, Now: func() time.Time { return fixedNow }}
		if err := o.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	want := `session/abc12 is Running.
  Running since 50m ago in pod sessions/cake-agents-session-abc12.
  Last activity 2m ago (attach).
  Idle timeout 30m0s: it stops in 28m (2026-11-28T12:28:00Z) unless something keeps it busy: OpenCode working, an attached TUI, a message, or requests through the proxy.
  TTL 24h0m0s: it will be deleted in 23h (2026-11-29T11:00:00Z).
  Its workspace is ephemeral: stopping the session discards it (use --persistent to keep it).
session/def34 is Stopped (IdleTimeout).
  Start it again with ` + "`kubectl agents session start def34`" + `.
  Its workspace is ephemeral: stopping the session discards it (use --persistent to keep it).
`
	if out.String() != want {
		t.Errorf("why:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestRootCommandRunsSessionListAndExplainsErrors(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"session", "list", "-o", "name", "--state", "Pending"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "session.agents.cake.ai/ghi56\n" {
		t.Errorf("out = %q", out.String())
	}

	a.who.Permissions = nil
	a.token = "cka_expected"
	root.SetArgs([]string{"whoami"})
	err := root.Execute()
	if err == nil || !strings.HasPrefix(err.Error(), "the agent could not verify your kube identity: ask the agent who you are: invalid or expired token (HTTP 401 Unauthorized)") {
		t.Errorf("401: %v", err)
	}

	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetArgs([]string{"session", "nosuch"})
	if err := root.Execute(); err == nil || err.Error() != `unknown command "nosuch" for "kubectl agents session"; see "kubectl agents session --help"` {
		t.Errorf("unknown command: %v", err)
	}
}

func TestSessionNameCompletion(t *testing.T) {
	f, _ := seeded(t).start()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetArgs([]string{"__complete", "session", "get", "abc12", ""})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := "def34\tStopped\nghi56\tPending docs\n:4\n"
	if !strings.HasPrefix(out.String(), want) {
		t.Errorf("completion:\n%q\nwant prefix\n%q", out.String(), want)
	}
}

// Flag mistakes are reported as such, before the plugin tries to reach the agent (here it
// could not: the kubeconfig does not exist).
func TestSessionFlagsAreCheckedBeforeConnecting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"session", "create", "--branch", "main"}, "--branch needs --repo"},
		{[]string{"session", "create", "--repo", "github.com/org/repo"}, `--repo: "github.com/org/repo" is not a repository URL`},
		// The agent's rule (apiv1.ValidateRepoURL), before the agent is reached: these two
		// were once sent, accepted with 201 and refused by the session's init container.
		{[]string{"session", "create", "--repo=-x@github.com:org/repo"}, `--repo: "-x@github.com:org/repo" must not start with '-'`},
		{[]string{"session", "create", "--repo", "git@github.com:/abs/repo"}, `--repo: "git@github.com:/abs/repo" has an absolute path after the colon: write git@github.com:abs/repo for a path under the login's home, or ssh://git@github.com/abs/repo`},
		{[]string{"session", "create", "--repo", "ext::sh -c x"}, `--repo: scheme "ext" is not allowed`},
		{[]string{"session", "create", "--repo", "https://ghp_abc@github.com/org/repo"}, `--repo: the https URL contains a user name`},
		{[]string{"session", "list", "--state", "running"}, `--state "running" is not a session state`},
		// Names that cannot be session ids (apiv1.ValidateSessionID, the agent's rule).
		{[]string{"session", "get", "abc12", "1abc"}, "session id \"1abc\" is not valid: ids are 1 to 40 lowercase letters, digits and '-', starting with a letter and not ending with '-': list sessions with `kubectl agents session list`"},
		{[]string{"session", "delete", "abc-"}, `session id "abc-" is not valid`},
		{[]string{"session", "stop", "Abc"}, `session id "Abc" is not valid`},
		{[]string{"session", "start", "a_b"}, `session id "a_b" is not valid`},
		{[]string{"session", "logs", "session/abc"}, `session id "session/abc" is not valid`},
		{[]string{"session", "send", "1abc", "hi"}, `session id "1abc" is not valid`},
		{[]string{"session", "why", strings.Repeat("a", 41)}, `session id "` + strings.Repeat("a", 41) + `" is not valid`},
		{[]string{"attach", "1abc"}, `session id "1abc" is not valid`},
		{[]string{"port-forward", "1abc"}, `session id "1abc" is not valid`},
		{[]string{"session", "list", "-o", "bogus"}, "--output:"},
		{[]string{"session", "get", "x", "-o", "custom-columns="}, "custom-columns format specified but no custom columns given"},
	} {
		streams, _, _, _ := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(NewFactory(), streams)
		root.SetArgs(append(tc.args, "--kubeconfig", filepath.Join(t.TempDir(), "missing")))
		err := root.Execute()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want prefix %q", tc.args, err, tc.want)
		}
	}
}

// TestSessionGetBranchAndPullRequest: the branch the workspace is on (rather than the
// one asked for at create) and the pull request show in -o wide and in JSON.
func TestSessionGetBranchAndPullRequest(t *testing.T) {
	a := newFakeAgent(t)
	a.add(apiv1.Session{ID: "abc12", State: apiv1.StateRunning, Owner: "alice@example.com", Repo: "https://github.com/acme/widgets.git",
		Branch: "main", CurrentBranch: "cake/fix-flaky-test", PullRequestURL: "https://github.com/acme/widgets/pull/7",
		CreatedAt: fixedNow.Add(-time.Hour)})
	f, _ := a.start()
	for format, want := range map[string]string{
		"wide": `NAME    TITLE    STATE     OWNER               REPO                      AGE   BRANCH                MODEL    PRIVATE   POD      START    LAST ACTIVITY   REASON   SPEND       PULL REQUEST
abc12   <none>   Running   alice@example.com   github.com/acme/widgets   60m   cake/fix-flaky-test   <none>   false     <none>   <none>   <none>          <none>   <unknown>   https://github.com/acme/widgets/pull/7
`,
		"jsonpath={.currentBranch} {.pullRequestURL}": "cake/fix-flaky-test https://github.com/acme/widgets/pull/7",
	} {
		streams, _, out, _ := genericiooptions.NewTestIOStreams()
		o := &SessionGetOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), IDs: []string{"abc12"}}
		o.PrintFlags.now = func() time.Time { return fixedNow }
		setOutput(o.PrintFlags, format)
		if err := o.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("-o %s:\n%s\nwant:\n%s", format, out.String(), want)
		}
	}
}

// TestSessionListWatch: after the list, a changed session is printed again (no second
// header), a deleted one once more as Deleted, and the watch ends with its context.
func TestSessionListWatch(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o := NewSessionListOptions(f, streams)
	o.Watch, o.WatchEvery = true, 100*time.Millisecond
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	time.Sleep(350 * time.Millisecond) // the list, then a few quiet rounds
	a.mu.Lock()
	a.sessions["abc12"].State, a.sessions["abc12"].ResourceVersion = apiv1.StateStopped, a.sessions["abc12"].ResourceVersion+1
	delete(a.sessions, "def34")
	a.mu.Unlock()
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var after []string
	for _, l := range lines[4:] { // header and the three sessions
		after = append(after, strings.Join(strings.Fields(l)[:3], " "))
	}
	if strings.Count(out.String(), "NAME") != 1 || strings.Join(after, "|") != "def34 <none> Deleted|abc12 fix the" {
		t.Fatalf("watch output:\n%s\nafter the list: %q", out.String(), after)
	}
	if !strings.Contains(lines[len(lines)-1], "Stopped") {
		t.Fatalf("the changed session's line: %q", lines[len(lines)-1])
	}
	o.WatchEvery = time.Millisecond
	if err := o.Validate(); err == nil {
		t.Error("a 1ms watch interval passed validation")
	}
}

// TestSessionFork: `session fork` sends a create naming its source, with only what the
// user gave (the agent takes the rest from the source), and says what it made.
func TestSessionFork(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	cmd := NewCmdSessionFork(f, streams)
	cmd.SetArgs([]string{"abc12", "--prompt", "try a mutex"})
	cmd.SetOut(out)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "session/s1 created (a fork of session/abc12)\n" {
		t.Errorf("out = %q", out.String())
	}
	if len(a.created) != 1 || a.created[0].ForkOf != "abc12" || a.created[0].Prompt != "try a mutex" || a.created[0].Repo != "" || a.created[0].Private != nil {
		t.Fatalf("create sent: %+v", a.created)
	}
	cmd = NewCmdSessionFork(f, streams)
	cmd.SetArgs([]string{"bad/id"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Errorf("a malformed id: %v", err)
	}
}

// TestSessionWeb: session web prints the short-lived link alone on stdout (for a browser), says
// on stderr how long it works; an agent without session hosts answers with how to enable
// them (not "not found" for a session that exists), and a missing session is not found.
func TestSessionWeb(t *testing.T) {
	a := seeded(t)
	f, _ := a.start()
	run := func(id string) (string, string, error) {
		streams, _, out, errOut := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs([]string{"session", "web", id})
		err := root.Execute()
		return out.String(), errOut.String(), err
	}
	if _, _, err := run("abc12"); err == nil || !strings.Contains(err.Error(), "controlPlane.sessionWeb.enabled") || strings.Contains(err.Error(), "not found") {
		t.Errorf("without session hosts: %v", err)
	}
	a.sessionWebDomain = "agents.example.com"
	out, errOut, err := run("abc12")
	if err != nil {
		t.Fatal(err)
	}
	if out != "https://abc12.agents.example.com/_cake/enter?ticket=t1\n" || !strings.Contains(errOut, "do not share it") {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	if _, _, err := run("nope9"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a missing session: %v", err)
	}
}
