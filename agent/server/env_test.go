package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
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
	// hold keeps a proxied request open this long, as a long-lived stream would.
	hold time.Duration
	// messages, when set, is the live conversation Messages answers.
	messages []apiv1.Message
	// holdEvents keeps an event stream open until its context ends.
	holdEvents bool
	// proxyHeader is set on every proxied answer (what a session's pod might send).
	proxyHeader http.Header
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
	if f.messages != nil {
		return f.messages, nil
	}
	return []apiv1.Message{{ID: "m1", Role: "user", Text: "hi"}}, nil
}

func (f *fakeConversation) Events(ctx context.Context, _ *store.Session, w http.ResponseWriter) error {
	if f.eventsErr != nil {
		return f.eventsErr
	}
	w.Header().Set("Content-Type", "text/event-stream")
	_, err := io.WriteString(w, "data: {}\n\n")
	if f.holdEvents {
		<-ctx.Done()
	}
	return err
}

// Proxy reports the request as activity, as proxy.Proxy does.
func (f *fakeConversation) Proxy(w http.ResponseWriter, r *http.Request, s *store.Session, rest string, onActivity func()) {
	onActivity()
	for k, v := range f.proxyHeader {
		w.Header()[k] = v
	}
	select {
	case <-time.After(f.hold):
	case <-r.Context().Done():
	}
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
	kr, err := keyring.New([]byte("server-test-auth-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory, Keyring: kr})
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
