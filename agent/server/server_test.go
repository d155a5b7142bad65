package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// fakeSessions stands in for the Kubernetes controller in these handler tests: it
// persists through the real store and records what it was asked. The controller
// itself is tested against a real API server in agent/sessions and test/e2e.
type fakeSessions struct {
	st      store.Store
	mu      sync.Mutex
	seq     int
	touched []string
	// fail, when set, is returned by Create, Stop and Start.
	fail error
}

func (f *fakeSessions) Create(ctx context.Context, s *store.Session, maxActive int) error {
	// Ids the tests can name; the real controller's defaults are pinned in create_test.go.
	f.mu.Lock()
	f.seq++
	s.ID = fmt.Sprintf("s%03d", f.seq)
	f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	return f.st.CreateSession(ctx, s, maxActive)
}

func (f *fakeSessions) setState(ctx context.Context, id string, st apiv1.SessionState, reason string) (*store.Session, error) {
	s, err := f.st.GetSession(ctx, id)
	if err != nil {
		return nil, err
	}
	s.State, s.Reason = st, reason
	return s, f.st.UpdateSession(ctx, s)
}

func (f *fakeSessions) Stop(ctx context.Context, id, reason, _ string) (*store.Session, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return f.setState(ctx, id, apiv1.StateStopping, reason)
}

func (f *fakeSessions) Start(ctx context.Context, id string, maxActive int) (*store.Session, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	s, err := f.st.GetSession(ctx, id)
	if err != nil {
		return nil, err
	}
	s.State = apiv1.StatePending
	return s, f.st.ActivateSession(ctx, s, maxActive)
}

func (f *fakeSessions) Delete(ctx context.Context, id string) error {
	if f.fail != nil {
		return f.fail
	}
	_, err := f.setState(ctx, id, apiv1.StateDeleting, "")
	return err
}

func (f *fakeSessions) Touch(_ context.Context, id, source string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touched = append(f.touched, id+":"+source)
}

func (f *fakeSessions) Password(context.Context, *store.Session) (string, error) {
	return "s3cret-password", nil
}

func (f *fakeSessions) Ready(context.Context) error { return nil }

type fakeConversation struct {
	mu   sync.Mutex
	sent []string
	// send, when set, runs instead of recording the prompt (to fail a send).
	send func(ctx context.Context, s *store.Session) error
	// eventsErr, when set, makes Events fail before writing anything.
	eventsErr error
}

func (f *fakeConversation) Send(ctx context.Context, s *store.Session, text string) error {
	if f.send != nil {
		return f.send(ctx, s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, s.ID+":"+text)
	return nil
}

func (f *fakeConversation) Messages(context.Context, *store.Session) ([]apiv1.Message, error) {
	return []apiv1.Message{{ID: "m1", Role: "user", Text: "hi"}}, nil
}

func (f *fakeConversation) Events(_ context.Context, _ *store.Session, w http.ResponseWriter) error {
	if f.eventsErr != nil {
		return f.eventsErr
	}
	w.Header().Set("Content-Type", "text/event-stream")
	_, err := io.WriteString(w, "data: {}\n\n")
	return err
}

// Proxy reports the request as activity, as proxy.Proxy does.
func (f *fakeConversation) Proxy(w http.ResponseWriter, r *http.Request, s *store.Session, rest string, onActivity func()) {
	onActivity()
	_, _ = fmt.Fprintf(w, "proxied %s %s", s.ID, rest)
}

// denyAuthorizer allows every verb except those listed for a user; "verb/id" denies a verb
// on one session only.
type denyAuthorizer map[string][]string

func (d denyAuthorizer) AuthorizeSession(ctx context.Context, id *auth.Identity, verb, sessionID string) (bool, string, error) {
	for _, v := range d[id.Username] {
		if v == verb+"/"+sessionID {
			return false, "no RBAC rule allows it on this session", nil
		}
	}
	return d.Authorize(ctx, id, verb)
}

func (d denyAuthorizer) Authorize(_ context.Context, id *auth.Identity, verb string) (bool, string, error) {
	for _, v := range d[id.Username] {
		if v == verb {
			return false, "no RBAC rule allows it", nil
		}
	}
	return true, "", nil
}

type env struct {
	t     testing.TB
	st    store.Store
	srv   *httptest.Server
	conv  *fakeConversation
	sess  *fakeSessions
	users map[string]*auth.Identity
	// header is the last answer's header (do).
	header http.Header
	// api is the server itself, for requests served in process (the fuzz tests).
	api *Server
}

// newEnv serves the API with a real SQLite store; the caller is chosen per request
// by the X-Test-User header (only this test's authenticator reads it).
func newEnv(t testing.TB, deny denyAuthorizer) *env {
	t.Helper()
	return newEnvWith(t, deny, nil)
}

// newEnvWith is newEnv with options changed by opts before the server is built.
func newEnvWith(t testing.TB, deny denyAuthorizer, opts func(*Options)) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := &env{t: t, st: st, conv: &fakeConversation{}, sess: &fakeSessions{st: st}, users: map[string]*auth.Identity{}}
	for _, name := range []string{"alice", "bob", "carol", "dave", "root"} {
		u := &store.User{Source: "kubernetes", Subject: name, Email: name + "@example.com"}
		if err := st.UpsertUser(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		e.users[name] = &auth.Identity{UserID: u.ID, Username: name, Email: u.Email, Source: "kubernetes", Admin: name == "root"}
	}
	authn := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := e.users[r.Header.Get("X-Test-User")]
			if id == nil {
				httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "no test user")
				return
			}
			next.ServeHTTP(w, r.WithContext(auth.WithIdentity(r.Context(), id)))
		})
	}
	o := Options{
		Store: st, Sessions: e.sess, Conversation: e.conv, Authorizer: deny, Authenticate: authn,
		Audit: audit.NewRecorder(st, nil), MaxActiveSessions: 3,
	}
	if opts != nil {
		opts(&o)
	}
	s := New(o)
	e.api = s
	e.srv = httptest.NewServer(s)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) do(user, method, path string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	req.Header.Set("X-Test-User", user)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	e.header = resp.Header
	return resp.StatusCode, out
}

