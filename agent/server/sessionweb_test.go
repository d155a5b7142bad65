package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// webEnv is the API with sessions' web UI served at <id>.agents.test, a clock the test
// moves, and the proxy's identity header (X-Proxy-User) accepted without the cookie.
type webEnv struct {
	*env
	mu  sync.Mutex
	now time.Time
}

func newWebEnv(t *testing.T, deny denyAuthorizer) *webEnv {
	t.Helper()
	kr, err := keyring.New([]byte("session-web-test-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	w := &webEnv{now: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)}
	w.env = newEnvWith(t, deny, func(o *Options) {
		o.Now = w.clock
		o.ExternalURL = "https://agents.test"
		o.SessionWeb = &SessionWeb{Domain: "agents.test", Scheme: "http", Sealer: kr, Workspace: "/workspace",
			Authenticate: func(next http.Handler, render httperr.Renderer) http.Handler {
				return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
					id := w.users[r.Header.Get("X-Proxy-User")]
					if id == nil {
						render(rw, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, "no credentials")
						return
					}
					next.ServeHTTP(rw, r.WithContext(auth.WithIdentity(r.Context(), id)))
				})
			}}
	})
	return w
}

func (w *webEnv) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *webEnv) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

// running creates a Running session of user.
func (w *webEnv) running(user string) string {
	w.t.Helper()
	s := w.create(user, apiv1.CreateSessionRequest{Prompt: "hi"})
	if _, err := w.sess.setState(context.Background(), s.ID, apiv1.StateRunning, ""); err != nil {
		w.t.Fatal(err)
	}
	return s.ID
}

// ticketURL asks for a session's web URL as user.
func (w *webEnv) ticketURL(user, id string) *url.URL {
	w.t.Helper()
	code, body := w.do(user, "POST", "/api/v1/sessions/"+id+"/web", nil)
	if code != http.StatusOK {
		w.t.Fatalf("web URL of %s for %s: %d %s", id, user, code, body)
	}
	var r apiv1.SessionWebResponse
	if err := json.Unmarshal(body, &r); err != nil {
		w.t.Fatal(err)
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		w.t.Fatal(err)
	}
	return u
}

