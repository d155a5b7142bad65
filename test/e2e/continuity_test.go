package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/syncbuf"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// modelSaw waits until the fake model was asked to answer a request whose last user
// message contains prompt, and returns every message of that request (what OpenCode
// sent the model as the conversation so far).
func (p *product) modelSaw(t *testing.T, prompt string) []fakemodel.Message {
	t.Helper()
	var msgs []fakemodel.Message
	eventually(t, 2*time.Minute, "the model asked about "+prompt, func() error {
		for _, r := range p.env.Model.Requests() {
			if !r.Title && strings.Contains(r.LastUserText(), prompt) {
				msgs = r.Messages
				return nil
			}
		}
		return fmt.Errorf("no request for %q yet", prompt)
	})
	return msgs
}

// seedMark starts the digest a conversation started afresh is seeded with.
const seedMark = "This conversation continues an earlier one"

func contentHas(msgs []fakemodel.Message, text string) bool {
	for _, m := range msgs {
		if strings.Contains(m.Content, text) {
			return true
		}
	}
	return false
}

// testFreshConversationSeeded: a session without a persistent volume loses its OpenCode
// at stop; its recorded transcript is readable while it is stopped, and at start the
// agent begins a new conversation seeded with a digest of it, so the model still knows
// what was said before (the prompt after the restart carries it).
func (p *product) testFreshConversationSeeded(t *testing.T) {
	id := lastField(p.agents(t, p.alice, "session", "create", "--title", "forgetful", "--wait", "-o", "name"))
	defer func() { _, _ = p.agentsErr(t, p.alice, "session", "delete", id) }()
	word := "papaya-" + id
	p.send(t, p.alice, id, "remember the word "+word)
	p.waitReply(t, p.alice, id, "remember the word "+word)

	p.agents(t, p.alice, "session", "stop", id)
	p.waitState(t, p.alice, id, apiv1.StateStopped)
	if out := p.agents(t, p.alice, "session", "logs", id); !strings.Contains(out, fakemodel.Reply("remember the word "+word)) {
		t.Fatalf("a stopped session's logs lack its conversation:\n%s", out)
	}

	out := p.agents(t, p.alice, "session", "start", id)
	if !strings.Contains(out, "new conversation seeded with a digest") {
		t.Errorf("session start does not say the conversation starts afresh:\n%s", out)
	}
	p.waitState(t, p.alice, id, apiv1.StateRunning)
	question := "what was the word, " + id + "?"
	p.send(t, p.alice, id, question)
	p.waitReply(t, p.alice, id, question)
	saw := p.modelSaw(t, question)
	if !contentHas(saw, seedMark) || !contentHas(saw, "remember the word "+word) {
		t.Fatalf("the model's request after the restart lacks the digest of the earlier conversation: %+v", saw)
	}
	// The logs show both conversations, the earlier one first.
	logs := p.agents(t, p.alice, "session", "logs", id)
	if i, j := strings.Index(logs, fakemodel.Reply("remember the word "+word)), strings.Index(logs, fakemodel.Reply(question)); i < 0 || j < i {
		t.Fatalf("logs after the restart:\n%s", logs)
	}
}

// testFork: a fork runs on the source's repository and its first prompt reaches the
// model with the source's conversation before it (a digest of the transcript).
func (p *product) testFork(t *testing.T) {
	src := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--title", "original", "--wait", "-o", "name"))
	defer func() { _, _ = p.agentsErr(t, p.alice, "session", "delete", src) }()
	word := "mango-" + src
	p.send(t, p.alice, src, "remember the word "+word)
	p.waitReply(t, p.alice, src, "remember the word "+word)
	question := "which word did you keep, " + src + "?"
	// Right after the reply: the fork reads what is not recorded yet from the source itself.
	fork := lastField(p.agents(t, p.alice, "session", "fork", src, "--prompt", question, "--wait", "-o", "name"))
	defer func() { _, _ = p.agentsErr(t, p.alice, "session", "delete", fork) }()
	if got := strings.TrimSpace(p.agents(t, p.alice, "session", "get", fork, "-o", "jsonpath={.forkedFrom} {.repo} {.title}")); got != src+" "+p.repo+" fork of original" {
		t.Fatalf("the fork: %q", got)
	}
	p.waitReply(t, p.alice, fork, question)
	saw := p.modelSaw(t, question)
	if !contentHas(saw, "is a fork of session "+src) || !contentHas(saw, "remember the word "+word) {
		t.Fatalf("the fork's first request lacks the source's conversation: %+v", saw)
	}
}

