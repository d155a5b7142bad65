package e2e

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/fakelinear"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// linearAgent is the Linear user of the agent's API key on the fake Linear.
var linearAgent = fakelinear.User{ID: "u-cake-agent", Name: "cake-agent", DisplayName: "cake", Email: "cake-agent@example.com"}

// testLinearAssignment: a signed Linear webhook saying alice assigned an issue to the
// agent starts one session (a retry of the delivery, still one) on the team's
// repository, owned by alice, the delivery's actor (her email read from Linear by her
// id); the fake Linear receives the comment with the session's links and then the
// session's answer; a comment of alice mentioning the agent is a prompt whose answer
// is commented too; once the session is stopped its end is commented with its last
// answer; a forged delivery is refused.
func (p *product) testLinearAssignment(t *testing.T) {
	ctx := context.Background()
	// Alice is known to the agent once she used it.
	p.agents(t, p.alice, "whoami")
	admin, err := p.env.AdminClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// An admin gives the team its repository with the plugin; alice may not.
	if out, err := p.agentsErr(t, p.alice, "integrations", "linear-team", "ENG", "--repo", p.repo); err == nil {
		t.Errorf("alice set team ENG's repository:\n%s", out)
	}
	if out := p.agents(t, p.admin, "integrations", "linear-team", "eng", "--repo", p.repo); !strings.Contains(out, "Linear team ENG: "+p.repo+"\n") {
		t.Errorf("integrations linear-team --repo:\n%s", out)
	}
	if out := p.agents(t, p.admin, "integrations", "list"); !regexp.MustCompile(`(?m)^linear\s+true\s+true\s+true\s`).MatchString(out) {
		t.Errorf("integrations list:\n%s", out)
	}
	if out := p.agents(t, p.alice, "doctor"); !strings.Contains(out, "[ok]   Linear: enabled and reachable: API key of Linear user cake") {
		t.Errorf("doctor:\n%s", out)
	}

	linAlice := fakelinear.User{ID: "u-alice", Name: "Alice", DisplayName: "alice", Email: "alice@example.com"}
	// The fake Linear knows alice's email (as Linear tells an API key of her workspace);
	// the deliveries name her by id, as the actor who assigned and commented.
	p.linear.AddUser(linAlice)
	iss := fakelinear.Issue{ID: "9d0c5c9e-e2e0-4e2e-8e2e-000000000001", Identifier: "ENG-7", Title: "Tidy the README",
		Description: "The README says nothing.", TeamID: "t-eng", TeamKey: "ENG", Assignee: &linearAgent, Creator: &linAlice}
	p.linear.AddIssue(iss)
	webhook := p.env.HTTPURL + "/integrations/linear/webhook"
	deliver := func(d fakelinear.Delivery) int {
		t.Helper()
		code, err := d.Send(ctx, http.DefaultClient, webhook)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	assigned := fakelinear.Sign(p.linearSecret, "e2e-delivery-1", fakelinear.IssuePayload("update", iss, map[string]any{"assigneeId": nil}, &fakelinear.User{ID: linAlice.ID}, time.Now()))
	if code := deliver(assigned.Tampered()); code != http.StatusUnauthorized {
		t.Fatalf("a forged delivery: %d, want 401", code)
	}
	if code := deliver(assigned); code != http.StatusOK {
		t.Fatalf("the delivery: %d", code)
	}
	// Linear retries a delivery it got no answer for in time: the same Linear-Delivery.
	if code := deliver(assigned); code != http.StatusOK {
		t.Fatalf("the retried delivery: %d", code)
	}

	var id string
	eventually(t, 2*time.Minute, "the issue gets the session's links", func() error {
		for _, c := range p.linear.Comments(iss.ID) {
			if m := regexp.MustCompile("kubectl agents attach ([a-z0-9-]+)").FindStringSubmatch(c.Body); m != nil {
				id = m[1]
				return nil
			}
		}
		return errNoYet(p.linear.Comments(iss.ID))
	})
	defer p.agents(t, p.alice, "session", "delete", id)
	sess, err := admin.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if sess.Owner != "alice@example.com" || sess.Repo != p.repo || !strings.HasPrefix(sess.Prompt, "Tidy the README\n\nThe README says nothing.") {
		t.Errorf("the issue's session: owner %s, repo %s, prompt %q", sess.Owner, sess.Repo, sess.Prompt)
	}
	// The session's answer comes back to the issue.
	eventually(t, 3*time.Minute, "the session's answer is commented", func() error {
		for _, c := range p.linear.Comments(iss.ID) {
			if strings.Contains(c.Body, fakemodel.Reply(sess.Prompt)) {
				return nil
			}
		}
		return errNoYet(p.linear.Comments(iss.ID))
	})
	all, err := admin.ListAllSessions(ctx, client.ListOptions{AllUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range all {
		if strings.HasPrefix(s.Title, "ENG-7 ") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d sessions for ENG-7, want 1", n)
	}

	// A comment mentioning the agent is a prompt to the session; its answer is commented.
	mention := "@cake please also add a license"
	if code := deliver(fakelinear.Sign(p.linearSecret, "e2e-delivery-2", fakelinear.CommentPayload(iss.ID, "u-alice", mention, time.Now()))); code != http.StatusOK {
		t.Fatalf("the comment delivery: %d", code)
	}
	eventually(t, 3*time.Minute, "the answer to the mention is commented", func() error {
		for _, c := range p.linear.Comments(iss.ID) {
			if strings.Contains(c.Body, fakemodel.Reply(mention)) {
				return nil
			}
		}
		return errNoYet(p.linear.Comments(iss.ID))
	})

	// Stopped, the session's end is commented once, with its last answer.
	p.agents(t, p.alice, "session", "stop", id)
	ended := "Session `" + id + "` ended (Stopped)."
	eventually(t, 3*time.Minute, "the session's end is commented", func() error {
		for _, c := range p.linear.Comments(iss.ID) {
			if strings.Contains(c.Body, ended) && strings.Contains(c.Body, fakemodel.Reply(mention)) {
				return nil
			}
		}
		return errNoYet(p.linear.Comments(iss.ID))
	})
	time.Sleep(5 * time.Second) // a few looks of the follower: no second summary
	n = 0
	for _, c := range p.linear.Comments(iss.ID) {
		if strings.Contains(c.Body, ended) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d comments of the session's end, want 1: %v", n, errNoYet(p.linear.Comments(iss.ID)))
	}
}

// errNoYet reports the comments so far.
func errNoYet(cs []fakelinear.Comment) error {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString("\n---\n" + c.Body)
	}
	return fmt.Errorf("comments so far:%s", b.String())
}