// hostReq sends a request for host (a session's) to the agent, following no redirect.
func (w *webEnv) hostReq(host, method, path string, header http.Header, cookies ...*http.Cookie) (*http.Response, string) {
	w.t.Helper()
	req, _ := http.NewRequest(method, w.srv.URL+path, nil)
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	client := *w.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// enter trades a ticket URL for the host's cookie.
func (w *webEnv) enter(u *url.URL) *http.Cookie {
	w.t.Helper()
	return w.enterTo(u, "/")
}

// enterTo is enter, checking where the sign-in lands.
func (w *webEnv) enterTo(u *url.URL, landing string) *http.Cookie {
	w.t.Helper()
	resp, body := w.hostReq(u.Host, "GET", u.RequestURI(), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != landing {
		w.t.Fatalf("enter: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == SessionWebCookie {
			return c
		}
	}
	w.t.Fatalf("enter set no %s cookie: %v", SessionWebCookie, resp.Header["Set-Cookie"])
	return nil
}

var navigate = http.Header{"Sec-Fetch-Mode": {"navigate"}, "Accept": {"text/html"}}

// TestSessionWebSignIn: the owner's ticket opens the session's host, whose every path
// (the agent's API paths too) is the session's OpenCode, with a cookie of that host only.
func TestSessionWebSignIn(t *testing.T) {
	w := newWebEnv(t, nil)
	id := w.running("alice")
	u := w.ticketURL("alice", id)
	if u.Scheme != "http" || u.Host != id+".agents.test" || u.Path != SessionWebEnterPath || u.Query().Get("ticket") == "" {
		t.Fatalf("web URL %s", u)
	}
	// A HEAD (a link checker) neither uses the ticket nor signs in.
	if resp, _ := w.hostReq(u.Host, "HEAD", u.RequestURI(), nil); resp.StatusCode != http.StatusNoContent || len(resp.Cookies()) != 0 {
		t.Errorf("HEAD of the link: %d %v, want 204 without a cookie", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	c := w.enter(u)
	// The link works once: a copy (history, a proxy's log) signs nobody in again.
	if resp, body := w.hostReq(u.Host, "GET", u.RequestURI(), navigate); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "already used") || len(resp.Cookies()) != 0 {
		t.Errorf("the link a second time: %d %v %s", resp.StatusCode, resp.Header["Set-Cookie"], body)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Domain != "" || c.Path != "/" {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Lax, host-only, path /", c)
	}
	if c.Expires.Sub(w.clock()) != DefaultSessionWebCookieTTL {
		t.Errorf("cookie expires %v, want in %v", c.Expires, DefaultSessionWebCookieTTL)
	}
	host := id + ".agents.test:8080" // an ingress may keep the port
	for _, path := range []string{"/", "/assets/index.js", "/session?directory=x", "/api/v1/sessions", "/healthz", "/login"} {
		resp, body := w.hostReq(host, "GET", path, nil, c)
		want := "proxied " + id + " " + strings.SplitN(path, "?", 2)[0]
		if resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("GET %s on the session host: %d %q, want the session's OpenCode (%q)", path, resp.StatusCode, body, want)
		}
	}
	// Using it is the session's activity, as the API proxy's is.
	w.sess.mu.Lock()
	touched := strings.Join(w.sess.touched, ",")
	w.sess.mu.Unlock()
	if !strings.Contains(touched, id+":proxy") {
		t.Errorf("no activity recorded: %s", touched)
	}
	// The agent's own host is not affected.
	if code, _ := w.do("alice", "GET", "/api/v1/sessions/"+id, nil); code != http.StatusOK {
		t.Errorf("API on the agent's host: %d", code)
	}
	// A ticket works briefly; a cookie until it expires.
	unused := w.ticketURL("alice", id)
	w.advance(sessionWebTicketTTL)
	if resp, body := w.hostReq(unused.Host, "GET", unused.RequestURI(), navigate); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "expired") || !strings.Contains(body, "https://agents.test/sessions/"+id) {
		t.Errorf("a stale ticket: %d %s", resp.StatusCode, body)
	}
	w.advance(DefaultSessionWebCookieTTL)
	if resp, body := w.hostReq(host, "GET", "/", nil, c); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("an expired cookie: %d %s", resp.StatusCode, body)
	}
	// With a conversation, a sign-in lands in it (OpenCode's /<base64url dir>/session/<id>).
	stored, err := w.st.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	stored.OpenCodeSessionID = "ses_abc123"
	if err := w.st.UpdateSession(context.Background(), stored); err != nil {
		t.Fatal(err)
	}
	w.enterTo(w.ticketURL("alice", id), "/L3dvcmtzcGFjZQ/session/ses_abc123")
}

// TestSessionWebRefusals: what must not open a session's host does not.
func TestSessionWebRefusals(t *testing.T) {
	w := newWebEnv(t, denyAuthorizer{"carol": {"attach"}})
	a, b := w.running("alice"), w.running("alice")
	public := w.create("bob", apiv1.CreateSessionRequest{Prompt: "p", Private: new(false)})
	if _, err := w.sess.setState(context.Background(), public.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	ua := w.ticketURL("alice", a)
	ca := w.enter(w.ticketURL("alice", a))

	// Nobody else's ticket: another user's private session is not found, a public one
	// not granted attach is forbidden.
	if code, body := w.do("bob", "POST", "/api/v1/sessions/"+a+"/web", nil); code != http.StatusNotFound {
		t.Errorf("bob's ticket for alice's private session: %d %s", code, body)
	}
	if code, body := w.do("carol", "POST", "/api/v1/sessions/"+public.ID+"/web", nil); code != http.StatusForbidden || !strings.Contains(string(body), "attach") {
		t.Errorf("carol's ticket for a public session without attach: %d %s", code, body)
	}
	// No cookie: a page for a browser, JSON for a script.
	if resp, body := w.hostReq(a+".agents.test", "GET", "/", navigate); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Open in OpenCode") {
		t.Errorf("no cookie, a browser: %d %s", resp.StatusCode, body)
	}
	if resp, body := w.hostReq(a+".agents.test", "GET", "/session", nil); resp.StatusCode != http.StatusUnauthorized || errorOfString(t, body).Code != apiv1.CodeUnauthorized {
		t.Errorf("no cookie, a script: %d %s", resp.StatusCode, body)
	}
	// One session's cookie or ticket opens no other session's host; a ticket is no cookie.
	if resp, _ := w.hostReq(b+".agents.test", "GET", "/", nil, ca); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session %s's cookie on %s's host: %d", a, b, resp.StatusCode)
	}
	if resp, _ := w.hostReq(b+".agents.test", "GET", SessionWebEnterPath+"?"+ua.RawQuery, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session %s's ticket on %s's host: %d", a, b, resp.StatusCode)
	}
	asCookie := &http.Cookie{Name: SessionWebCookie, Value: ua.Query().Get("ticket")}
	if resp, _ := w.hostReq(a+".agents.test", "GET", "/", nil, asCookie); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a ticket as the cookie: %d", resp.StatusCode)
	}
	tampered := *ca
	tampered.Value = ca.Value[:len(ca.Value)-2] + "AA"
	if resp, _ := w.hostReq(a+".agents.test", "GET", "/", nil, &tampered); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a tampered cookie: %d", resp.StatusCode)
	}
	// Changes come from the session's own pages only (another session's host is the
	// same site, so SameSite does not stop it).
	for origin, want := range map[string]int{
		"http://" + a + ".agents.test": http.StatusOK,
		"http://" + b + ".agents.test": http.StatusForbidden,
		"https://evil.example":         http.StatusForbidden,
		"":                             http.StatusForbidden,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		if resp, body := w.hostReq(a+".agents.test", "POST", "/session", h, ca); resp.StatusCode != want {
			t.Errorf("POST from origin %q: %d %s, want %d", origin, resp.StatusCode, body, want)
		}
	}
	// What the pod must not set on the browser is dropped.
	w.conv.proxyHeader = http.Header{"Set-Cookie": {"cake_agents_token=x; Domain=agents.test"}, "Access-Control-Allow-Origin": {"*"}, "X-Kept": {"1"}}
	resp, _ := w.hostReq(a+".agents.test", "GET", "/", nil, ca)
	if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("X-Kept") != "1" {
		t.Errorf("proxied answer headers %v", resp.Header)
	}
	w.conv.proxyHeader = nil
	// The proxy's identity works without the cookie, with the same rights.
	if resp, body := w.hostReq(public.ID+".agents.test", "GET", "/", http.Header{"X-Proxy-User": {"bob"}}); resp.StatusCode != http.StatusOK {
		t.Errorf("the owner through the proxy: %d %s", resp.StatusCode, body)
	}
	if resp, _ := w.hostReq(public.ID+".agents.test", "GET", "/", http.Header{"X-Proxy-User": {"carol"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("carol through the proxy: %d", resp.StatusCode)
	}
	// A stopped session: a page saying so; deleted: gone.
	if _, err := w.sess.setState(context.Background(), a, apiv1.StateStopped, ""); err != nil {
		t.Fatal(err)
	}
	if resp, body := w.hostReq(a+".agents.test", "GET", "/", navigate, ca); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "Stopped") {
		t.Errorf("a stopped session's page: %d %s", resp.StatusCode, body)
	}
	if code, _ := w.do("alice", "POST", "/api/v1/sessions/"+a+"/web", nil); code != http.StatusConflict {
		t.Errorf("a ticket for a stopped session: %d", code)
	}
	if err := w.st.DeleteSession(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if resp, _ := w.hostReq(a+".agents.test", "GET", "/session", nil, ca); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a deleted session's host: %d", resp.StatusCode)
	}
	// Hosts that are not a session's: the agent itself.
	for _, host := range []string{"agents.test", "x.y.agents.test", "Bad_Id.agents.test", "evil-agents.test"} {
		if resp, _ := w.hostReq(host, "GET", "/healthz", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("host %s: %d, want the agent's /healthz", host, resp.StatusCode)
		}
	}
}