func (e *env) create(user string, req apiv1.CreateSessionRequest) apiv1.Session {
	e.t.Helper()
	code, body := e.do(user, "POST", "/api/v1/sessions", req)
	if code != http.StatusCreated {
		e.t.Fatalf("create: %d %s", code, body)
	}
	var s apiv1.Session
	if err := json.Unmarshal(body, &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func errorOf(t *testing.T, body []byte) apiv1.ErrorBody {
	t.Helper()
	var e apiv1.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Body.Code == "" {
		t.Fatalf("not an error envelope: %s", body)
	}
	return e.Body
}

func TestCreateSession(t *testing.T) {
	e := newEnv(t, nil)
	pub := false
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git", Branch: "main", Prompt: "fix the flaky test", Private: &pub})
	if s.ID != "s001" || s.State != apiv1.StatePending || s.Owner != "alice@example.com" || s.Private || s.Title != "fix the flaky test" {
		t.Fatalf("unexpected session: %+v", s)
	}
	s2 := e.create("alice", apiv1.CreateSessionRequest{Repo: "git@github.com:org/other.git"})
	if !s2.Private || s2.Title != "other" {
		t.Fatalf("defaults: private %v title %q", s2.Private, s2.Title)
	}
}

func TestCreateSessionValidation(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name, body, want string
		code             int
	}{
		{"unknown field", `{"repo":"https://h/o/r","colour":"red"}`, `unknown field "colour"; the fields are title, repo, branch`, 400},
		{"unknown field, odd name", `{"a\"b\u00e9":1}`, `unknown field "a\"bé"`, 400},
		{"mistyped field", `{"title":5}`, `field "title": want a string, got number`, 400},
		{"mistyped bool", `{"persistent":"yes"}`, `field "persistent": want true or false, got string`, 400},
		{"not an object", `[1,2]`, `want a JSON object, got array`, 400},
		{"truncated", `{"title":"x"`, `unexpected EOF`, 400},
		{"file repo", `{"repo":"file:///etc"}`, `scheme "file" is not allowed`, 400},
		{"plain http repo", `{"repo":"http://h/o/r"}`, `scheme "http" is not allowed`, 400},
		{"not a url", `{"repo":"hello world"}`, `is not a repository URL`, 400},
		{"password in url", `{"repo":"https://u:p@h/o/r"}`, `contains a password`, 400},
		{"token as https user", `{"repo":"https://ghp_0123456789abcdef@h/o/r"}`, `contains a user name`, 400},
		{"bad branch", `{"repo":"https://h/o/r","branch":"-x"}`, `not a valid git branch`, 400},
		{"branch without repo", `{"branch":"main"}`, `set repo too`, 400},
		{"bad duration", `{"idleTimeout":"soon"}`, `invalid duration "soon"`, 400},
		{"negative ttl", `{"ttl":"-1h"}`, `must not be negative`, 400},
		{"huge ttl", `{"ttl":"100000h"}`, `longer than the maximum`, 400},
		{"control char title", `{"title":"a\nb"}`, `control characters`, 400},
		{"bad model", `{"model":"x y"}`, `not a model name`, 400},
		{"empty body", ``, `request body is empty`, 400},
		{"two values", `{}{}`, `more than one value`, 400},
		{"oversize prompt", `{"prompt":"` + strings.Repeat("a", apiv1.MaxPromptBytes+1) + `"}`, `is more than the maximum`, 400},
		{"oversize body", `{"prompt":"` + strings.Repeat("a", apiv1.MaxBodyBytes) + `"}`, `larger than`, 413},
		// A value that ends before the limit does not make the body acceptable.
		{"oversize after a value", `{"title":"x"}` + strings.Repeat(" ", apiv1.MaxBodyBytes), `larger than`, 413},
		{"garbage after a value", `{"title":"x"} x`, `more than one value`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do("alice", "POST", "/api/v1/sessions", tc.body)
			if code != tc.code || !strings.Contains(errorOf(t, body).Message, tc.want) {
				t.Fatalf("got %d %s, want %d containing %q", code, body, tc.code, tc.want)
			}
		})
	}
	code, _ := e.do("alice", "GET", "/api/v1/sessions", nil)
	if code != 200 {
		t.Fatal(code)
	}
	page, _ := e.st.ListSessions(context.Background(), store.SessionFilter{})
	if len(page.Items) != 0 {
		t.Fatalf("a rejected create left %d sessions", len(page.Items))
	}
}

