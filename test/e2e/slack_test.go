package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/fakemodel"
	"github.com/cakeai/cake-agents/test/fakeslack"
)

var slackSessionRe = regexp.MustCompile("Session `([a-z0-9-]+)` is")

// testSlackMention: a signed app_mention in a channel whose default repository an admin
// set starts one session owned by the user with the Slack user's email, delivered again
// as Slack's retry still one; the status message in the thread names the session and
// the fake model's answer is posted in the thread; a reply in the thread is a prompt to
// that session, answered there too; a request with a bad signature is refused.
func (p *product) testSlackMention(t *testing.T) {
	ctx := context.Background()
	// Alice has used the agent (it knows her), and her Slack profile has her email.
	p.agents(t, p.alice, "whoami")
	p.slack.AddUser("UALICE", "alice@example.com")
	admin, err := p.env.AdminClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	channel := fmt.Sprintf("C0E2E%d", time.Now().UnixNano()%1000000)
	if out := p.agents(t, p.admin, "integrations", "slack-channel", channel, "--repo", p.repo); !strings.Contains(out, "Slack channel "+channel+": "+p.repo+"\n") {
		t.Errorf("integrations slack-channel --repo:\n%s", out)
	}
	if out := p.agents(t, p.admin, "integrations", "slack-channel", channel, "-o", "json"); !strings.Contains(out, `"repo": "`+p.repo+`"`) {
		t.Errorf("integrations slack-channel -o json:\n%s", out)
	}
	events := p.env.HTTPURL + "/integrations/slack/events"
	deliver := func(body []byte, secret string, retry int) int {
		t.Helper()
		req, err := fakeslack.Request(events, secret, body, time.Now(), retry)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	ts := fmt.Sprintf("%d.000100", time.Now().Unix())
	prompt := "say hello from slack"
	mention := fakeslack.Event{EventID: "Ev" + ts, Type: "app_mention", User: "UALICE", Text: "<@U0BOT> " + prompt, Channel: channel, TS: ts}
	if code := deliver(mention.Body(), p.slackSecret, 0); code != http.StatusOK {
		t.Fatalf("mention: %d", code)
	}
	// Slack did not see the answer in time, it says, and sends it again.
	if code := deliver(mention.Body(), p.slackSecret, 1); code != http.StatusOK {
		t.Fatalf("retry: %d", code)
	}
	// Not Slack's: refused.
	forged := mention
	forged.EventID, forged.TS, forged.Text = "EvForged"+ts, ts+"1", "<@U0BOT> forged prompt"
	if code := deliver(forged.Body(), "not-the-signing-secret", 0); code != http.StatusUnauthorized {
		t.Errorf("bad signature: %d, want 401", code)
	}

	var id string
	eventually(t, 3*time.Minute, "the model's answer in the Slack thread", func() error {
		thread := p.slack.Messages(channel, ts)
		if len(thread) == 0 {
			return fmt.Errorf("no message in the thread")
		}
		m := slackSessionRe.FindStringSubmatch(thread[0].Text)
		if m == nil {
			return fmt.Errorf("first message is not a status: %q", thread[0].Text)
		}
		id = m[1]
		for _, msg := range thread[1:] {
			if msg.Text == fakemodel.Reply(prompt) {
				return nil
			}
		}
		return fmt.Errorf("thread so far: %+v", thread)
	})
	defer p.agents(t, p.alice, "session", "delete", id)
	thread := p.slack.Messages(channel, ts)
	if status := thread[0].Text; !strings.Contains(status, "`kubectl agents attach "+id+"`") || !strings.Contains(status, "*Running*") {
		t.Errorf("status message: %q", status)
	}
	// One session, Alice's, public, on the channel's repository.
	page, err := admin.ListSessions(ctx, client.ListOptions{AllUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range page.Items {
		if s.Title == prompt {
			n++
			if s.ID != id || s.Private || s.Repo != p.repo || s.Owner != "alice@example.com" {
				t.Errorf("session %+v", s)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d sessions from the mention, want 1", n)
	}
	for _, s := range page.Items {
		if s.Title == "forged prompt" {
			t.Errorf("the forged request started session %s", s.ID)
		}
	}
	if got := p.slack.Messages(channel, forged.TS); len(got) != 0 {
		t.Errorf("the forged request was answered: %+v", got)
	}

	// A reply in the thread, without a mention, is the session's next prompt.
	follow := fakeslack.Event{EventID: "EvF" + ts, Type: "message", ChannelType: "channel", User: "UALICE", Text: "and goodbye", Channel: channel,
		TS: fmt.Sprintf("%d.000200", time.Now().Unix()), ThreadTS: ts}
	if code := deliver(follow.Body(), p.slackSecret, 0); code != http.StatusOK {
		t.Fatalf("reply: %d", code)
	}
	eventually(t, 2*time.Minute, "the answer to the reply in the thread", func() error {
		for _, msg := range p.slack.Messages(channel, ts) {
			if msg.Text == fakemodel.Reply("and goodbye") {
				return nil
			}
		}
		return fmt.Errorf("thread so far: %+v", p.slack.Messages(channel, ts))
	})
	p.waitReply(t, p.alice, id, "and goodbye")
}