// TestSessionWebNeverTheAgentsHost: a session domain that is the parent of the agent's
// own host leaves the agent's host to the agent.
func TestSessionWebNeverTheAgentsHost(t *testing.T) {
	kr, err := keyring.New([]byte("session-web-test-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, nil, func(o *Options) {
		o.ExternalURL = "https://agents.test"
		o.SessionWeb = &SessionWeb{Domain: "test", Sealer: kr}
	})
	w := &webEnv{env: e}
	if resp, body := w.hostReq("agents.test", "GET", "/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("the agent's own host: %d %s", resp.StatusCode, body)
	}
	if resp, _ := w.hostReq("abc.test", "GET", "/healthz", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a session's host: %d, want its sign-in refusal", resp.StatusCode)
	}
}

// TestSessionWebOff: without a domain the agent says how to turn it on.
func TestSessionWebOff(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{Prompt: "p"})
	code, body := e.do("alice", "POST", "/api/v1/sessions/"+s.ID+"/web", nil)
	if code != http.StatusNotFound || !strings.Contains(string(body), "controlPlane.sessionWeb.enabled") || !strings.Contains(string(body), "port-forward") {
		t.Errorf("%d %s", code, body)
	}
}

func errorOfString(t *testing.T, body string) apiv1.ErrorBody { return errorOf(t, []byte(body)) }