func TestVisibilityAndOwnership(t *testing.T) {
	e := newEnv(t, nil)
	pub := false
	priv := e.create("alice", apiv1.CreateSessionRequest{Title: "private"})
	public := e.create("alice", apiv1.CreateSessionRequest{Title: "public", Private: &pub})

	if code, body := e.do("bob", "GET", "/api/v1/sessions/"+priv.ID, nil); code != 404 || errorOf(t, body).Code != apiv1.CodeNotFound {
		t.Fatalf("bob sees alice's private session: %d %s", code, body)
	}
	if code, _ := e.do("bob", "GET", "/api/v1/sessions/"+public.ID, nil); code != 200 {
		t.Fatalf("bob cannot see a public session: %d", code)
	}
	if code, body := e.do("bob", "DELETE", "/api/v1/sessions/"+public.ID, nil); code != 403 || !strings.Contains(string(body), "only the owner") {
		t.Fatalf("bob deleted alice's session: %d %s", code, body)
	}
	if code, _ := e.do("bob", "POST", "/api/v1/sessions/"+public.ID+"/stop", nil); code != 403 {
		t.Fatalf("bob stopped alice's session: %d", code)
	}
	// Bob's list holds only the public one; root's all=true holds both.
	var list apiv1.SessionList
	_, body := e.do("bob", "GET", "/api/v1/sessions", nil)
	_ = json.Unmarshal(body, &list)
	if len(list.Items) != 1 || list.Items[0].ID != public.ID {
		t.Fatalf("bob's list: %s", body)
	}
	if code, _ := e.do("bob", "GET", "/api/v1/sessions?all=true", nil); code != 403 {
		t.Fatalf("non-admin listed all: %d", code)
	}
	_, body = e.do("root", "GET", "/api/v1/sessions?all=true", nil)
	_ = json.Unmarshal(body, &list)
	if len(list.Items) != 2 {
		t.Fatalf("admin list: %s", body)
	}
	// The admin may delete anyone's session.
	if code, body := e.do("root", "DELETE", "/api/v1/sessions/"+priv.ID, nil); code != 202 || !strings.Contains(string(body), `"Deleting"`) {
		t.Fatalf("admin delete: %d %s", code, body)
	}
	// Direct-attach credentials are the owner's alone.
	s, _ := e.sess.setState(context.Background(), public.ID, apiv1.StateRunning, "")
	_ = s
	if code, _ := e.do("bob", "POST", "/api/v1/sessions/"+public.ID+"/attach", nil); code != 403 {
		t.Fatalf("bob got alice's password: %d", code)
	}
	code, body := e.do("alice", "POST", "/api/v1/sessions/"+public.ID+"/attach", nil)
	// The answer is exactly the shared wire type the plugin decodes.
	var info apiv1.AttachInfo
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if code != 200 || dec.Decode(&info) != nil || info.Password != "s3cret-password" {
		t.Fatalf("owner attach: %d %s", code, body)
	}
	// But bob may talk to a public running session through the proxy.
	if code, body := e.do("bob", "GET", "/api/v1/sessions/"+public.ID+"/proxy/global/health", nil); code != 200 || string(body) != "proxied "+public.ID+" /global/health" {
		t.Fatalf("proxy: %d %s", code, body)
	}
}

