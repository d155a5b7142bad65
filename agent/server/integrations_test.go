package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/linear"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakelinear"
)

const (
	linearKey    = "lin_api_server_test"
	linearSecret = "linear-webhook-secret"
	teamRepo     = "https://git.example.com/acme/app.git"
)

var linearAgent = fakelinear.User{ID: "u-agent", Name: "cake-agent", DisplayName: "cake", Email: "cake@example.com"}

// replies is the session conversations as the Linear integration sees them: prompts
// sent, and the messages the test says each conversation has (idle).
type replies struct {
	mu       sync.Mutex
	sent     []string
	messages map[string][]apiv1.Message
}

func (r *replies) Send(_ context.Context, s *store.Session, text string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, s.ID+":"+text)
	return nil
}

func (r *replies) Messages(_ context.Context, s *store.Session) ([]apiv1.Message, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]apiv1.Message(nil), r.messages[s.ID]...), nil
}

func (r *replies) Busy(context.Context, *store.Session) (bool, error) { return false, nil }

// answer makes m the newest message of session id's conversation.
func (r *replies) answer(id string, m apiv1.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages[id] = append(r.messages[id], m)
}

func (r *replies) prompts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.sent...)
}

type linearEnv struct {
	*env
	fake *fakelinear.Server
	lin  *linear.Service
	conv *replies
	now  time.Time
}

