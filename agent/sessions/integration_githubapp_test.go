package sessions

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakegithub"
)

// testClock is a clock a test moves; the controller, the App and the fake GitHub share it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestGitHubAppTokenFollowsTheSession: with a GitHub App configured, a session on a
// repository of the App's host whose owner linked nothing gets an installation token
// limited to its repository in its Secret (for git and gh, with its expiry beside it,
// never in the pod spec); while the session runs the token is replaced before it
// expires, and only then; a stop takes it away and a start gets a new one. An owner
// the App is not installed on gets no token and the session still starts; an owner who
// linked a token gets theirs, and the App is not asked.
func TestGitHubAppTokenFollowsTheSession(t *testing.T) {
	e := newEnv(t)
	clk := &testClock{t: time.Now()}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	gh := fakegithub.New("unused")
	gh.Now = clk.Now
	gh.AddApp(42, &key.PublicKey)
	gh.Install(42, "acme")
	srv := httptest.NewServer(gh)
	t.Cleanup(srv.Close)
	cfg := e.config()
	cfg.GitHubApp = &github.App{APIURL: github.APIURL(srv.URL), ID: 42, Key: key, HTTP: srv.Client(), Now: clk.Now}
	cfg.GitHubHost = "github.com"
	c, _ := e.startWith(cfg, func(c *Controller) { c.now = clk.Now })
	ctx := ctxT(t)
	secretData := func(id string) map[string][]byte {
		t.Helper()
		sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Data
	}
	// holds checks the Secret of id carries issued token tok for git and gh.
	holds := func(id string, tok fakegithub.IssuedToken) {
		t.Helper()
		data := secretData(id)
		if got, want := string(data[SecretKeyGitCredentials]), "https://x-access-token:"+tok.Token+"@github.com\n"; got != want {
			t.Errorf("git-credentials = %q, want %q", got, want)
		}
		if !strings.Contains(string(data[SecretKeyGHHosts]), `oauth_token: "`+tok.Token+`"`) {
			t.Errorf("gh-hosts.yml = %q, want the token", data[SecretKeyGHHosts])
		}
		if got := string(data[SecretKeyGitTokenExpiry]); got != tok.ExpiresAt.Format(time.RFC3339) {
			t.Errorf("expiry = %q, want %s", got, tok.ExpiresAt.Format(time.RFC3339))
		}
	}

	s := &store.Session{OwnerID: e.owner, Private: true, Repo: "https://github.com/acme/widgets.git"}
	if err := c.Create(ctx, s, 0); err != nil || s.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, s.Reason, s.Message)
	}
	issued := gh.Issued()
	if len(issued) != 1 || len(issued[0].Repositories) != 1 || issued[0].Repositories[0] != "widgets" {
		t.Fatalf("issued %+v, want one token for widgets", issued)
	}
	first := issued[0]
	holds(s.ID, first)
	// What looks at the repository on the session's behalf (its pull request) uses it.
	if tok, err := c.GitToken(ctx, s); err != nil || tok != first.Token {
		t.Errorf("GitToken = %q, %v; want the App token", tok, err)
	}
	if !gh.TokenGrants(first.Token, "acme", "widgets") || gh.TokenGrants(first.Token, "acme", "other") {
		t.Error("the token is not limited to the session's repository")
	}
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if spec := pod.Spec.String(); strings.Contains(spec, first.Token) {
		t.Error("the App token is in the pod spec")
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	// Passes while the token is good (the sweep reconciles every 2s) leave it alone.
	if n := len(gh.Issued()); n != 1 {
		t.Fatalf("%d tokens issued before the first was due", n)
	}

	// 55 minutes on, the token (1h) is within AppTokenRefresh of its expiry: replaced.
	clk.Advance(55 * time.Minute)
	var second fakegithub.IssuedToken
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if is := gh.Issued(); len(is) >= 2 {
			second = is[1]
			return strings.Contains(string(secretData(s.ID)[SecretKeyGitCredentials]), second.Token), nil
		}
		return false, nil
	}); err != nil {
		t.Fatalf("the token was not replaced before it expired: issued %d", len(gh.Issued()))
	}
	holds(s.ID, second)
	clk.Advance(10 * time.Minute) // the first one has expired by now; the new one works
	if gh.TokenGrants(first.Token, "acme", "widgets") || !gh.TokenGrants(second.Token, "acme", "widgets") {
		t.Error("after the first token's hour, the replacement should be the one that works")
	}

	if _, err := c.Stop(ctx, s.ID, "", "user asked"); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Stopped", inState(apiv1.StateStopped))
	for _, k := range gitSecretKeys {
		if _, ok := secretData(s.ID)[k]; ok {
			t.Errorf("stopped session's secret still holds %s", k)
		}
	}
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	is := gh.Issued()
	if len(is) != 3 {
		t.Fatalf("start issued %d tokens in all, want a third", len(is))
	}
	holds(s.ID, is[2])

	// The App is not installed on this owner: no token, and the session starts anyway.
	other := &store.Session{OwnerID: e.owner, Private: true, Repo: "https://github.com/nobody/public.git"}
	if err := c.Create(ctx, other, 0); err != nil || other.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, other.Reason, other.Message)
	}
	if data := secretData(other.ID); len(data[SecretKeyGitCredentials]) != 0 || len(data[SecretKeyGitTokenExpiry]) != 0 {
		t.Errorf("a session the App is not installed for got a credential: %v", keysOf(data))
	}

	// The owner's own linked token comes first.
	sec := gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: apiv1.DefaultCredentialUsername, Token: "gho_linked"}
	if err := e.st.PutCredential(ctx, &store.Credential{OwnerID: e.owner, Provider: gitcred.Provider("github.com"), Secret: gitcred.Encode(sec)}); err != nil {
		t.Fatal(err)
	}
	linked := &store.Session{OwnerID: e.owner, Private: true, Repo: "https://github.com/acme/widgets"}
	if err := c.Create(ctx, linked, 0); err != nil || linked.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, linked.Reason, linked.Message)
	}
	data := secretData(linked.ID)
	if got := string(data[SecretKeyGitCredentials]); !strings.Contains(got, "gho_linked") {
		t.Errorf("linked owner's session credential = %q, want the linked token", got)
	}
	if tok, err := c.GitToken(ctx, linked); err != nil || tok != "gho_linked" {
		t.Errorf("GitToken = %q, %v; want the linked token", tok, err)
	}
	if tok, err := c.GitToken(ctx, other); err != nil || tok != "" {
		t.Errorf("GitToken of a session without a credential = %q, %v", tok, err)
	}
	if _, ok := data[SecretKeyGitTokenExpiry]; ok || len(gh.Issued()) != 3 {
		t.Errorf("the App was asked for a token although the owner linked one (issued %d)", len(gh.Issued()))
	}
}