// TestWhoMayDriveASession: reading a public session is for every user; sending it prompts and
// attaching through the proxy are for its owner, admins, and users RBAC grants "attach" on it
// (on every session, or on this one by resourceNames).
func TestWhoMayDriveASession(t *testing.T) {
	// bob holds no attach at all; carol holds it on sessions in general; dave only on s999.
	e := newEnv(t, denyAuthorizer{"bob": {apiv1.VerbAttach}, "dave": {apiv1.VerbAttach + "/s001"}})
	pub := false
	public := e.create("alice", apiv1.CreateSessionRequest{Title: "pairing", Private: &pub})
	if public.ID != "s001" {
		t.Fatalf("session id %s, the test grants on s001", public.ID)
	}
	if _, err := e.sess.setState(context.Background(), public.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	send := apiv1.SendMessageRequest{Text: "rm -rf the tests"}
	proxy := "/api/v1/sessions/" + public.ID + "/proxy/global/health"
	for _, user := range []string{"bob", "dave"} {
		if code, _ := e.do(user, "GET", "/api/v1/sessions/"+public.ID, nil); code != 200 {
			t.Errorf("%s cannot read a public session: %d", user, code)
		}
		code, body := e.do(user, "POST", "/api/v1/sessions/"+public.ID+"/messages", send)
		if code != 403 || !strings.Contains(string(body), "--resource-name="+public.ID) || !strings.Contains(string(body), "attach") {
			t.Errorf("%s sent a prompt to alice's session: %d %s", user, code, body)
		}
		if code, body := e.do(user, "GET", proxy, nil); code != 403 {
			t.Errorf("%s attached to alice's session through the proxy: %d %s", user, code, body)
		}
	}
	for _, user := range []string{"alice", "root", "carol"} {
		if code, body := e.do(user, "POST", "/api/v1/sessions/"+public.ID+"/messages", send); code != 202 {
			t.Errorf("%s may not send to the session: %d %s", user, code, body)
		}
		if code, body := e.do(user, "GET", proxy, nil); code != 200 {
			t.Errorf("%s may not attach through the proxy: %d %s", user, code, body)
		}
	}
	// Denials are audited.
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, ev := range page.Items {
		if ev.Outcome == audit.OutcomeDenied && ev.Target == public.ID {
			denied++
		}
	}
	if denied != 4 {
		t.Errorf("%d denials audited, want 4", denied)
	}
}

func TestAuthorizationDeniedIsAudited(t *testing.T) {
	e := newEnv(t, denyAuthorizer{"bob": {apiv1.VerbCreate}})
	code, body := e.do("bob", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{})
	if code != 403 || !strings.Contains(errorOf(t, body).Message, "cake-agents-user") {
		t.Fatalf("got %d %s", code, body)
	}
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range page.Items {
		if ev.Action == "session.create" && ev.Outcome == "denied" && ev.Actor == "bob@example.com" {
			found = true
		}
	}
	if !found {
		t.Fatalf("denial not audited: %+v", page.Items)
	}
	if code, _ := e.do("bob", "GET", "/api/v1/audit", nil); code != 403 {
		t.Fatalf("non-admin read the audit log: %d", code)
	}
	if code, _ := e.do("root", "GET", "/api/v1/audit", nil); code != 200 {
		t.Fatalf("admin audit: %d", code)
	}
}

func TestQuotaAndPagination(t *testing.T) {
	e := newEnv(t, nil)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.create("alice", apiv1.CreateSessionRequest{}).ID)
	}
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{})
	if code != 429 || errorOf(t, body).Code != apiv1.CodeQuotaExceeded {
		t.Fatalf("quota: %d %s", code, body)
	}
	// A start makes a session active again, so it counts too: stop one, create one in
	// its place, and the stopped one may not start.
	if _, err := e.sess.setState(context.Background(), ids[0], apiv1.StateStopped, ""); err != nil {
		t.Fatal(err)
	}
	e.create("alice", apiv1.CreateSessionRequest{})
	code, body = e.do("alice", "POST", "/api/v1/sessions/"+ids[0]+"/start", nil)
	if code != 429 || errorOf(t, body).Code != apiv1.CodeQuotaExceeded || !strings.Contains(errorOf(t, body).Message, "maximum of 3 active sessions") {
		t.Fatalf("start over the quota: %d %s", code, body)
	}
	seen := map[string]bool{}
	cont := ""
	for pages := 0; ; pages++ {
		_, body := e.do("alice", "GET", "/api/v1/sessions?limit=2&continue="+cont, nil)
		var list apiv1.SessionList
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			if seen[s.ID] {
				t.Fatalf("duplicate %s", s.ID)
			}
			seen[s.ID] = true
		}
		if list.Continue == "" {
			break
		}
		cont = list.Continue
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 4 {
		t.Fatalf("saw %d sessions, want 4", len(seen))
	}
	for _, q := range []string{"limit=0", "limit=x", "state=Sleeping", "continue=garbage"} {
		if code, body := e.do("alice", "GET", "/api/v1/sessions?"+q, nil); code != 400 {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
}

func TestMessagesNeedRunningSession(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	code, body := e.do("alice", "POST", "/api/v1/sessions/"+s.ID+"/messages", apiv1.SendMessageRequest{Text: "hello"})
	if code != 409 || errorOf(t, body).Code != apiv1.CodeNotRunning || !strings.Contains(string(body), "session start") {
		t.Fatalf("got %d %s", code, body)
	}
	_, _ = e.sess.setState(context.Background(), s.ID, apiv1.StateRunning, "")
	if code, _ := e.do("alice", "POST", "/api/v1/sessions/"+s.ID+"/messages", apiv1.SendMessageRequest{Text: " "}); code != 400 {
		t.Fatalf("empty prompt: %d", code)
	}
	if code, body := e.do("alice", "POST", "/api/v1/sessions/"+s.ID+"/messages", apiv1.SendMessageRequest{Text: "hello"}); code != 202 {
		t.Fatalf("send: %d %s", code, body)
	}
	if len(e.conv.sent) != 1 || e.conv.sent[0] != s.ID+":hello" {
		t.Fatalf("sent: %v", e.conv.sent)
	}
	if code, body := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/logs", nil); code != 200 || !strings.Contains(string(body), `"role": "user"`) {
		t.Fatalf("logs: %d %s", code, body)
	}
}