// newLinearEnv serves the API with the Linear integration on a fake Linear; its
// workers run until the test ends.
func newLinearEnv(t *testing.T, label string) *linearEnv {
	t.Helper()
	fake := fakelinear.New(linearKey, linearAgent)
	t.Cleanup(fake.Close)
	le := &linearEnv{fake: fake, conv: &replies{messages: map[string][]apiv1.Message{}}, now: time.Now()}
	le.env = newEnvWith(t, nil, func(o *Options) {
		le.lin = linear.NewService(linear.Options{
			Client: linear.New(fake.GraphQLURL(), linearKey, nil), Store: o.Store, Sessions: o.Sessions, Conversation: le.conv,
			Authorizer: o.Authorizer, Audit: o.Audit,
			WebhookSecret: linearSecret, Label: label, ExternalURL: "https://agents.example.com", MaxActiveSessions: 3,
			Now: func() time.Time { return le.now }, PollInterval: 20 * time.Millisecond,
			// One worker takes deliveries in order: once a later one is recorded, the
			// earlier ones are done (settle).
			Workers: 1,
		})
		o.Integrations = []Integration{le.lin}
		o.Webhooks = map[string]http.Handler{"POST /integrations/linear/webhook": le.lin}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = le.lin.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return le
}

func (le *linearEnv) deliver(d fakelinear.Delivery) int {
	le.t.Helper()
	code, err := d.Send(context.Background(), le.srv.Client(), le.srv.URL+"/integrations/linear/webhook")
	if err != nil {
		le.t.Fatal(err)
	}
	return code
}

func (le *linearEnv) sessions() []*store.Session {
	le.t.Helper()
	p, err := le.st.ListSessions(context.Background(), store.SessionFilter{})
	if err != nil {
		le.t.Fatal(err)
	}
	return p.Items
}

// eventually waits for cond, which the integration's workers make true asynchronously.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle waits until the worker is done with every delivery sent so far: it takes them
// in order, so once a marker delivery sent last is recorded, the ones before are done.
func (le *linearEnv) settle(marker string) {
	le.t.Helper()
	d := fakelinear.Sign(linearSecret, marker, fakelinear.CommentPayload("i-none", "u-nobody", "marker", le.now))
	if code := le.deliver(d); code != http.StatusOK {
		le.t.Fatalf("marker: %d", code)
	}
	eventually(le.t.(*testing.T), "the marker delivery is recorded", func() bool {
		first, err := le.st.RecordEvent(context.Background(), linear.Source, marker)
		return err == nil && !first
	})
}

func alice() *fakelinear.User {
	return &fakelinear.User{ID: "u-alice", Name: "Alice", DisplayName: "alice", Email: "alice@example.com"}
}

func bob() fakelinear.User {
	return fakelinear.User{ID: "u-bob", Name: "Bob", DisplayName: "bob", Email: "bob@example.com"}
}

func (le *linearEnv) setTeamRepo() {
	le.t.Helper()
	if code, body := le.do("root", "PUT", "/api/v1/integrations/linear/teams/eng", apiv1.LinearTeam{Repo: teamRepo}); code != http.StatusOK {
		le.t.Fatalf("put team: %d %s", code, body)
	}
}

func TestLinearWebhookSignatures(t *testing.T) {
	le := newLinearEnv(t, "")
	le.setTeamRepo()
	iss := fakelinear.Issue{ID: "i-1", Identifier: "ENG-1", Title: "Fix", TeamID: "t", TeamKey: "ENG", Assignee: &linearAgent, Creator: alice()}
	le.fake.AddIssue(iss)
	good := fakelinear.Sign(linearSecret, "d-1", fakelinear.IssuePayload("create", iss, nil, nil, le.now))

	bad := map[string]fakelinear.Delivery{
		"tampered":     good.Tampered(),
		"other secret": fakelinear.Sign("not-the-secret", "d-2", fakelinear.IssuePayload("create", iss, nil, nil, le.now)),
		"stale":        fakelinear.Sign(linearSecret, "d-3", fakelinear.IssuePayload("create", iss, nil, nil, le.now.Add(-2*time.Minute))),
	}
	unsigned := fakelinear.Sign(linearSecret, "d-4", fakelinear.IssuePayload("create", iss, nil, nil, le.now))
	unsigned.Header.Del("Linear-Signature")
	bad["unsigned"] = unsigned
	for name, d := range bad {
		if code := le.deliver(d); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	le.settle("marker-1")
	// Nothing of a refused delivery was stored: its id is new to the store.
	for _, id := range []string{"d-1", "d-2", "d-3", "d-4"} {
		if first, err := le.st.RecordEvent(context.Background(), linear.Source, id); err != nil || !first {
			t.Errorf("delivery %s was recorded (first=%v, %v)", id, first, err)
		}
	}
	if n := len(le.sessions()); n != 0 {
		t.Errorf("%d sessions after refused deliveries", n)
	}
	if c := le.fake.Comments("i-1"); len(c) != 0 {
		t.Errorf("comments after refused deliveries: %+v", c)
	}
	// Without the delivery id header a signed delivery cannot be deduplicated: 400.
	noID := fakelinear.Sign(linearSecret, "d-5", fakelinear.IssuePayload("create", iss, nil, nil, le.now))
	noID.Header.Del("Linear-Delivery")
	if code := le.deliver(noID); code != http.StatusBadRequest {
		t.Errorf("no delivery id: %d", code)
	}
}

func TestLinearAssignmentStartsOneSession(t *testing.T) {
	le := newLinearEnv(t, "")
	le.setTeamRepo()
	iss := fakelinear.Issue{ID: "i-1", Identifier: "ENG-1", Title: "Fix the login", Description: "It fails on Tuesdays.",
		TeamID: "t", TeamKey: "ENG", Assignee: &linearAgent, Creator: alice()}
	le.fake.AddIssue(iss)
	// Bob assigns alice's issue: the session is his (the delivery names him by id, and
	// the fake Linear knows his email).
	le.fake.AddUser(bob())
	assigned := fakelinear.Sign(linearSecret, "d-1", fakelinear.IssuePayload("update", iss, map[string]any{"assigneeId": nil}, &fakelinear.User{ID: "u-bob"}, le.now))
	if code := le.deliver(assigned); code != http.StatusOK {
		t.Fatalf("delivery: %d", code)
	}
	eventually(t, "the issue gets the session's comment", func() bool { return len(le.fake.Comments("i-1")) == 1 })
	// Linear's retry of the same delivery, and another update of the same issue
	// assigning it again: still the one session.
	if code := le.deliver(assigned); code != http.StatusOK {
		t.Fatalf("duplicate: %d", code)
	}
	again := fakelinear.Sign(linearSecret, "d-2", fakelinear.IssuePayload("update", iss, map[string]any{"assigneeId": "u-bob"}, alice(), le.now))
	if code := le.deliver(again); code != http.StatusOK {
		t.Fatalf("again: %d", code)
	}
	le.settle("marker-1")
	ss := le.sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions, want 1", len(ss))
	}
	s := ss[0]
	if s.OwnerID != le.users["bob"].UserID || s.Repo != teamRepo || !strings.HasPrefix(s.Prompt, "Fix the login\n\nIt fails on Tuesdays.") || s.Title != "ENG-1 Fix the login" {
		t.Errorf("session %+v", s)
	}
	comments := le.fake.Comments("i-1")
	if len(comments) != 1 {
		t.Fatalf("comments %+v", comments)
	}
	for _, want := range []string{"kubectl agents attach " + s.ID, "https://agents.example.com/sessions/" + s.ID, teamRepo} {
		if !strings.Contains(comments[0].Body, want) {
			t.Errorf("comment %q lacks %q", comments[0].Body, want)
		}
	}

	// The session runs and answers: its reply goes to the issue, once.
	s.State, s.OpenCodeSessionID = apiv1.StateRunning, "ses_1"
	if err := le.st.UpdateSession(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	le.conv.answer(s.ID, apiv1.Message{ID: "m-2", Role: "assistant", Text: "Fixed: the date parser assumed Monday."})
	eventually(t, "the reply is commented", func() bool { return len(le.fake.Comments("i-1")) == 2 })
	if c := le.fake.Comments("i-1"); !strings.Contains(c[1].Body, "Fixed: the date parser assumed Monday.") {
		t.Fatalf("comments after the reply: %+v", c)
	}

	// A comment mentioning the agent is a prompt to the session from its owner; the
	// agent's own comments and comments not mentioning it are not, and alice (who
	// created the issue, not the session) is told she may not.
	for i, c := range []struct{ user, body string }{
		{"u-bob", "looks good, thanks"},
		{linearAgent.ID, "@cake answered"},
		{"u-bob", "@cake please add a test"},
		{"u-bob", "@cake please add a test"},
		{"u-alice", "@cake delete everything"},
	} {
		if i == 3 {
			i = 2 // Linear's retry of the mention: the same delivery id
		}
		if i == 4 {
			i = 3
		}
		d := fakelinear.Sign(linearSecret, fmt.Sprintf("c-%d", i), fakelinear.CommentPayload("i-1", c.user, c.body, le.now))
		if code := le.deliver(d); code != http.StatusOK {
			t.Fatalf("comment %d: %d", i, code)
		}
	}
	le.settle("marker-2")
	if got := le.conv.prompts(); len(got) != 1 || got[0] != s.ID+":@cake please add a test" {
		t.Errorf("prompts %q", got)
	}
	if c := le.fake.Comments("i-1"); len(c) != 3 || !strings.Contains(c[2].Body, "only its owner") {
		t.Fatalf("alice's mention: %+v", c)
	}
	le.conv.answer(s.ID, apiv1.Message{ID: "m-3", Role: "user", Text: "@cake please add a test"})
	le.conv.answer(s.ID, apiv1.Message{ID: "m-4", Role: "assistant", Text: "Added TestTuesday."})
	eventually(t, "the answer to the comment is commented", func() bool {
		c := le.fake.Comments("i-1")
		return len(c) == 4 && strings.Contains(c[3].Body, "Added TestTuesday.")
	})

	// The session is stopped: its end is commented with its last answer, once.
	if code, body := le.do("bob", "POST", "/api/v1/sessions/"+s.ID+"/stop", nil); code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
	s, err := le.st.GetSession(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	s.State = apiv1.StateStopped // what the controller does once the pod is gone
	if err := le.st.UpdateSession(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the end is commented", func() bool {
		c := le.fake.Comments("i-1")
		return len(c) == 5 && strings.Contains(c[4].Body, "ended (Stopped)") && strings.Contains(c[4].Body, "Added TestTuesday.")
	})
	eventually(t, "the session is no longer followed", func() bool { return len(le.lin.Followed()) == 0 })
	if c := le.fake.Comments("i-1"); len(c) != 5 {
		t.Errorf("comments after the end: %+v", c)
	}
}

func TestLinearLabelAndUnrelatedUpdates(t *testing.T) {
	le := newLinearEnv(t, "agent")
	le.setTeamRepo()
	label := fakelinear.Label{ID: "l-agent", Name: "Agent"}
	bug := fakelinear.Label{ID: "l-bug", Name: "bug"}
	bob := &fakelinear.User{ID: "u-bob", Email: "bob@example.com"}
	plain := fakelinear.Issue{ID: "i-2", Identifier: "ENG-2", Title: "Other", TeamKey: "ENG", Assignee: bob, Creator: alice(), Labels: []fakelinear.Label{bug}}
	labelled := fakelinear.Issue{ID: "i-3", Identifier: "ENG-3", Title: "Labelled", TeamKey: "ENG", Assignee: bob, Creator: alice(), Labels: []fakelinear.Label{bug, label}}
	le.fake.AddIssue(plain)
	le.fake.AddIssue(labelled)
	for i, d := range []map[string]any{
		fakelinear.IssuePayload("update", plain, map[string]any{"title": "old"}, alice(), le.now),
		fakelinear.IssuePayload("update", plain, map[string]any{"assigneeId": nil}, alice(), le.now),
		fakelinear.IssuePayload("update", plain, map[string]any{"labelIds": []string{}}, alice(), le.now),
		fakelinear.IssuePayload("update", labelled, map[string]any{"labelIds": []string{"l-bug"}}, alice(), le.now),
	} {
		if code := le.deliver(fakelinear.Sign(linearSecret, fmt.Sprintf("d-%d", i), d)); code != http.StatusOK {
			t.Fatalf("delivery %d: %d", i, code)
		}
	}
	le.settle("marker")
	eventually(t, "the labelled issue gets its comment", func() bool { return len(le.fake.Comments("i-3")) == 1 })
	ss := le.sessions()
	if len(ss) != 1 || !strings.HasPrefix(ss[0].Title, "ENG-3") || ss[0].OwnerID != le.users["alice"].UserID {
		t.Fatalf("sessions %+v", ss)
	}
	if c := le.fake.Comments("i-2"); len(c) != 0 {
		t.Errorf("the unrelated issue got comments: %+v", c)
	}
}

func TestLinearUnknownUserAndTeamWithoutRepo(t *testing.T) {
	le := newLinearEnv(t, "")
	stranger := &fakelinear.User{ID: "u-x", Email: "stranger@example.com"}
	noRepo := fakelinear.Issue{ID: "i-4", Identifier: "OPS-4", Title: "t", TeamKey: "OPS", Assignee: &linearAgent, Creator: alice()}
	le.fake.AddIssue(noRepo)
	if code := le.deliver(fakelinear.Sign(linearSecret, "d-1", fakelinear.IssuePayload("create", noRepo, nil, alice(), le.now))); code != http.StatusOK {
		t.Fatal(code)
	}
	eventually(t, "the team without a repository is told", func() bool { return len(le.fake.Comments("i-4")) == 1 })
	if c := le.fake.Comments("i-4")[0].Body; !strings.Contains(c, "kubectl agents integrations linear-team OPS --repo https://github.com/org/name") {
		t.Errorf("comment %q", c)
	}

	le.setTeamRepo()
	// The stranger assigns alice's issue: the agent knows alice, not the stranger.
	unknown := fakelinear.Issue{ID: "i-5", Identifier: "ENG-5", Title: "t", TeamKey: "ENG", Assignee: &linearAgent, Creator: alice()}
	le.fake.AddIssue(unknown)
	if code := le.deliver(fakelinear.Sign(linearSecret, "d-2", fakelinear.IssuePayload("create", unknown, nil, stranger, le.now))); code != http.StatusOK {
		t.Fatal(code)
	}
	eventually(t, "the unknown user is told how to get access", func() bool { return len(le.fake.Comments("i-5")) == 1 })
	c := le.fake.Comments("i-5")[0].Body
	for _, want := range []string{"stranger@example.com", "no account", "https://agents.example.com"} {
		if !strings.Contains(c, want) {
			t.Errorf("comment %q lacks %q", c, want)
		}
	}
	if n := len(le.sessions()); n != 0 {
		t.Errorf("%d sessions", n)
	}
}

func TestLinearTeamsAndIntegrations(t *testing.T) {
	le := newLinearEnv(t, "")
	if code, _ := le.do("alice", "PUT", "/api/v1/integrations/linear/teams/ENG", apiv1.LinearTeam{Repo: teamRepo}); code != http.StatusForbidden {
		t.Errorf("non-admin put: %d", code)
	}
	if code, body := le.do("root", "PUT", "/api/v1/integrations/linear/teams/ENG", apiv1.LinearTeam{Repo: "file:///etc"}); code != http.StatusBadRequest || !strings.Contains(string(body), "repo:") {
		t.Errorf("bad repo: %d %s", code, body)
	}
	if code, _ := le.do("root", "PUT", "/api/v1/integrations/linear/teams/EN-G", apiv1.LinearTeam{Repo: teamRepo}); code != http.StatusBadRequest {
		t.Errorf("bad key: %d", code)
	}
	if code, _ := le.do("root", "GET", "/api/v1/integrations/linear/teams/ENG", nil); code != http.StatusNotFound {
		t.Errorf("get unset: %d", code)
	}
	le.setTeamRepo()
	code, body := le.do("root", "GET", "/api/v1/integrations/linear/teams/eng", nil)
	var team apiv1.LinearTeam
	if code != http.StatusOK || json.Unmarshal(body, &team) != nil || team.Key != "ENG" || team.Repo != teamRepo {
		t.Errorf("get: %d %s", code, body)
	}
	// An empty repo removes it, as with Slack's channels; the refusal names the command.
	if code, body := le.do("root", "PUT", "/api/v1/integrations/linear/teams/ENG", apiv1.LinearTeam{}); code != http.StatusOK {
		t.Errorf("put empty: %d %s", code, body)
	}
	if code, body := le.do("root", "GET", "/api/v1/integrations/linear/teams/ENG", nil); code != http.StatusNotFound || !strings.Contains(string(body), "kubectl agents integrations linear-team ENG --repo URL") {
		t.Errorf("get removed: %d %s", code, body)
	}
	le.setTeamRepo()
	// Like a Slack channel's, a team's repository is for admins only, to read too: a
	// refusal names the verb and is audited.
	code, body = le.do("alice", "GET", "/api/v1/integrations/linear/teams/eng", nil)
	if code != http.StatusForbidden || !strings.Contains(string(body), `verb \"*\"`) || strings.Contains(string(body), teamRepo) {
		t.Errorf("non-admin get: %d %s", code, body)
	}
	page, err := le.st.ListAudit(context.Background(), store.AuditFilter{Target: "ENG"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range page.Items {
		actions = append(actions, ev.Actor+" "+ev.Action+" "+ev.Outcome)
	}
	if got := strings.Join(actions, ","); !strings.HasPrefix(got, "alice@example.com integrations.linear.team.get denied,") ||
		!strings.Contains(got, "alice@example.com integrations.linear.team denied") {
		t.Errorf("audit: %v", actions)
	}

	code, body = le.do("alice", "GET", "/api/v1/integrations", nil)
	var list apiv1.IntegrationList
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Items) != 1 {
		t.Fatalf("integrations: %d %s", code, body)
	}
	if it := list.Items[0]; it.Name != "linear" || !it.Configured || !it.Reachable || !strings.Contains(it.Detail, "cake") {
		t.Errorf("integration %+v", it)
	}

	// A key Linear refuses: configured, not reachable, the detail names Linear, never the key.
	wrong := linear.NewService(linear.Options{Client: linear.New(le.fake.GraphQLURL(), "lin_api_revoked", nil), WebhookSecret: "x"})
	it := wrong.Check(context.Background())
	if it.Reachable || !it.Configured || !strings.Contains(it.Detail, "Linear") || strings.Contains(it.Detail, "lin_api_revoked") {
		t.Errorf("refused key: %+v", it)
	}
}
