package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// stubAuthenticator answers from a fixed result; the real authenticators have their
// own tests, these check the chain's rules.
type stubAuthenticator struct {
	name  string
	id    *Identity
	ok    bool
	err   error
	calls int
}

func (s *stubAuthenticator) Authenticate(*http.Request) (*Identity, bool, error) {
	s.calls++
	if s.id == nil {
		return nil, s.ok, s.err
	}
	id := *s.id
	return &id, s.ok, s.err
}

func (s *stubAuthenticator) Name() string { return s.name }

type stubAdmin struct {
	admin bool
	err   error
}

func (s stubAdmin) Admin(context.Context, *Identity) (bool, error) { return s.admin, s.err }

// whoami echoes the identity the middleware put in the context.
var whoami = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id := FromContext(r.Context())
	if id == nil {
		http.Error(w, "no identity", http.StatusInternalServerError)
		return
	}
	_ = json.NewEncoder(w).Encode(id)
})

func serve(t *testing.T, h http.Handler, r *http.Request) (*httptest.ResponseRecorder, apiv1.Error, *Identity) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var e apiv1.Error
	var id *Identity
	if w.Code == http.StatusOK {
		id = new(Identity)
		if err := json.Unmarshal(w.Body.Bytes(), id); err != nil {
			t.Fatalf("decode identity: %v (%s)", err, w.Body)
		}
	} else if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("decode error body: %v (%s)", err, w.Body)
	}
	return w, e, id
}

func auditRows(t *testing.T, st store.Store) []*store.AuditEvent {
	t.Helper()
	page, err := st.ListAudit(context.Background(), store.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return page.Items
}

func TestMiddlewareNoCredentials(t *testing.T) {
	st, _ := newStore(t)
	a1 := &stubAuthenticator{name: "kubectl agents (your kubeconfig identity)"}
	a2 := &stubAuthenticator{name: "a personal access token (Authorization: Bearer cka_...)"}
	a3 := &stubAuthenticator{name: "sign in through the proxy"}
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "anonymous_total"})
	var logBuf bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Info})
	h := NewMiddleware([]Authenticator{a1, a2, a3}, st, audit.NewRecorder(st, nil), logger, WithAnonymousCounter(counter)).Wrap(whoami)
	w, e, _ := serve(t, h, httptest.NewRequest(http.MethodGet, "/api/v1/sessions", nil))
	if w.Code != http.StatusUnauthorized || e.Body.Code != apiv1.CodeUnauthorized {
		t.Fatalf("status %d code %q, want 401 Unauthorized", w.Code, e.Body.Code)
	}
	want := "no credentials: use kubectl agents (your kubeconfig identity), a personal access token (Authorization: Bearer cka_...), or sign in through the proxy"
	if e.Body.Message != want {
		t.Errorf("message = %q\nwant      %q", e.Body.Message, want)
	}
	if w.Header().Get("WWW-Authenticate") != `Bearer realm="cake-agents"` || w.Header().Get("Content-Type") != "application/json" ||
		w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("Retry-After") != "" {
		t.Errorf("headers = %v", w.Header())
	}
	if a1.calls != 1 || a2.calls != 1 || a3.calls != 1 {
		t.Errorf("calls = %d %d %d, want every authenticator asked once", a1.calls, a2.calls, a3.calls)
	}
	// A burst without credentials (sign-in pages, probes, scanners): counted, one log line,
	// no audit rows.
	for range 50 {
		serve(t, h, httptest.NewRequest(http.MethodGet, "/api/v1/sessions", nil))
	}
	if rows := auditRows(t, st); len(rows) != 0 {
		t.Errorf("audit rows = %+v, want none for requests without credentials", rows)
	}
	if got := testutil.ToFloat64(counter); got != 51 {
		t.Errorf("counter = %v, want 51", got)
	}
	if n := strings.Count(logBuf.String(), "requests without credentials"); n != 1 {
		t.Errorf("%d summary log lines for the burst, want 1:\n%s", n, logBuf.String())
	}
}