func TestTokensAndWhoAmI(t *testing.T) {
	e := newEnv(t, denyAuthorizer{"bob": {apiv1.VerbDelete}})
	code, body := e.do("bob", "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: "laptop"})
	if code != 201 {
		t.Fatalf("create token: %d %s", code, body)
	}
	var tok apiv1.Token
	_ = json.Unmarshal(body, &tok)
	if !strings.HasPrefix(tok.Token, "cka_") || tok.ExpiresAt == nil {
		t.Fatalf("token: %+v", tok)
	}
	// Names are unique per user; a second "laptop" is a conflict that says so (it once
	// read "changed by someone else"), and a name with control characters is refused
	// before the store sees it (it once was a 500).
	if code, body := e.do("bob", "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: "laptop"}); code != 409 || !strings.Contains(errorOf(t, body).Message, `already have a token named "laptop"`) {
		t.Fatalf("second token named laptop: %d %s", code, body)
	}
	if code, body := e.do("bob", "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: "lap\ttop"}); code != 400 || !strings.Contains(errorOf(t, body).Message, "plain text") {
		t.Fatalf("token name with a tab: %d %s", code, body)
	}
	_, body = e.do("bob", "GET", "/api/v1/tokens", nil)
	if strings.Contains(string(body), tok.Token) || !strings.Contains(string(body), "laptop") {
		t.Fatalf("list leaks the secret or misses the token: %s", body)
	}
	if code, _ := e.do("alice", "DELETE", "/api/v1/tokens/"+tok.ID, nil); code != 404 {
		t.Fatalf("alice revoked bob's token: %d", code)
	}
	if code, _ := e.do("bob", "DELETE", "/api/v1/tokens/"+tok.ID, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	_, body = e.do("bob", "GET", "/api/v1/whoami", nil)
	var who apiv1.WhoAmI
	_ = json.Unmarshal(body, &who)
	if who.Username != "bob" || who.Permissions["delete"] || !who.Permissions["create"] || who.User.Email != "bob@example.com" {
		t.Fatalf("whoami: %s", body)
	}
}

func TestProbesOpenAPIAndUnknownRoutes(t *testing.T) {
	e := newEnv(t, nil)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/api/v1/openapi.json": 200} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	code, body := e.do("alice", "GET", "/api/v1/nope", nil)
	if code != 404 || !strings.Contains(errorOf(t, body).Message, "openapi.json") {
		t.Fatalf("unknown route: %d %s", code, body)
	}
	code, body = e.do("alice", "PUT", "/api/v1/sessions", nil)
	if code != 405 {
		t.Fatalf("wrong method: %d %s", code, body)
	}
	resp, err := http.Get(e.srv.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	for _, rt := range s.apiRoutes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		path = strings.ReplaceAll(path, "{rest...}", "{rest}")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok && !strings.HasPrefix(rt.pattern, "/") {
			t.Errorf("route %s missing from the OpenAPI document", rt.pattern)
		}
	}
	// Without an identity the API is closed.
	resp, err = http.Get(e.srv.URL + "/api/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous list: %d", resp.StatusCode)
	}
}

func TestNotReady(t *testing.T) {
	h := NotReady(func() map[string]error { return map[string]error{"store": errors.New("connecting")} })
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/api/v1/sessions": 503} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}

// TestRepoRuleAgreesWithTheInitContainer: a repository the API accepts is one the session's
// init container clones, and one it refuses is answered 400 naming the fix, not 201 and a
// session that fails later (the API once accepted -x@github.com:org/repo and
// git@github.com:/abs/repo, which the init container refused).
func TestRepoRuleAgreesWithTheInitContainer(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.MaxActiveSessions = 100 })
	for _, tc := range []struct{ repo, want string }{
		{"https://github.com/org/repo.git", ""},
		{"ssh://git@github.com:2222/org/repo.git", ""},
		{"git@github.com:org/repo.git", ""},
		{"-x@github.com:org/repo", "must not start with '-', which git would read as an option"},
		{"git@github.com:/abs/repo", "write git@github.com:abs/repo for a path under the login's home, or ssh://git@github.com/abs/repo"},
		{"--upload-pack=touch /tmp/x", "must not start with '-'"},
		{"ext::sh -c touch% /tmp/pwned", `scheme "ext" is not allowed`},
		{"file:///etc", `scheme "file" is not allowed`},
		{"/srv/git/repo", "is not a repository URL"},
		{"https://x-access-token@github.com/org/r", "contains a user name"},
		{"ssh://git:secret@github.com/org/repo.git", "contains a password"},
	} {
		code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Repo: tc.repo})
		initErr := sessioninit.CheckRepo(tc.repo, false)
		if tc.want == "" {
			if code != http.StatusCreated || initErr != nil {
				t.Errorf("%q: API %d %s, init container %v; want both to accept", tc.repo, code, body, initErr)
			}
			continue
		}
		if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "repo: ") || !strings.Contains(errorOf(t, body).Message, tc.want) {
			t.Errorf("%q: API %d %s, want 400 naming repo and containing %q", tc.repo, code, body, tc.want)
		}
		if initErr == nil {
			t.Errorf("%q: the init container accepts what the API refuses", tc.repo)
		}
	}
	page, err := e.st.ListSessions(context.Background(), store.SessionFilter{})
	if err != nil || len(page.Items) != 3 {
		t.Fatalf("stored %d sessions (%v), want only the 3 accepted", len(page.Items), err)
	}
}

