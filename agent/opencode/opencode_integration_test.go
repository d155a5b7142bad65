package opencode_test

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/opencode"
	"github.com/cakeai/cake-agents/agent/opencode/opencodetest"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// TestRealOpenCode drives a real `opencode serve` wired to the fake model: the client's
// JSON shapes must match what OpenCode really sends.
func TestRealOpenCode(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a real OpenCode (drop -short to run it)")
	}
	oc := opencodetest.Start(t, opencodetest.Options{})
	c := oc.Client
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	h, err := c.Health(ctx)
	if err != nil || !h.Healthy || h.Version == "" {
		t.Fatalf("Health = %+v, %v", h, err)
	}

	wrong, err := opencode.New(oc.URL, "wrong-password", nil)
	if err != nil {
		t.Fatal(err)
	}
	var oerr *opencode.Error
	if _, err := wrong.Health(ctx); !errors.As(err, &oerr) || oerr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Health with a wrong password: err = %v, want a 401 *opencode.Error", err)
	}

	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	first, err := events.Next()
	if err != nil || first.Type != "server.connected" {
		t.Fatalf("first event = %+v, %v; want server.connected", first, err)
	}

	prompt := "integration prompt " + t.Name()
	id, err := opencode.DeliverPrompt(ctx, c, "integration", prompt)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "ses_") {
		t.Fatalf("DeliverPrompt returned id %q", id)
	}

	// The events of the turn arrive, ending with the conversation going idle.
	seen := map[string]bool{}
	for !seen["session.idle"] {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("events ended before session.idle (saw %v): %v", seen, err)
		}
		if sid := ev.SessionID(); sid != "" && sid != id {
			continue
		}
		seen[ev.Type] = true
	}
	for _, typ := range []string{"session.status", "message.updated", "message.part.updated"} {
		if !seen[typ] {
			t.Errorf("no %s event during the turn (saw %v)", typ, seen)
		}
	}

	msgs := waitForReply(ctx, t, c, id, fakemodel.Reply(prompt))
	if msgs[0].Role != "user" || msgs[0].Text != prompt {
		t.Fatalf("first message = %+v, want the user's prompt", msgs[0])
	}
	if msgs[0].CreatedAt.Before(time.Now().Add(-time.Hour)) || msgs[0].ID == "" {
		t.Fatalf("first message has no id or a wrong time: %+v", msgs[0])
	}
	if !oc.Model.Received(prompt) {
		t.Fatalf("the model never received the prompt; requests: %+v", oc.Model.Requests())
	}

	sessions, err := c.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 1 || sessions[0].ID != id || sessions[0].Title != "integration" {
		t.Fatalf("Sessions = %+v", sessions)
	}
	st, err := c.Status(ctx)
	if err != nil || len(st) != 0 {
		t.Fatalf("Status after the turn = %v, %v; want idle", st, err)
	}

	// A tool call round trip: the model asks for bash, OpenCode runs it, the model
	// answers with what it saw.
	if err := c.PromptAsync(ctx, id, "run it #tool:bash echo tool-ran-here"); err != nil {
		t.Fatal(err)
	}
	msgs = waitForReply(ctx, t, c, id, fakemodel.ToolResultPrefix+"tool-ran-here")
	var tool *apiv1.ToolCall
	for _, m := range msgs {
		if m.Conversation != id {
			t.Errorf("message %s names conversation %q, want %q", m.ID, m.Conversation, id)
		}
		for i := range m.Tools {
			tool = &m.Tools[i]
		}
	}
	if tool == nil || tool.Tool != "bash" || tool.Status != "completed" || !strings.Contains(tool.Output, "tool-ran-here") || !strings.Contains(string(tool.Input), "echo tool-ran-here") {
		t.Fatalf("the bash call in the messages: %+v", tool)
	}

	// Context added without a reply: stored as a user message the model answers
	// nothing to now, and reads with the next prompt.
	asked := len(oc.Model.Requests())
	if err := c.AddContext(ctx, id, "earlier-context-marker"); err != nil {
		t.Fatal(err)
	}
	if n := len(oc.Model.Requests()); n != asked {
		t.Fatalf("AddContext made the model answer (%d requests, was %d)", n, asked)
	}
	if err := c.PromptAsync(ctx, id, "after the context"); err != nil {
		t.Fatal(err)
	}
	waitForReply(ctx, t, c, id, fakemodel.Reply("after the context"))
	sawContext := false
	for _, r := range oc.Model.Requests() {
		for _, m := range r.Messages {
			sawContext = sawContext || (!r.Title && strings.Contains(m.Content, "earlier-context-marker"))
		}
	}
	if !sawContext {
		t.Fatalf("the model never read the added context: %+v", oc.Model.Requests())
	}

	if got, err := c.GetSession(ctx, id); err != nil || got.ID != id {
		t.Fatalf("GetSession(%s) = %+v, %v", id, got, err)
	}
	if _, err := c.GetSession(ctx, "ses_doesnotexist"); !opencode.IsNotFound(err) {
		t.Fatalf("GetSession of an unknown conversation: %v, want a 404", err)
	}
	if _, err := c.Messages(ctx, "ses_doesnotexist"); err == nil {
		t.Fatal("Messages of an unknown session succeeded")
	}
}