// testFollowAcrossAgentRestart: `session logs -f` keeps following through an agent
// killed and started again, printing every word of the conversation exactly once, and
// ends when the session stops.
func (p *product) testFollowAcrossAgentRestart(t *testing.T) {
	ctx := context.Background()
	id := lastField(p.agents(t, p.alice, "session", "create", "--title", "followed", "--wait", "-o", "name"))
	defer func() { _, _ = p.agentsErr(t, p.alice, "session", "delete", id) }()
	first, second := "first words "+id, "second words "+id
	p.send(t, p.alice, id, first)
	p.waitReply(t, p.alice, id, first)

	cmd := exec.Command(p.x.kubectl, "agents", "session", "logs", "-f", id, "--agent-namespace", p.ns)
	cmd.Env = append(os.Environ(), "PATH="+p.x.path(), "KUBECONFIG="+p.alice, "HOME="+t.TempDir())
	var stdout, stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	waitOutput := func(want string) {
		t.Helper()
		eventually(t, 2*time.Minute, "logs -f prints "+want, func() error {
			if !strings.Contains(stdout.String(), want) {
				return fmt.Errorf("stdout so far:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
			return nil
		})
	}
	waitOutput(fakemodel.Reply(first))

	p.env.StopAgent(true) // SIGKILL: the stream drops without a goodbye
	if err := p.env.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	p.send(t, p.alice, id, second)
	waitOutput(fakemodel.Reply(second))

	p.agents(t, p.alice, "session", "stop", id)
	select {
	case <-exited:
		if waitErr == nil || !strings.Contains(stderr.String(), "no longer running") {
			t.Errorf("logs -f after the stop: %v\nstderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("logs -f still running 2 minutes after the session stopped:\n%s", stderr.String())
	}
	out := stdout.String()
	// The prompt appears in the user's message and in the model's reply to it.
	for _, words := range []string{first, second} {
		if n := strings.Count(out, words); n != 2 {
			t.Errorf("%q printed %d times, want 2 (the prompt and the reply):\n%s", words, n, out)
		}
	}
	if !strings.Contains(stderr.String(), "resumed following") {
		t.Errorf("no resume reported on stderr:\n%s", stderr.String())
	}
}

// testDeletedTranscript: a persistent session's conversation survives stop and start
// inside OpenCode itself (the prompt after the restart reaches the model with the
// earlier messages, not a digest), and after the delete `session logs` still prints
// it, tool calls included.
func (p *product) testDeletedTranscript(t *testing.T, id, word string) {
	if out := p.agents(t, p.alice, "session", "logs", id); !strings.Contains(out, "remember the word "+word) || !strings.Contains(out, "was deleted") {
		t.Fatalf("a deleted session's logs:\n%s", out)
	}
	md := p.agents(t, p.alice, "session", "logs", id, "-o", "markdown")
	if !strings.Contains(md, "**bash**") || !strings.Contains(md, "halfway there") {
		t.Fatalf("a deleted session's transcript as markdown lacks the tool call:\n%s", md)
	}
}

// checkSameConversation fails unless the model's request for prompt carried the earlier
// prompt itself (the same OpenCode conversation), not the digest a new one is seeded with.
func (p *product) checkSameConversation(t *testing.T, prompt, earlier string) {
	t.Helper()
	saw := p.modelSaw(t, prompt)
	if !contentHas(saw, earlier) {
		t.Fatalf("the model's request for %q lacks the earlier prompt %q: the conversation was lost at the restart: %+v", prompt, earlier, saw)
	}
	if contentHas(saw, seedMark) {
		t.Fatalf("the conversation was replaced by a seeded one: %+v", saw)
	}
}