// TestSessionIDRule: a path id that is not a session id (ids start with a letter, are at
// most 40 characters and do not end with '-') is a 400 stating the rule; a well-formed
// unknown id is a 404.
func TestSessionIDRule(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"1abc", strings.Repeat("a", 41), "abc-", "Abc", "a_b"} {
		for _, route := range []struct{ method, suffix string }{{"GET", ""}, {"POST", "/stop"}, {"POST", "/attach"}, {"GET", "/proxy/"}} {
			code, body := e.do("alice", route.method, "/api/v1/sessions/"+id+route.suffix, nil)
			if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "starting with a letter and not ending with '-'") {
				t.Errorf("%s %s%s: %d %s, want 400 stating the id rule", route.method, id, route.suffix, code, body)
			}
		}
	}
	if code, body := e.do("alice", "GET", "/api/v1/sessions/"+strings.Repeat("a", 40), nil); code != http.StatusNotFound {
		t.Errorf("longest valid id: %d %s, want 404", code, body)
	}
}

// TestLifecycleErrorStatus: an unreachable database is a 503 whose message does not
// echo the driver's error (it names hosts and users), an operation the session's state
// does not allow is a 409 that says why, and anything else is a 500 without detail.
func TestLifecycleErrorStatus(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	dbDown := fmt.Errorf("postgres: create session: %w: failed to connect to user=agents host=10.1.2.3", store.ErrUnavailable)
	for _, tc := range []struct {
		name, method, path string
		fail               error
		code               int
		want               string
	}{
		{"create, database down", "POST", "/api/v1/sessions", dbDown, 503, "database is unavailable"},
		{"create, unexpected", "POST", "/api/v1/sessions", errors.New("boom at 10.1.2.3"), 500, "internal error"},
		{"stop, database down", "POST", "/api/v1/sessions/" + s.ID + "/stop", dbDown, 503, "database is unavailable"},
		{"start, database down", "POST", "/api/v1/sessions/" + s.ID + "/start", dbDown, 503, "database is unavailable"},
		{"start, wrong state", "POST", "/api/v1/sessions/" + s.ID + "/start", fmt.Errorf("session %s is still stopping: %w", s.ID, sessions.ErrInvalidState), 409, "still stopping"},
		{"stop, busy", "POST", "/api/v1/sessions/" + s.ID + "/stop", fmt.Errorf("session %s is busy: another operation on it has been running for more than 30s; retry shortly: %w", s.ID, sessions.ErrBusy), 409, "is busy"},
		{"delete, busy", "DELETE", "/api/v1/sessions/" + s.ID, fmt.Errorf("session %s is busy: retry shortly: %w", s.ID, sessions.ErrBusy), 409, "is busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.sess.fail = tc.fail
			defer func() { e.sess.fail = nil }()
			body := any(nil)
			if tc.path == "/api/v1/sessions" {
				body = apiv1.CreateSessionRequest{}
			}
			code, out := e.do("alice", tc.method, tc.path, body)
			if code != tc.code || !strings.Contains(errorOf(t, out).Message, tc.want) || strings.Contains(string(out), "10.1.2.3") {
				t.Fatalf("got %d %s, want %d containing %q and no driver detail", code, out, tc.code, tc.want)
			}
			if ra := e.header.Get("Retry-After"); (code == http.StatusServiceUnavailable) != (ra != "") {
				t.Fatalf("status %d with Retry-After %q: every 503 and only a 503 says when to retry", code, ra)
			}
		})
	}
}

