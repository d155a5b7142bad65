package ui_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/ui"
)

type answer struct {
	code   int
	header http.Header
	body   string
	cookie []*http.Cookie
}

// do sends req over TCP without following redirects.
func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{code: res.StatusCode, header: res.Header, body: string(b), cookie: res.Cookies()}
}

func get(t *testing.T, u string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

// serve calls the agent's handler directly, so the peer address can be one the
// header authenticator does not trust (httptest.NewRequest uses 192.0.2.1).
func (s *stack) serve(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	return rec
}

var (
	inlineScript = regexp.MustCompile(`<script(?:\s[^>]*)?>`)
	inlineStyle  = regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=`)
)

// checkStrictPage asserts the headers every UI answer carries and that the markup
// needs nothing the Content-Security-Policy forbids.
func checkStrictPage(t *testing.T, name string, h http.Header, body string) {
	t.Helper()
	if got := h.Get("Content-Security-Policy"); got != ui.ContentSecurityPolicy {
		t.Errorf("%s: Content-Security-Policy = %q", name, got)
	}
	if !strings.Contains(ui.ContentSecurityPolicy, "default-src 'self'") || strings.Contains(ui.ContentSecurityPolicy, "unsafe-inline") {
		t.Errorf("policy is not strict: %s", ui.ContentSecurityPolicy)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"} {
		if h.Get(k) != v {
			t.Errorf("%s: %s = %q, want %q", name, k, h.Get(k), v)
		}
	}
	for _, tag := range inlineScript.FindAllString(body, -1) {
		if !strings.Contains(tag, " src=") {
			t.Errorf("%s: inline script %s", name, tag)
		}
	}
	if m := inlineStyle.FindString(body); m != "" {
		t.Errorf("%s: inline style or handler %q", name, m)
	}
}

func TestPagesThroughTheProxy(t *testing.T) {
	s := newStack(t)
	alice := s.proxy("alice@example.com")
	root := s.proxy("root@example.com")

	for path, page := range map[string]string{"/": "sessions", "/new": "new", "/tokens": "tokens", "/credentials": "credentials", "/sessions/abc-1": "session"} {
		a := get(t, alice.URL+path)
		if a.code != http.StatusOK || !strings.Contains(a.body, `data-page="`+page+`"`) {
			t.Fatalf("GET %s: %d %s", path, a.code, a.body)
		}
		checkStrictPage(t, path, a.header, a.body)
		if !strings.Contains(a.body, "alice@example.com") {
			t.Errorf("GET %s does not show who is signed in", path)
		}
		if strings.Contains(a.body, `href="/admin"`) {
			t.Errorf("GET %s: a non-admin sees the admin link", path)
		}
		if a.header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: Cache-Control %q", path, a.header.Get("Cache-Control"))
		}
	}
	if a := get(t, alice.URL+"/sessions/abc-1"); !strings.Contains(a.body, "kubectl agents attach abc-1") || !strings.Contains(a.body, "kubectl agents port-forward abc-1") ||
		strings.Contains(a.body, "/proxy/") {
		t.Errorf("session page lacks the attach or port-forward command, or links to OpenCode's web UI under the proxy path (a blank page):\n%s", a.body)
	}
	if a := get(t, alice.URL+"/admin"); a.code != http.StatusForbidden || strings.Contains(a.body, `data-page="admin"`) {
		t.Errorf("non-admin GET /admin: %d", a.code)
	}
	a := get(t, root.URL+"/admin")
	if a.code != http.StatusOK || !strings.Contains(a.body, `data-page="admin"`) || !strings.Contains(a.body, `href="/admin"`) {
		t.Errorf("admin GET /admin: %d %s", a.code, a.body)
	}
	// Session pages take only session ids (apiv1.ValidateSessionID, as the API does).
	for _, path := range []string{"/nope", "/sessions/Bad_ID", "/sessions/1abc", "/sessions/abc-", "/sessions/" + strings.Repeat("a", 41), "/static/missing.js"} {
		a := get(t, alice.URL+path)
		if a.code != http.StatusNotFound || !strings.Contains(a.body, "<html") {
			t.Errorf("GET %s: %d, want an HTML 404", path, a.code)
		}
		checkStrictPage(t, path, a.header, a.body)
	}
	// The API keeps its own JSON errors; the UI only takes what the API does not.
	if a := get(t, alice.URL+"/api/v1/nope"); a.code != http.StatusNotFound || !strings.Contains(a.body, `"code"`) {
		t.Errorf("GET /api/v1/nope: %d %s", a.code, a.body)
	}
	if a := get(t, alice.URL+"/healthz"); a.code != http.StatusOK {
		t.Errorf("GET /healthz: %d", a.code)
	}
}

func TestNoPageWithoutTrustedIdentity(t *testing.T) {
	s := newStack(t)
	// A forged identity header from a peer outside the trusted proxy CIDRs.
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set(emailHeader, "root@example.com")
	rec := s.serve(req)
	body := rec.Body.String()
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("forged header: status %d, want 401", rec.Code)
	}
	if strings.Contains(body, `data-page="sessions"`) || strings.Contains(body, "root@example.com") {
		t.Errorf("forged header got the app page:\n%s", body)
	}
	if !strings.Contains(body, `id="login-error"`) || !strings.Contains(body, "not a trusted proxy") || strings.Contains(body, "unauthenticated:") {
		t.Errorf("the 401 page does not say why:\n%s", body)
	}
	checkStrictPage(t, "401", rec.Header(), body)

	// No credentials at all: the sign-in page, with a 401.
	rec = s.serve(httptest.NewRequest(http.MethodGet, "/tokens", nil))
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `action="/login"`) || !strings.Contains(rec.Body.String(), `value="/tokens"`) {
		t.Errorf("no credentials: %d\n%s", rec.Code, rec.Body.String())
	}
	if strings.Contains(rec.Body.String(), `id="login-error"`) {
		t.Errorf("no credentials is shown as an error:\n%s", rec.Body.String())
	}
	// Static assets and the sign-in page need no identity.
	for _, path := range []string{"/login", "/static/app.css", "/static/app.js", "/static/favicon.svg"} {
		if rec := s.serve(httptest.NewRequest(http.MethodGet, path, nil)); rec.Code != http.StatusOK {
			t.Errorf("GET %s without identity: %d", path, rec.Code)
		}
	}
}

func TestStaticAssetsAreCachedByHash(t *testing.T) {
	s := newStack(t)
	page := get(t, s.proxy("alice@example.com").URL+"/").body
	m := regexp.MustCompile(`src="(/static/app\.js\?v=[0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no hashed script URL in the page:\n%s", page)
	}
	a := get(t, s.agent.URL+m[1])
	if a.code != http.StatusOK || !strings.Contains(a.header.Get("Cache-Control"), "immutable") || !strings.Contains(a.header.Get("Content-Type"), "javascript") {
		t.Errorf("GET %s: %d %v", m[1], a.code, a.header)
	}
	checkStrictPage(t, "app.js", a.header, "")
	if a := get(t, s.agent.URL+"/static/app.js?v=old"); a.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("stale hash: Cache-Control %q", a.header.Get("Cache-Control"))
	}
	if a := get(t, s.agent.URL+"/static/app.js", "If-None-Match", get(t, s.agent.URL+m[1]).header.Get("ETag")); a.code != http.StatusNotModified {
		t.Errorf("conditional GET: %d", a.code)
	}
}

