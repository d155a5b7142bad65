package linear_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/linear"
	"github.com/cakeai/cake-agents/test/fakelinear"
)

const key = "lin_api_secretkey"

var agentUser = fakelinear.User{ID: "u-agent", Name: "cake-agent", DisplayName: "cake", Email: "agent@example.com"}

func TestClient(t *testing.T) {
	fake := fakelinear.New(key, agentUser)
	defer fake.Close()
	alice := &fakelinear.User{ID: "u-alice", Name: "Alice", DisplayName: "alice", Email: "alice@example.com"}
	fake.AddIssue(fakelinear.Issue{ID: "i-1", Identifier: "ENG-1", Title: "Fix it", Description: "the thing", TeamID: "t-1", TeamKey: "ENG",
		Labels: []fakelinear.Label{{ID: "l-1", Name: "Agent"}}, Assignee: alice, Creator: alice})
	c := linear.New(fake.GraphQLURL(), key, nil)
	ctx := context.Background()

	v, err := c.Viewer(ctx)
	if err != nil || v.ID != "u-agent" || v.DisplayName != "cake" {
		t.Fatalf("Viewer = %+v, %v", v, err)
	}
	iss, err := c.Issue(ctx, "ENG-1")
	if err != nil {
		t.Fatal(err)
	}
	if iss.ID != "i-1" || iss.Team.Key != "ENG" || iss.Description != "the thing" || iss.Assignee.Email != "alice@example.com" || iss.Creator.ID != "u-alice" {
		t.Errorf("Issue = %+v", iss)
	}
	if !iss.HasLabel("agent") || iss.HasLabel("bug") {
		t.Errorf("labels %+v", iss.Labels)
	}
	// A user by id, with the email the agent maps people by; an unknown id is an error.
	u, err := c.User(ctx, "u-alice")
	if err != nil || u.Email != "alice@example.com" || u.DisplayName != "alice" {
		t.Errorf("User = %+v, %v", u, err)
	}
	if _, err := c.User(ctx, "u-nobody"); err == nil || !strings.Contains(err.Error(), "linear: read user u-nobody") {
		t.Errorf("unknown user: %v", err)
	}
	id, err := c.CommentCreate(ctx, "i-1", "hello **there**")
	if err != nil || id == "" {
		t.Fatalf("CommentCreate = %q, %v", id, err)
	}
	if got := fake.Comments("i-1"); len(got) != 1 || got[0].Body != "hello **there**" {
		t.Errorf("comments %+v", got)
	}

	if _, err := c.Issue(ctx, "ENG-404"); err == nil || !strings.Contains(err.Error(), "linear: read issue ENG-404") {
		t.Errorf("missing issue: %v", err)
	}
}

func TestClientBadKeyNamesLinearNotTheKey(t *testing.T) {
	fake := fakelinear.New(key, agentUser)
	defer fake.Close()
	wrong := "lin_api_wrongkey"
	_, err := linear.New(fake.GraphQLURL(), wrong, nil).Viewer(context.Background())
	if !errors.Is(err, linear.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), "Linear") || strings.Contains(err.Error(), wrong) {
		t.Errorf("error %q must name Linear and never the key", err)
	}
	// Unreachable: the error names the endpoint, not the key.
	_, err = linear.New("http://127.0.0.1:1/graphql", wrong, nil).Viewer(context.Background())
	if err == nil || strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), "linear:") {
		t.Errorf("unreachable: %v", err)
	}
}

