package vcs

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakegithub"
)

// workspace plays a session's OpenCode: the branch its workspace is on.
type workspace struct {
	branch string
	asked  int
}

func (w *workspace) Branch(context.Context, *store.Session) (string, error) {
	w.asked++
	return w.branch, nil
}

// secretToken plays the session's Secret: the token it holds.
type secretToken string

func (s secretToken) GitToken(context.Context, *store.Session) (string, error) { return string(s), nil }

// TestRefreshFollowsBranchAndPullRequest: the branch of a running session is recorded
// as it changes; its pull request is found on (the fake) GitHub with the session's own
// token once opened — asked again only after Recheck by the watcher's clock — and kept;
// a stopped session shows what was last recorded without asking its (gone) OpenCode.
func TestRefreshFollowsBranchAndPullRequest(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	s := &store.Session{ID: "abc12", OwnerID: u.ID, Repo: "https://github.com/acme/widgets.git", State: apiv1.StateRunning}
	if err := st.CreateSession(ctx, s, 0); err != nil {
		t.Fatal(err)
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	gh := fakegithub.New("unused")
	gh.AddApp(42, &key.PublicKey)
	gh.Install(42, "acme")
	srv := httptest.NewServer(gh)
	defer srv.Close()
	api := github.APIURL(srv.URL)
	tok, err := (&github.App{APIURL: api, ID: 42, Key: key, HTTP: srv.Client()}).Token(ctx, "acme", "widgets")
	if err != nil {
		t.Fatal(err)
	}

	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ws := &workspace{branch: "main"}
	w := &Watcher{Branches: ws, Tokens: secretToken(tok.Token), Store: st, GitHubHost: "github.com", APIURL: api, HTTP: srv.Client(),
		Now: func() time.Time { return now }}
	look := func(wantBranch, wantPR string) {
		t.Helper()
		v, err := w.Refresh(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if v == nil || v.Branch != wantBranch || v.PullRequestURL != wantPR {
			t.Fatalf("Refresh = %+v, want branch %q and pull request %q", v, wantBranch, wantPR)
		}
		if got, err := st.GetSessionVCS(ctx, s.ID); err != nil || *got != *v {
			t.Fatalf("recorded %+v, %v; want %+v", got, err, v)
		}
	}
	look("main", "")
	ws.branch = "cake/fix-flaky-test"
	look("cake/fix-flaky-test", "")
	pr := gh.OpenPullRequest("acme", "widgets", "cake/fix-flaky-test")
	now = now.Add(DefaultRecheck - time.Second)
	look("cake/fix-flaky-test", "") // not asked again yet
	now = now.Add(time.Second)
	look("cake/fix-flaky-test", pr)
	// Found: kept without asking GitHub (the token gone proves it).
	w.Tokens = secretToken("")
	now = now.Add(time.Hour)
	look("cake/fix-flaky-test", pr)

	s.State = apiv1.StateStopped
	asked := ws.asked
	ws.branch = "other"
	look("cake/fix-flaky-test", pr)
	if ws.asked != asked {
		t.Error("a stopped session's OpenCode was asked for its branch")
	}
}

// TestRefreshOtherHosts: a repository elsewhere than GitHub gets its branch only, and
// a session never looked at while stopped has nothing to show.
func TestRefreshOtherHosts(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	s := &store.Session{ID: "abc12", OwnerID: u.ID, Repo: "https://git.example.com/acme/widgets.git", State: apiv1.StateStopped}
	if err := st.CreateSession(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	w := &Watcher{Branches: &workspace{branch: "feature"}, Tokens: tokenFails{}, Store: st, GitHubHost: "github.com", APIURL: "http://127.0.0.1:1"}
	if v, err := w.Refresh(ctx, s); v != nil || err != nil {
		t.Fatalf("stopped, never seen: %+v, %v", v, err)
	}
	s.State = apiv1.StateRunning
	v, err := w.Refresh(ctx, s)
	if err != nil || v == nil || v.Branch != "feature" || v.PullRequestURL != "" {
		t.Fatalf("Refresh = %+v, %v; want the branch only", v, err)
	}
}

type tokenFails struct{}

func (tokenFails) GitToken(context.Context, *store.Session) (string, error) {
	return "", errors.New("the token must not be read for a repository elsewhere")
}