// TestSendLosingToStopIs409: a message whose delivery fails because the session was
// stopped meanwhile (through this replica or another) is answered with that, a 409,
// not as an unreachable OpenCode; a deleted one is a 404; a Running one whose OpenCode
// does not answer stays a 502.
func TestSendLosingToStopIs409(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s := e.create("alice", apiv1.CreateSessionRequest{})
	if _, err := e.sess.setState(ctx, s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/sessions/" + s.ID + "/messages"
	e.conv.send = func(ctx context.Context, s *store.Session) error {
		if _, err := e.sess.setState(ctx, s.ID, apiv1.StateStopping, "StoppedByUser"); err != nil {
			return err
		}
		return errors.New("dial pod: connection refused")
	}
	code, body := e.do("alice", "POST", path, apiv1.SendMessageRequest{Text: "hi"})
	if code != http.StatusConflict || errorOf(t, body).Code != apiv1.CodeNotRunning || !strings.Contains(errorOf(t, body).Message, "is Stopping, not Running") {
		t.Fatalf("send losing to a stop: got %d %s, want 409 NotRunning naming the state", code, body)
	}

	if _, err := e.sess.setState(ctx, s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	e.conv.send = func(context.Context, *store.Session) error { return errors.New("dial pod: connection refused") }
	code, body = e.do("alice", "POST", path, apiv1.SendMessageRequest{Text: "hi"})
	if code != http.StatusBadGateway || !strings.Contains(errorOf(t, body).Message, "connection refused") {
		t.Fatalf("send to an unreachable Running session: got %d %s, want 502", code, body)
	}

	e.conv.send = func(ctx context.Context, s *store.Session) error {
		if err := e.st.DeleteSession(ctx, s.ID); err != nil {
			return err
		}
		return errors.New("dial pod: connection refused")
	}
	code, body = e.do("alice", "POST", path, apiv1.SendMessageRequest{Text: "hi"})
	if code != http.StatusNotFound {
		t.Fatalf("send losing to a delete: got %d %s, want 404", code, body)
	}
}

// TestEventsFailureBeforeStreamIs502: when OpenCode cannot be reached before the event
// stream starts, the caller gets an error, not an empty 200.
func TestEventsFailureBeforeStreamIs502(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	if _, err := e.sess.setState(context.Background(), s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	e.conv.eventsErr = errors.New("dial pod: connection refused")
	code, body := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/events", nil)
	if code != http.StatusBadGateway || !strings.Contains(errorOf(t, body).Message, "connection refused") {
		t.Fatalf("got %d %s, want 502 naming the cause", code, body)
	}
	e.conv.eventsErr = nil
	code, body = e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/events", nil)
	if code != http.StatusOK || !strings.Contains(string(body), "data: {}") {
		t.Fatalf("stream: got %d %s", code, body)
	}
}

// whoami publishes how the agent reads identity headers, for `kubectl agents doctor`.
func TestWhoAmIPublishesHeaderAuthInfo(t *testing.T) {
	info := apiv1.HeaderAuthInfo{State: apiv1.HeaderAuthEnabled, EmailHeader: "X-Forwarded-Email", JWTHeader: "X-Forwarded-Access-Token",
		TrustedProxyCIDRs: []string{"127.0.0.6/32", "::6/128"}, JWTVerified: true, JWTIssuer: "https://idp.example.com", JWTAudiences: []string{"cake-agents"}}
	e := newEnvWith(t, nil, func(o *Options) { o.HeaderAuth, o.HeaderAuthInfo = info.State, info })
	code, body := e.do("bob", "GET", "/api/v1/whoami", nil)
	var who apiv1.WhoAmI
	if err := json.Unmarshal(body, &who); code != 200 || err != nil {
		t.Fatalf("whoami: %d %s", code, body)
	}
	if who.HeaderAuth != apiv1.HeaderAuthEnabled || who.HeaderAuthInfo == nil || !reflect.DeepEqual(*who.HeaderAuthInfo, info) {
		t.Errorf("whoami header auth = %q %+v, want %+v", who.HeaderAuth, who.HeaderAuthInfo, info)
	}
	// Without header auth configured (tests, old wiring) nothing is claimed.
	_, body = newEnv(t, nil).do("bob", "GET", "/api/v1/whoami", nil)
	if strings.Contains(string(body), "headerAuthInfo") {
		t.Errorf("whoami without header auth info: %s", body)
	}
}

func decodeToken(t *testing.T, body []byte) apiv1.Token {
	t.Helper()
	var tok apiv1.Token
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatalf("not a token: %s", body)
	}
	return tok
}

// Every token expires: the default, at most the maximum, and never after the token
// that created it.
func TestTokenLifetimes(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	e := newEnvWith(t, nil, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.DefaultTokenTTL, o.MaxTokenTTL = 30*24*time.Hour, 90*24*time.Hour
	})
	// "tok" is alice signed in with a personal access token that expires in an hour.
	tokID := *e.users["alice"]
	tokID.Source, tokID.TokenExpiresAt = auth.SourceToken, now.Add(time.Hour)
	e.users["tok"] = &tokID

	expiresIn := func(d time.Duration) *apiv1.Duration { return &apiv1.Duration{Duration: d} }
	for _, tc := range []struct {
		name, user string
		expiresIn  *apiv1.Duration
		code       int
		expires    time.Duration // after now, when created (the store keeps microseconds)
		message    string
	}{
		{name: "default", user: "alice", code: 201, expires: 30 * 24 * time.Hour},
		{name: "zero means the default", user: "alice", expiresIn: expiresIn(0), code: 201, expires: 30 * 24 * time.Hour},
		{name: "asked for", user: "alice", expiresIn: expiresIn(48 * time.Hour), code: 201, expires: 48 * time.Hour},
		{name: "the maximum", user: "alice", expiresIn: expiresIn(90 * 24 * time.Hour), code: 201, expires: 90 * 24 * time.Hour},
		{name: "above the maximum", user: "alice", expiresIn: expiresIn(91 * 24 * time.Hour), code: 400,
			message: "expiresIn: 2184h0m0s is longer than this agent's maximum token lifetime of 2160h0m0s (--token-max-ttl, chart value tokens.maxTTL)"},
		{name: "too short", user: "alice", expiresIn: expiresIn(30 * time.Second), code: 400, message: "expiresIn: 30s is shorter than the minimum of 1m"},
		{name: "with a token: no longer than it", user: "tok", code: 201, expires: time.Hour},
		{name: "with a token: shorter is fine", user: "tok", expiresIn: expiresIn(10 * time.Minute), code: 201, expires: 10 * time.Minute},
		{name: "with a token: longer is refused", user: "tok", expiresIn: expiresIn(2 * time.Hour), code: 400,
			message: "expiresIn: 2h0m0s is longer than the personal access token you used, which expires at 2026-12-01T13:00:00Z (in 1h0m0s): a token cannot outlive the token that created it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(tc.user, "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: tc.name, ExpiresIn: tc.expiresIn})
			if code != tc.code {
				t.Fatalf("create: %d %s, want %d", code, body, tc.code)
			}
			if tc.code != 201 {
				if msg := errorOf(t, body).Message; !strings.Contains(msg, tc.message) {
					t.Errorf("message %q, want it to contain %q", msg, tc.message)
				}
				return
			}
			tok := decodeToken(t, body)
			if tok.ExpiresAt == nil || tok.ExpiresAt.Sub(now.Add(tc.expires)).Abs() > time.Millisecond {
				t.Errorf("expires at %v, want %v", tok.ExpiresAt, now.Add(tc.expires))
			}
		})
	}

	// A token stored without an expiry (an older agent's) is shown, and treated, as
	// expiring the maximum lifetime after its creation.
	created := now.Add(-time.Hour)
	if err := e.st.CreateToken(context.Background(), &store.Token{OwnerID: e.users["bob"].UserID, Name: "old", Hash: auth.HashToken("cka_old"), CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	_, body := e.do("bob", "GET", "/api/v1/tokens", nil)
	var list apiv1.TokenList
	if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 1 || list.Items[0].ExpiresAt == nil ||
		!list.Items[0].ExpiresAt.Equal(created.Add(90*24*time.Hour)) || list.Items[0].Owner != "bob@example.com" {
		t.Fatalf("bob's tokens: %s", body)
	}
}

// An admin revokes every token of a user; anyone may revoke all of their own.
func TestRevokeUserTokens(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct{ user, name string }{{"alice", "laptop"}, {"alice", "ci"}, {"bob", "laptop"}} {
		if code, body := e.do(c.user, "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: c.name}); code != 201 {
			t.Fatalf("create %s's %s: %d %s", c.user, c.name, code, body)
		}
	}
	list := func(user, query string) (int, apiv1.TokenList, []byte) {
		code, body := e.do(user, "GET", "/api/v1/tokens"+query, nil)
		var l apiv1.TokenList
		_ = json.Unmarshal(body, &l)
		return code, l, body
	}

	if code, body := e.do("bob", "DELETE", "/api/v1/tokens?user=alice", nil); code != 403 || !strings.Contains(errorOf(t, body).Message, "are for admins") {
		t.Fatalf("bob revoking alice's tokens: %d %s", code, body)
	}
	if code, _, body := list("bob", "?user=alice@example.com"); code != 403 {
		t.Fatalf("bob listing alice's tokens: %d %s", code, body)
	}
	code, l, body := list("root", "?user=alice@example.com")
	if code != 200 || len(l.Items) != 2 || l.Items[0].Owner != "alice@example.com" || l.Items[0].OwnerID != e.users["alice"].UserID || l.Items[0].Token != "" {
		t.Fatalf("admin listing alice's tokens: %d %s", code, body)
	}

	code, body = e.do("root", "DELETE", "/api/v1/tokens?user=alice", nil)
	var rev apiv1.TokenRevocation
	if err := json.Unmarshal(body, &rev); code != 200 || err != nil || rev.Revoked != 2 || len(rev.Users) != 1 || rev.Users[0].ID != e.users["alice"].UserID {
		t.Fatalf("admin revoking alice's tokens: %d %s", code, body)
	}
	if _, l, body := list("alice", ""); len(l.Items) != 0 {
		t.Errorf("alice still has tokens: %s", body)
	}
	if _, l, body := list("bob", ""); len(l.Items) != 1 {
		t.Errorf("bob's token was touched: %s", body)
	}

	code, body = e.do("bob", "DELETE", "/api/v1/tokens?user=me", nil)
	if err := json.Unmarshal(body, &rev); code != 200 || err != nil || rev.Revoked != 1 {
		t.Fatalf("bob revoking all his own tokens: %d %s", code, body)
	}
	if code, body := e.do("root", "DELETE", "/api/v1/tokens?user=nobody@example.com", nil); code != 404 || !strings.Contains(errorOf(t, body).Message, `no user "nobody@example.com" is known`) {
		t.Errorf("unknown user: %d %s", code, body)
	}
	if code, body := e.do("root", "DELETE", "/api/v1/tokens", nil); code != 400 || !strings.Contains(errorOf(t, body).Message, "user: name the user") {
		t.Errorf("no user: %d %s", code, body)
	}

	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{Target: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Items {
		got = append(got, ev.Actor+" "+ev.Action+" "+ev.Outcome)
	}
	if want := []string{"root@example.com token.revoke-all success", "bob@example.com token.revoke-all denied"}; !reflect.DeepEqual(got, want) {
		t.Errorf("audit of revocations of alice's tokens = %q, want %q", got, want)
	}
}