func TestVerify(t *testing.T) {
	secret := "whsec"
	now := time.Unix(1_800_000_000, 0)
	iss := fakelinear.Issue{ID: "i-1", Identifier: "ENG-1", Title: "t", Assignee: &agentUser}
	d := fakelinear.Sign(secret, "d-1", fakelinear.IssuePayload("create", iss, nil, nil, now.Add(-10*time.Second)))

	w, err := linear.Verify([]byte(secret), d.Body, d.Header.Get(linear.SignatureHeader), now)
	if err != nil || w.Type != "Issue" || w.Action != "create" {
		t.Fatalf("good delivery: %+v, %v", w, err)
	}
	if w.Actor != nil || w.Actor.Person() {
		t.Errorf("a delivery without an actor: %+v", w.Actor)
	}
	bob := fakelinear.User{ID: "u-bob", Name: "Bob", Email: "bob@example.com"}
	d2 := fakelinear.Sign(secret, "d-2", fakelinear.IssuePayload("create", iss, nil, &bob, now))
	w, err = linear.Verify([]byte(secret), d2.Body, d2.Header.Get(linear.SignatureHeader), now)
	if err != nil || w.Actor == nil || w.Actor.ID != "u-bob" || w.Actor.Email != "bob@example.com" || !w.Actor.Person() {
		t.Fatalf("the actor: %+v, %v", w.Actor, err)
	}
	if (&linear.Actor{ID: "app-1", Type: "OauthClient"}).Person() {
		t.Error("an OAuth application is taken for a person")
	}
	for name, c := range map[string]struct {
		secret, sig string
		body        []byte
		at          time.Time
		want        error
	}{
		"wrong secret":    {"other", d.Header.Get(linear.SignatureHeader), d.Body, now, linear.ErrBadSignature},
		"no signature":    {secret, "", d.Body, now, linear.ErrBadSignature},
		"not hex":         {secret, "zz", d.Body, now, linear.ErrBadSignature},
		"tampered body":   {secret, d.Header.Get(linear.SignatureHeader), d.Tampered().Body, now, linear.ErrBadSignature},
		"no secret set":   {"", linear.Sign(nil, d.Body), d.Body, now, linear.ErrBadSignature},
		"stale":           {secret, d.Header.Get(linear.SignatureHeader), d.Body, now.Add(2 * time.Minute), linear.ErrStale},
		"from the future": {secret, d.Header.Get(linear.SignatureHeader), d.Body, now.Add(-2 * time.Minute), linear.ErrStale},
	} {
		if _, err := linear.Verify([]byte(c.secret), c.body, c.sig, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	if got := linear.Sign([]byte(secret), d.Body); got != d.Header.Get(linear.SignatureHeader) {
		t.Errorf("Sign = %s, the fake signed %s", got, d.Header.Get(linear.SignatureHeader))
	}
}

func TestIssueStarts(t *testing.T) {
	now := time.Now()
	bob := &fakelinear.User{ID: "u-bob"}
	agentLabel := fakelinear.Label{ID: "l-agent", Name: "Agent"}
	bug := fakelinear.Label{ID: "l-bug", Name: "bug"}
	issue := func(assignee *fakelinear.User, labels ...fakelinear.Label) fakelinear.Issue {
		return fakelinear.Issue{ID: "i-1", Identifier: "ENG-1", Title: "t", Assignee: assignee, Labels: labels}
	}
	for name, c := range map[string]struct {
		action string
		iss    fakelinear.Issue
		from   map[string]any
		label  string
		want   bool
	}{
		"created assigned to the agent":        {"create", issue(&agentUser), nil, "", true},
		"created assigned to someone else":     {"create", issue(bob), nil, "", false},
		"created with the label":               {"create", issue(nil, agentLabel), nil, "agent", true},
		"created with the label, none configd": {"create", issue(nil, agentLabel), nil, "", false},
		"assigned to the agent from bob":       {"update", issue(&agentUser), map[string]any{"assigneeId": "u-bob"}, "", true},
		"assigned to the agent from no one":    {"update", issue(&agentUser), map[string]any{"assigneeId": nil}, "", true},
		"assigned to bob":                      {"update", issue(bob), map[string]any{"assigneeId": nil}, "", false},
		"title edit of the agent's issue":      {"update", issue(&agentUser), map[string]any{"title": "old"}, "", false},
		"label added":                          {"update", issue(nil, bug, agentLabel), map[string]any{"labelIds": []string{"l-bug"}}, "agent", true},
		"other label added":                    {"update", issue(nil, bug, agentLabel), map[string]any{"labelIds": []string{"l-agent"}}, "agent", false},
		"unrelated label":                      {"update", issue(nil, bug), map[string]any{"labelIds": []string{}}, "agent", false},
		"removed":                              {"remove", issue(&agentUser), nil, "agent", false},
	} {
		d := fakelinear.Sign("s", "d", fakelinear.IssuePayload(c.action, c.iss, c.from, nil, now))
		w, err := linear.Verify([]byte("s"), d.Body, d.Header.Get(linear.SignatureHeader), now)
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.IssueStarts(agentUser.ID, c.label)
		if err != nil || got != c.want {
			t.Errorf("%s: IssueStarts = %v, %v; want %v", name, got, err, c.want)
		}
	}
}

func TestCommentAndMentions(t *testing.T) {
	now := time.Now()
	d := fakelinear.Sign("s", "d", fakelinear.CommentPayload("i-1", "u-alice", "@cake please add tests", now))
	w, err := linear.Verify([]byte("s"), d.Body, d.Header.Get(linear.SignatureHeader), now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.Comment()
	if err != nil || c.IssueID != "i-1" || c.UserID != "u-alice" || c.Body != "@cake please add tests" {
		t.Fatalf("Comment = %+v, %v", c, err)
	}
	v := &linear.User{ID: "u-agent", Name: "cake-agent", DisplayName: "cake"}
	for body, want := range map[string]bool{
		"@cake please add tests":                          true,
		"thanks @cake.":                                   true,
		"hey @Cake-Agent, look":                           true,
		"see [@cake](https://linear.app/x/profiles/cake)": true,
		"@cakes are great":                                false,
		"mail cake@example.com":                           false,
		"no mention of the agent":                         false,
	} {
		if got := linear.Mentions(body, v); got != want {
			t.Errorf("Mentions(%q) = %v, want %v", body, got, want)
		}
	}
	var raw map[string]any
	_ = json.Unmarshal(d.Body, &raw)
	if raw["type"] != "Comment" {
		t.Errorf("payload type %v", raw["type"])
	}
}