func postForm(t *testing.T, u string, form url.Values, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

func cookieOf(a answer) *http.Cookie {
	for _, c := range a.cookie {
		if c.Name == ui.CookieName {
			return c
		}
	}
	return nil
}

func TestTokenSignIn(t *testing.T) {
	s := newStack(t)
	secret := s.token("carol@example.com")
	origin := s.agent.URL

	a := postForm(t, s.agent.URL+"/login", url.Values{"token": {secret}, "next": {"/tokens"}}, "Origin", origin)
	c := cookieOf(a)
	if a.code != http.StatusSeeOther || a.header.Get("Location") != "/tokens" || c == nil {
		t.Fatalf("sign in: %d %v %s", a.code, a.header, a.body)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" || c.Value != secret {
		t.Errorf("cookie attributes: %+v", c)
	}
	page := get(t, s.agent.URL+"/tokens", "Cookie", c.Name+"="+c.Value)
	if page.code != http.StatusOK || !strings.Contains(page.body, "carol@example.com") || !strings.Contains(page.body, `action="/logout"`) {
		t.Fatalf("page with cookie: %d\n%s", page.code, page.body)
	}
	if strings.Contains(page.body, secret) {
		t.Error("the page contains the token secret")
	}

	for name, tc := range map[string]struct {
		form   url.Values
		hdr    []string
		status int
		msg    string
	}{
		"unknown token":     {url.Values{"token": {auth.TokenPrefix + "nope"}}, []string{"Origin", origin}, http.StatusUnauthorized, "not recognised"},
		"not a token":       {url.Values{"token": {"hunter2"}}, []string{"Origin", origin}, http.StatusBadRequest, "not a personal access token"},
		"cross-site post":   {url.Values{"token": {secret}}, []string{"Origin", "https://evil.example"}, http.StatusForbidden, "another site"},
		"no origin":         {url.Values{"token": {secret}}, nil, http.StatusForbidden, "without an Origin"},
		"cross-site fetch":  {url.Values{"token": {secret}}, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden, "without an Origin"},
		"same-origin fetch": {url.Values{"token": {secret}}, []string{"Sec-Fetch-Site", "same-origin"}, http.StatusSeeOther, ""},
	} {
		a := postForm(t, s.agent.URL+"/login", tc.form, tc.hdr...)
		if a.code != tc.status || !strings.Contains(a.body, tc.msg) {
			t.Errorf("%s: %d, want %d with %q\n%s", name, a.code, tc.status, tc.msg, a.body)
		}
		if (cookieOf(a) != nil) != (tc.status == http.StatusSeeOther) {
			t.Errorf("%s: cookie set = %v", name, cookieOf(a) != nil)
		}
	}
	for next, want := range map[string]string{"//evil.example/x": "/", "https://evil.example/": "/", "/\\evil.example": "/", "/sessions/a?x=1": "/sessions/a?x=1", "/login?next=/": "/"} {
		a := postForm(t, s.agent.URL+"/login", url.Values{"token": {secret}, "next": {next}}, "Origin", origin)
		if a.header.Get("Location") != want {
			t.Errorf("next %q: redirect to %q, want %q", next, a.header.Get("Location"), want)
		}
	}

	// Over TLS the cookie is Secure.
	req := httptest.NewRequest(http.MethodPost, "https://agent.example/login", strings.NewReader(url.Values{"token": {secret}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://agent.example")
	req.TLS = &tls.ConnectionState{}
	rec := s.serve(req)
	if rec.Code != http.StatusSeeOther || len(rec.Result().Cookies()) != 1 || !rec.Result().Cookies()[0].Secure {
		t.Errorf("TLS sign-in: %d %v", rec.Code, rec.Result().Cookies())
	}

	// Signing out clears the cookie; a cross-site sign-out is refused.
	if a := postForm(t, s.agent.URL+"/logout", nil, "Origin", "https://evil.example"); a.code != http.StatusForbidden || cookieOf(a) != nil {
		t.Errorf("cross-site sign-out: %d", a.code)
	}
	a = postForm(t, s.agent.URL+"/logout", nil, "Origin", origin)
	if c := cookieOf(a); a.code != http.StatusSeeOther || c == nil || c.MaxAge >= 0 {
		t.Errorf("sign out: %d %+v", a.code, c)
	}

	// Revoking the token signs the browser out at once.
	toks, err := s.st.ListTokens(context.Background(), s.user("carol@example.com"))
	if err != nil || len(toks) != 1 {
		t.Fatal(toks, err)
	}
	if err := s.st.DeleteToken(context.Background(), toks[0].OwnerID, toks[0].ID); err != nil {
		t.Fatal(err)
	}
	if a := get(t, s.agent.URL+"/", "Cookie", c.Name+"="+c.Value); a.code != http.StatusUnauthorized || !strings.Contains(a.body, `action="/login"`) {
		t.Errorf("revoked token: %d", a.code)
	}
}

func TestCookieOnTheAPI(t *testing.T) {
	s := newStack(t)
	secret := s.token("dave@example.com")
	origin := s.agent.URL
	call := func(method, path, body string, hdr ...string) answer {
		req, err := http.NewRequest(method, s.agent.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Cookie", ui.CookieName+"="+secret)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return do(t, req)
	}
	if a := call("GET", "/api/v1/whoami", ""); a.code != http.StatusOK || !strings.Contains(a.body, "dave@example.com") {
		t.Fatalf("whoami with cookie: %d %s", a.code, a.body)
	}
	create := `{"prompt":"hello"}`
	for name, tc := range map[string]struct {
		hdr    []string
		status int
		msg    string
	}{
		"no CSRF header":        {[]string{"Origin", origin}, http.StatusUnauthorized, ui.CSRFHeader},
		"foreign origin":        {[]string{"Origin", "https://evil.example", ui.CSRFHeader, "1"}, http.StatusUnauthorized, "cross-origin"},
		"sibling origin":        {[]string{"Origin", strings.Replace(origin, "127.0.0.1", "localhost", 1), ui.CSRFHeader, "1"}, http.StatusUnauthorized, "cross-origin"},
		"no origin, cross-site": {[]string{"Sec-Fetch-Site", "same-site", ui.CSRFHeader, "1"}, http.StatusUnauthorized, "Origin"},
		"same origin":           {[]string{"Origin", origin, ui.CSRFHeader, "1"}, http.StatusCreated, `"state"`},
		"same-origin fetch":     {[]string{"Sec-Fetch-Site", "same-origin", ui.CSRFHeader, "1"}, http.StatusCreated, `"state"`},
	} {
		a := call("POST", "/api/v1/sessions", create, tc.hdr...)
		if a.code != tc.status || !strings.Contains(a.body, tc.msg) {
			t.Errorf("%s: %d, want %d with %q: %s", name, a.code, tc.status, tc.msg, a.body)
		}
	}
	// OpenCode's own UI behind the proxy cannot send the CSRF header: the Origin check
	// alone applies there (the session is not Running, so the API answers 409).
	if a := call("POST", "/api/v1/sessions/x1/proxy/session", "{}", "Origin", origin); a.code == http.StatusUnauthorized {
		t.Errorf("same-origin proxy POST refused: %s", a.body)
	}
	if a := call("POST", "/api/v1/sessions/x1/proxy/session", "{}", "Origin", "https://evil.example"); a.code != http.StatusUnauthorized {
		t.Errorf("cross-origin proxy POST: %d", a.code)
	}
	// Cross-site WebSocket hijacking through the proxy.
	if a := call("GET", "/api/v1/sessions/x1/proxy/pty", "", "Upgrade", "websocket", "Connection", "Upgrade", "Origin", "https://evil.example"); a.code != http.StatusUnauthorized {
		t.Errorf("cross-origin WebSocket: %d", a.code)
	}
	// A bearer token (CLI, scripts) needs none of this.
	req, _ := http.NewRequest("POST", s.agent.URL+"/api/v1/sessions", strings.NewReader(create))
	req.Header.Set("Authorization", "Bearer "+secret)
	if a := do(t, req); a.code != http.StatusCreated {
		t.Errorf("bearer token: %d %s", a.code, a.body)
	}
}

func TestCheckCSRF(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		hdr         map[string]string
		ext         string
		ok          bool
	}{
		{"GET", "http://a.example/api/v1/sessions", nil, "", true},
		{"HEAD", "http://a.example/", map[string]string{"Origin": "https://evil.example"}, "", true},
		{"POST", "http://a.example/api/v1/sessions", map[string]string{"Origin": "http://a.example", ui.CSRFHeader: "1"}, "", true},
		{"DELETE", "http://a.example/api/v1/sessions/x", map[string]string{"Origin": "http://A.example", ui.CSRFHeader: "1"}, "", true},
		{"POST", "http://internal:8080/api/v1/sessions", map[string]string{"Origin": "https://agents.example", ui.CSRFHeader: "1"}, "https://agents.example/", true},
		{"POST", "http://internal:8080/api/v1/sessions", map[string]string{"Origin": "http://agents.example", ui.CSRFHeader: "1"}, "https://agents.example", false},
		{"POST", "http://a.example/api/v1/sessions", map[string]string{"Origin": "null", ui.CSRFHeader: "1"}, "", false},
		{"PATCH", "http://a.example/api/v1/sessions/x", map[string]string{"Origin": "http://a.example"}, "", false},
		{"POST", "http://a.example/api/v1/sessions/x/proxy/", map[string]string{"Origin": "http://a.example"}, "", true},
		{"POST", "http://a.example/api/v1/sessions/x/proxy", map[string]string{"Sec-Fetch-Site": "same-origin"}, "", true},
		{"POST", "http://a.example/api/v1/sessions/x/proxy/", nil, "", false},
		{"GET", "http://a.example/api/v1/sessions/x/proxy/ws", map[string]string{"Upgrade": "websocket", "Origin": "http://b.example"}, "", false},
		{"GET", "http://a.example/api/v1/sessions/x/proxy/ws", map[string]string{"Upgrade": "websocket", "Origin": "http://a.example"}, "", true},
		{"GET", "http://a.example/api/v1/sessions/x/proxy/ws", map[string]string{"Upgrade": "websocket"}, "", true},
	} {
		req := httptest.NewRequest(tc.method, tc.url, nil)
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		err := ui.CheckCSRF(req, tc.ext)
		if (err == nil) != tc.ok {
			t.Errorf("%s %s %v ext=%q: err = %v, want ok=%v", tc.method, tc.url, tc.hdr, tc.ext, err, tc.ok)
		}
	}
}

// brokenAuthenticator cannot check credentials (the Kubernetes API is away).
type brokenAuthenticator struct{}

func (brokenAuthenticator) Name() string { return "broken" }
func (brokenAuthenticator) Authenticate(*http.Request) (*auth.Identity, bool, error) {
	return nil, false, errors.New("dial tcp: connection refused")
}

// TestAuthOutageIsAPage: when the authentication middleware turns a page request away
// for a reason other than credentials, the browser gets an HTML error page with the
// middleware's status and message, not the API's JSON.
func TestAuthOutageIsAPage(t *testing.T) {
	h := ui.New(ui.Options{Authenticate: auth.NewMiddleware([]auth.Authenticator{brokenAuthenticator{}}, nil, nil, nil).WrapWith})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tokens", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusServiceUnavailable || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, Content-Type %q, want an HTML 503", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !strings.Contains(body, `data-page="error"`) || !strings.Contains(body, "<title>Service Unavailable") ||
		!strings.Contains(body, "cannot check your credentials right now; try again shortly") {
		t.Errorf("the 503 page does not say what happened:\n%s", body)
	}
	if strings.Contains(body, `"code"`) || strings.Contains(body, "connection refused") {
		t.Errorf("the page shows JSON or the internal error:\n%s", body)
	}
	checkStrictPage(t, "503", rec.Header(), body)
}
