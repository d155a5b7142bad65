package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/github"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakegithub"
)

// TestGitHubLink: the agent brokers GitHub's device flow (against a local server speaking
// its documented endpoints): the caller gets the user code, never the device code; polls
// are pending until the user approves, then the token is the caller's github.com
// credential. A flow is its starter's only; a declined one ends; an unconfigured agent
// says what the admin sets.
func TestGitHubLink(t *testing.T) {
	gh := fakegithub.New("Iv1.test")
	ghSrv := httptest.NewServer(gh)
	defer ghSrv.Close()
	e := newEnvWith(t, denyAuthorizer{}, func(o *Options) {
		o.GitHub = &github.DeviceFlow{BaseURL: ghSrv.URL, ClientID: "Iv1.test", Scope: "repo", HTTP: ghSrv.Client()}
	})
	start := func(user string) apiv1.GitHubLink {
		t.Helper()
		code, body := e.do(user, "POST", "/api/v1/github/link", nil)
		var l apiv1.GitHubLink
		if code != http.StatusCreated || json.Unmarshal(body, &l) != nil {
			t.Fatalf("start: %d %s", code, body)
		}
		return l
	}
	poll := func(user, id string) (int, apiv1.GitHubLinkStatus) {
		t.Helper()
		code, body := e.do(user, "POST", "/api/v1/github/link/"+id, nil)
		var st apiv1.GitHubLinkStatus
		_ = json.Unmarshal(body, &st)
		return code, st
	}

	l := start("alice")
	// Another replica (a new Server on the same database) answers the polls: the web UI
	// reaches the agent through its Service.
	e.srv.Config.Handler = replica(e)
	if l.UserCode == "" || l.VerificationURI != "https://github.com/login/device" || l.Interval != 1 || l.ExpiresAt.Before(time.Now()) {
		t.Errorf("link %+v", l)
	}
	if code, st := poll("alice", l.ID); code != http.StatusOK || st.Status != apiv1.GitHubLinkPending || st.Interval != 1 {
		t.Errorf("before approval: %d %+v", code, st)
	}
	gh.SlowDown(l.UserCode)
	if _, st := poll("alice", l.ID); st.Status != apiv1.GitHubLinkPending || st.Interval != 6 {
		t.Errorf("after slow_down: %+v, want pending every 6s", st)
	}
	if code, _ := poll("bob", l.ID); code != http.StatusNotFound {
		t.Errorf("bob polls alice's flow: %d", code)
	}
	gh.Approve(l.UserCode, "gho_linked_token")
	code, st := poll("alice", l.ID)
	if code != http.StatusOK || st.Status != apiv1.GitHubLinkLinked {
		t.Fatalf("after approval: %d %+v", code, st)
	}
	c, err := e.st.GetCredential(t.Context(), e.users["alice"].UserID, gitcred.Provider("github.com"))
	if err != nil {
		t.Fatal(err)
	}
	if sec, _ := gitcred.Decode(c.Secret); sec.Token != "gho_linked_token" || sec.Kind != apiv1.CredentialKindToken {
		t.Errorf("stored %+v", sec)
	}
	if code, _ := poll("alice", l.ID); code != http.StatusNotFound {
		t.Errorf("a finished flow answers %d", code)
	}
	if _, body := e.do("alice", "GET", "/api/v1/credentials", nil); !strings.Contains(string(body), `"host":"github.com"`) || strings.Contains(string(body), "gho_linked_token") {
		t.Errorf("credential list after linking: %s", body)
	}

	d := start("bob")
	gh.Deny(d.UserCode)
	if _, st := poll("bob", d.ID); st.Status != apiv1.GitHubLinkDenied {
		t.Errorf("declined: %+v", st)
	}
	if _, err := e.st.GetCredential(t.Context(), e.users["bob"].UserID, gitcred.Provider("github.com")); err == nil {
		t.Error("a declined link stored a credential")
	}

	// A user has at most maxGitHubFlows links in progress; expired ones do not count.
	for range maxGitHubFlows {
		start("carol")
	}
	if code, body := e.do("carol", "POST", "/api/v1/github/link", nil); code != http.StatusTooManyRequests || !strings.Contains(errorOf(t, body).Message, "in progress") {
		t.Errorf("one link too many: %d %s", code, body)
	}
	e.api.opts.Now = func() time.Time { return time.Now().Add(time.Hour) }
	e.srv.Config.Handler = replica(e)
	start("carol")

	plain := newEnv(t, denyAuthorizer{})
	code, body := plain.do("alice", "POST", "/api/v1/github/link", nil)
	if code != http.StatusNotFound || !strings.Contains(errorOf(t, body).Message, "github.oauth.clientId") {
		t.Errorf("unconfigured: %d %s", code, body)
	}
}

// replica is another agent replica on e's database: a new Server (its own memory and
// metrics) with e's options.
func replica(e *env) *Server {
	o := e.api.opts
	o.Registry = nil
	return New(o)
}