func TestMiddlewareFirstRecogniserDecides(t *testing.T) {
	st, _ := newStore(t)
	reject := &stubAuthenticator{name: "headers", err: fmt.Errorf("%w: identity headers from 127.0.0.1", ErrUnauthenticated)}
	accept := &stubAuthenticator{name: "kube", ok: true, id: &Identity{Username: "jane", Groups: []string{"devs"}, Source: SourceKubernetes}}
	rec := audit.NewRecorder(st, nil)

	// A rejection is final: the next authenticator is never asked.
	h := NewMiddleware([]Authenticator{reject, accept}, st, rec, nil).Wrap(whoami)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r = r.WithContext(audit.WithRequestID(r.Context(), "req-1"))
	w, e, _ := serve(t, h, r)
	if w.Code != http.StatusUnauthorized || !strings.Contains(e.Body.Message, "127.0.0.1") {
		t.Fatalf("status %d message %q", w.Code, e.Body.Message)
	}
	if accept.calls != 0 {
		t.Error("an authenticator after a rejection was asked")
	}
	rows := auditRows(t, st)
	if len(rows) != 1 || rows[0].Target != "headers" || rows[0].RequestID != "req-1" || !strings.Contains(rows[0].Detail, "127.0.0.1") {
		t.Fatalf("audit rows = %+v", rows)
	}

	// Acceptance: identity in context, user upserted, admin resolved.
	h = NewMiddleware([]Authenticator{&stubAuthenticator{name: "none"}, accept}, st, rec, nil, WithAdminResolver(stubAdmin{admin: true})).Wrap(whoami)
	w, _, id := serve(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if id.Username != "jane" || id.UserID == "" || !id.Admin {
		t.Fatalf("identity = %+v", id)
	}
	u, err := st.GetUser(context.Background(), id.UserID)
	if err != nil || u.Source != SourceKubernetes || u.Subject != "jane" || !u.Admin {
		t.Fatalf("stored user = %+v, err %v", u, err)
	}

	// The admin resolver failing means "not admin", and the stored flag follows.
	h = NewMiddleware([]Authenticator{accept}, st, rec, nil, WithAdminResolver(stubAdmin{admin: true, err: errors.New("apiserver down")})).Wrap(whoami)
	_, _, id = serve(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
	if id.Admin {
		t.Fatal("admin despite a failed admin check")
	}
	if u, _ := st.GetUser(context.Background(), id.UserID); u.Admin {
		t.Fatal("stored user still admin")
	}
}

func TestMiddlewareUnavailable(t *testing.T) {
	st, _ := newStore(t)
	broken := &stubAuthenticator{name: "kube", err: errors.New("dial tcp: connection refused")}
	h := NewMiddleware([]Authenticator{broken}, st, audit.NewRecorder(st, nil), nil).Wrap(whoami)
	w, e, _ := serve(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusServiceUnavailable || e.Body.Code != apiv1.CodeUnavailable {
		t.Fatalf("status %d code %q, want 503 Unavailable", w.Code, e.Body.Code)
	}
	if strings.Contains(e.Body.Message, "connection refused") {
		t.Errorf("internal error leaked to the caller: %q", e.Body.Message)
	}
	if e.Body.Message != "cannot check your credentials right now; try again shortly" {
		t.Errorf("message = %q", e.Body.Message)
	}
	if w.Header().Get("Retry-After") != "2" || w.Header().Get("Content-Type") != "application/json" ||
		w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("WWW-Authenticate") != "" {
		t.Errorf("headers = %v, want a JSON 503 that says when to retry", w.Header())
	}
}

func TestMiddlewareUpsertIsCached(t *testing.T) {
	st, _ := newStore(t)
	cs := &upsertCounter{Store: st}
	kube := &stubAuthenticator{name: "kube", ok: true, id: &Identity{Username: "jane", Source: SourceKubernetes}}
	h := NewMiddleware([]Authenticator{kube}, cs, nil, nil).Wrap(whoami)
	var first string
	for range 3 {
		_, _, id := serve(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
		if first == "" {
			first = id.UserID
		}
		if id.UserID != first {
			t.Fatalf("user id changed: %s then %s", first, id.UserID)
		}
	}
	if cs.upserts != 1 {
		t.Fatalf("upserts = %d, want 1 for an unchanged identity", cs.upserts)
	}
	kube.id.Groups = []string{"new-group"}
	serve(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
	if cs.upserts != 2 {
		t.Fatalf("upserts = %d, want a write when the groups change", cs.upserts)
	}
}

type upsertCounter struct {
	store.Store
	upserts int
}

func (c *upsertCounter) UpsertUser(ctx context.Context, u *store.User) error {
	c.upserts++
	return c.Store.UpsertUser(ctx, u)
}

// TestHeaderAuthOverTCP drives the header authenticator through the middleware over
// real loopback connections: the peer address is the kernel's, not a test's choice.
func TestHeaderAuthOverTCP(t *testing.T) {
	st, _ := newStore(t)
	jwtAdmin := fakeJWT(t, map[string]any{"email": "admin@example.com"})
	for _, tc := range []struct {
		name    string
		trusted []string
		headers map[string]string
		want    int
	}{
		{"loopback is not trusted by default", []string{"10.0.0.0/8"}, map[string]string{"X-Auth-Request-Email": "admin@example.com"}, http.StatusUnauthorized},
		{"loopback with a valid-looking JWT", []string{"10.0.0.0/8"}, map[string]string{"X-Auth-Request-Access-Token": jwtAdmin}, http.StatusUnauthorized},
		{"loopback with JWT and Kubernetes token", []string{"10.0.0.0/8"}, map[string]string{"X-Auth-Request-Access-Token": jwtAdmin, "Authorization": "Bearer cka_abc"}, http.StatusUnauthorized},
		{"loopback listed as trusted", []string{"127.0.0.0/8"}, map[string]string{"X-Auth-Request-Email": "jane@example.com"}, http.StatusOK},
		{"trusted loopback, JWT only", []string{"127.0.0.1/32"}, map[string]string{"X-Auth-Request-Access-Token": jwtAdmin}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := headerConfig()
			cfg.TrustedProxyCIDRs = tc.trusted
			ha, err := NewHeaderAuthenticator(cfg)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(audit.RequestIDMiddleware(NewMiddleware([]Authenticator{ha, NewTokenAuthenticator(st, nil)}, st, audit.NewRecorder(st, nil), nil).Wrap(whoami)))
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/whoami", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusOK {
				var id Identity
				if err := json.Unmarshal(body, &id); err != nil {
					t.Fatal(err)
				}
				u, err := st.GetUser(context.Background(), id.UserID)
				if err != nil || u.Source != SourceHeader || u.Subject != id.Email || id.Email == "" {
					t.Fatalf("stored user %+v (err %v) for identity %+v", u, err, id)
				}
				return
			}
			reqID := resp.Header.Get(audit.RequestIDHeader)
			found := false
			for _, row := range auditRows(t, st) {
				if row.RequestID == reqID && row.Outcome == audit.OutcomeDenied && strings.Contains(row.Detail, "not a trusted proxy") {
					found = true
					if strings.Contains(row.Detail, jwtAdmin) {
						t.Error("audit row holds the JWT")
					}
				}
			}
			if !found {
				t.Errorf("no audited denial for request %s", reqID)
			}
		})
	}
}

// TestInertHeaderAuthServesTokens runs the guide's minimal configuration (header auth
// enabled, no trusted proxy network) through the middleware over real connections: a
// personal access token gets in, the same token plus an identity header is refused with
// the setting to fix, and a caller without credentials is not told to sign in through a
// proxy that cannot work.
func TestInertHeaderAuthServesTokens(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceKubernetes, "jane")
	secret, _, err := IssueToken(ctx, st, u.ID, "laptop", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := headerConfig()
	cfg.TrustedProxyCIDRs = nil
	ha, err := NewHeaderAuthenticator(cfg)
	if err != nil {
		t.Fatalf("inert header auth must not be a configuration error: %v", err)
	}
	srv := httptest.NewServer(NewMiddleware([]Authenticator{ha, NewTokenAuthenticator(st, nil)}, st, audit.NewRecorder(st, nil), nil).Wrap(whoami))
	defer srv.Close()
	call := func(headers map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/whoami", nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	if code, body := call(map[string]string{"Authorization": "Bearer " + secret}); code != http.StatusOK || !strings.Contains(body, u.ID) {
		t.Fatalf("token: %d %s", code, body)
	}
	code, body := call(map[string]string{"Authorization": "Bearer " + secret, "X-Auth-Request-Email": "jane@example.com"})
	if code != http.StatusUnauthorized || !strings.Contains(body, "headerAuth.trustedProxyCIDRs") {
		t.Fatalf("token plus identity header: %d %s, want 401 naming headerAuth.trustedProxyCIDRs", code, body)
	}
	code, body = call(nil)
	if code != http.StatusUnauthorized || strings.Contains(body, ha.Name()) || !strings.Contains(body, "personal access token") {
		t.Fatalf("no credentials: %d %s, want 401 offering tokens but not the proxy", code, body)
	}
}

// TestMiddlewareHeaderCSRF: with WithHeaderCSRF, callers the proxy's headers signed in
// must pass the check; other callers are not asked. The refusal is a 403.
func TestMiddlewareHeaderCSRF(t *testing.T) {
	st, _ := newStore(t)
	refuse := func(*http.Request) error {
		return errors.New("cross-origin request from \"https://evil.example\" refused")
	}
	for _, tc := range []struct {
		source string
		want   int
	}{
		{SourceHeader, http.StatusForbidden},
		{SourceKubernetes, http.StatusOK},
		{SourceToken, http.StatusOK},
	} {
		a := &stubAuthenticator{name: "a", ok: true, id: &Identity{Username: "jane", Email: "jane@example.com", Source: tc.source}}
		h := NewMiddleware([]Authenticator{a}, st, nil, nil, WithHeaderCSRF(refuse)).Wrap(whoami)
		w, e, _ := serve(t, h, httptest.NewRequest(http.MethodPost, "/api/v1/sessions", nil))
		if w.Code != tc.want {
			t.Errorf("%s identity: status %d, want %d", tc.source, w.Code, tc.want)
		}
		if tc.want == http.StatusForbidden && (e.Body.Code != apiv1.CodeForbidden ||
			e.Body.Message != `cross-site request refused: cross-origin request from "https://evil.example" refused`) {
			t.Errorf("%s identity: error %+v", tc.source, e.Body)
		}
	}
}

// TestMiddlewareRenderer: WrapWith hands every refusal to the renderer with the status,
// code and message Wrap would send as JSON, and writes nothing itself.
func TestMiddlewareRenderer(t *testing.T) {
	st, _ := newStore(t)
	type refusal struct {
		status    int
		code, msg string
	}
	for name, tc := range map[string]struct {
		a    *stubAuthenticator
		opts []MiddlewareOption
		want refusal
	}{
		"no credentials": {&stubAuthenticator{name: "a token"}, nil, refusal{http.StatusUnauthorized, apiv1.CodeUnauthorized, "no credentials: use a token"}},
		"rejected": {&stubAuthenticator{name: "t", err: fmt.Errorf("%w: token expired", ErrUnauthenticated)}, nil,
			refusal{http.StatusUnauthorized, apiv1.CodeUnauthorized, "unauthenticated: token expired"}},
		"outage": {&stubAuthenticator{name: "t", err: errors.New("boom")}, nil,
			refusal{http.StatusServiceUnavailable, apiv1.CodeUnavailable, "cannot check your credentials right now; try again shortly"}},
		"cross-site": {&stubAuthenticator{name: "h", ok: true, id: &Identity{Username: "u", Email: "u@example.com", Source: SourceHeader}},
			[]MiddlewareOption{WithHeaderCSRF(func(*http.Request) error { return errors.New("no") })},
			refusal{http.StatusForbidden, apiv1.CodeForbidden, "cross-site request refused: no"}},
	} {
		var got []refusal
		render := func(w http.ResponseWriter, _ *http.Request, status int, code, msg string) {
			got = append(got, refusal{status, code, msg})
			w.WriteHeader(http.StatusTeapot)
		}
		m := NewMiddleware([]Authenticator{tc.a}, st, nil, nil, tc.opts...)
		w := httptest.NewRecorder()
		m.WrapWith(whoami, render).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		if len(got) != 1 || got[0] != tc.want || w.Code != http.StatusTeapot || w.Body.Len() != 0 || w.Header().Get("WWW-Authenticate") != "" {
			t.Errorf("%s: rendered %+v (status %d, body %q), want %+v", name, got, w.Code, w.Body, tc.want)
		}
		// Wrap answers the same refusal as the API's JSON error.
		jw, e, _ := serve(t, m.Wrap(whoami), httptest.NewRequest(http.MethodGet, "/", nil))
		if jw.Code != tc.want.status || e.Body.Code != tc.want.code || e.Body.Message != tc.want.msg {
			t.Errorf("%s: Wrap answered %d %+v", name, jw.Code, e.Body)
		}
	}
}