func waitForReply(ctx context.Context, t *testing.T, c *opencode.Client, id, want string) []apiv1.Message {
	t.Helper()
	var msgs []apiv1.Message
	for {
		var err error
		msgs, err = c.Messages(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Role == "assistant" && strings.Contains(m.Text, want) {
				return msgs
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no assistant reply %q; messages: %+v", want, msgs)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestRealOpenCodeBranch: the branch comes from the workspace's HEAD as it is now,
// also after a checkout made while OpenCode runs (its own /vcs misses that).
func TestRealOpenCodeBranch(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a real OpenCode (drop -short to run it)")
	}
	oc := opencodetest.Start(t, opencodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", oc.Workspace, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("commit", "-q", "--allow-empty", "-m", "first")
	git("checkout", "-q", "-b", "cake/fix-the-flaky-test")
	if b, err := oc.Client.Branch(ctx); err != nil || b != "cake/fix-the-flaky-test" {
		t.Fatalf("Branch = %q, %v; want cake/fix-the-flaky-test", b, err)
	}
	git("checkout", "-q", "--detach")
	if b, err := oc.Client.Branch(ctx); err != nil || b != "" {
		t.Fatalf("detached: Branch = %q, %v; want none", b, err)
	}
}

// TestRealOpenCodeRun: a command run through OpenCode's terminals reports its exit code
// (read from the pty.exited event, since OpenCode forgets the terminal at exit), sees the
// environment it is given, and is killed when the caller gives up.
func TestRealOpenCodeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a real OpenCode (drop -short to run it)")
	}
	oc := opencodetest.Start(t, opencodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "trunk"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "first"}} {
		if out, err := exec.Command("git", append([]string{"-C", src}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}

	code, err := oc.Client.Run(ctx, opencode.Command{Path: "git", Args: []string{"clone", "--no-local", "--", src, "cloned"}, Dir: oc.Workspace, Env: map[string]string{"GIT_TERMINAL_PROMPT": "0"}})
	if err != nil || code != 0 {
		t.Fatalf("clone: exit %d, %v", code, err)
	}
	if out, err := exec.Command("git", "-C", oc.Workspace+"/cloned", "rev-parse", "--abbrev-ref", "HEAD").Output(); err != nil || strings.TrimSpace(string(out)) != "trunk" {
		t.Fatalf("the clone is not on trunk: %q, %v", out, err)
	}
	if code, err := oc.Client.Run(ctx, opencode.Command{Path: "git", Args: []string{"clone", "--", src + "-missing", "nothing"}, Dir: oc.Workspace}); err != nil || code == 0 {
		t.Fatalf("clone of a missing repository: exit %d, %v; want a non-zero exit", code, err)
	}
	if code, err := oc.Client.Run(ctx, opencode.Command{Path: "sh", Args: []string{"-c", `exit "$CODE"`}, Env: map[string]string{"CODE": "7"}}); err != nil || code != 7 {
		t.Fatalf("exit 7: got exit %d, %v", code, err)
	}

	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	start := time.Now()
	if _, err := oc.Client.Run(short, opencode.Command{Path: "sleep", Args: []string{"300"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a command outliving its context: err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("Run returned %v after its context ended", d)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-f", "^sleep 300$").Output()
		if len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command of a cancelled Run still runs: pids %s", out)
		}
	}

	if err := oc.Client.Dispose(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Client.Health(ctx); err != nil {
		t.Fatalf("health after Dispose: %v", err)
	}
}
