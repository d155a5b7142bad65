package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/vcs"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakegithub"
)

// branchOf plays the session's OpenCode: the branch its workspace is on.
type branchOf string

func (b branchOf) Branch(context.Context, *store.Session) (string, error) { return string(b), nil }

type linkedToken string

func (l linkedToken) GitToken(context.Context, *store.Session) (string, error) { return string(l), nil }

// TestGetSessionShowsBranchAndPullRequest: GET of a running session shows the branch
// its workspace is on and the pull request opened from it (found on the fake GitHub
// with the session's token); a list does not look; the stopped session shows what was
// last seen.
func TestGetSessionShowsBranchAndPullRequest(t *testing.T) {
	gh := fakegithub.New("unused")
	gh.AddUserToken("gho_alice")
	ghSrv := httptest.NewServer(gh)
	defer ghSrv.Close()
	e := newEnvWith(t, nil, func(o *Options) {
		o.Workspaces = &vcs.Watcher{Branches: branchOf("cake/fix-flaky-test"), Tokens: linkedToken("gho_alice"), Store: o.Store,
			GitHubHost: "github.com", APIURL: ghSrv.URL + "/api/v3", HTTP: ghSrv.Client()}
	})
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://github.com/acme/widgets.git"})
	pr := gh.OpenPullRequest("acme", "widgets", "cake/fix-flaky-test")
	setState := func(st apiv1.SessionState) {
		t.Helper()
		cur, err := e.st.GetSession(t.Context(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		cur.State = st
		if err := e.st.UpdateSession(t.Context(), cur); err != nil {
			t.Fatal(err)
		}
	}
	get := func() apiv1.Session {
		t.Helper()
		code, body := e.do("alice", "GET", "/api/v1/sessions/"+s.ID, nil)
		var out apiv1.Session
		if code != http.StatusOK || json.Unmarshal(body, &out) != nil {
			t.Fatalf("get: %d %s", code, body)
		}
		return out
	}
	if got := get(); got.CurrentBranch != "" || got.PullRequestURL != "" {
		t.Errorf("a session not running yet shows %q %q", got.CurrentBranch, got.PullRequestURL)
	}
	setState(apiv1.StateRunning)
	if got := get(); got.CurrentBranch != "cake/fix-flaky-test" || got.PullRequestURL != pr {
		t.Errorf("running: branch %q, pull request %q; want cake/fix-flaky-test and %s", got.CurrentBranch, got.PullRequestURL, pr)
	}
	code, body := e.do("alice", "GET", "/api/v1/sessions", nil)
	var list apiv1.SessionList
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Items) != 1 || list.Items[0].PullRequestURL != "" {
		t.Errorf("list: %d %s", code, body)
	}
	setState(apiv1.StateStopped)
	if got := get(); got.CurrentBranch != "cake/fix-flaky-test" || got.PullRequestURL != pr {
		t.Errorf("stopped: branch %q, pull request %q; want what was last seen", got.CurrentBranch, got.PullRequestURL)
	}
}

// stuckBranch plays a session's OpenCode that never answers (busy starting, or its
// tunnel gone quiet): Branch returns only when its context ends.
type stuckBranch struct{}

func (stuckBranch) Branch(ctx context.Context, _ *store.Session) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// TestGetSessionBranchIsBounded: GET of a running session whose OpenCode does not
// answer still answers, with the branch last seen, once detailTimeout runs out; the
// request's own context would otherwise hold it as long as the caller waits.
func TestGetSessionBranchIsBounded(t *testing.T) {
	var st store.Store
	e := newEnvWith(t, nil, func(o *Options) {
		st = o.Store
		o.Workspaces = &vcs.Watcher{Branches: stuckBranch{}, Tokens: linkedToken(""), Store: o.Store}
	})
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://github.com/acme/widgets.git"})
	cur, err := st.GetSession(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.State = apiv1.StateRunning
	if err := st.UpdateSession(t.Context(), cur); err != nil {
		t.Fatal(err)
	}
	if err := st.PutSessionVCS(t.Context(), &store.SessionVCS{SessionID: s.ID, Branch: "cake/seen-before", CheckedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	var body []byte
	go func() {
		defer close(done)
		code, body = e.do("alice", "GET", "/api/v1/sessions/"+s.ID, nil)
	}()
	select {
	case <-done:
	case <-time.After(detailTimeout + 20*time.Second):
		t.Fatalf("GET of a session whose OpenCode does not answer still waits after %s", detailTimeout+20*time.Second)
	}
	var out apiv1.Session
	if code != http.StatusOK || json.Unmarshal(body, &out) != nil || out.CurrentBranch != "cake/seen-before" {
		t.Errorf("GET: %d %s; want 200 with the branch last seen", code, body)
	}
}
