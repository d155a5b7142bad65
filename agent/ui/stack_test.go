package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/server"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/agent/ui"
	"github.com/cakeai/cake-agents/agent/vcs"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakegithub"
)

// emailHeader is the identity header the test proxy sets, as oauth2-proxy does.
const emailHeader = "X-Auth-Request-Email"

// stack is a real agent HTTP stack: agent/server with a real SQLite store, the real
// auth middleware (header auth trusting loopback for this test only, personal access
// tokens, the UI's cookie) and the UI mounted at "/". Only the Kubernetes side is a
// stand-in: the controller moves sessions through their states, and the conversation
// streams a scripted reply the way OpenCode's event bus does.
type stack struct {
	t       *testing.T
	st      store.Store
	handler http.Handler
	agent   *httptest.Server
	conv    *fakeConversation
	ctrl    *fakeController
	// github is the GitHub the agent links accounts with (device flow).
	github *fakegithub.Server
}

func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackWith(t, nil)
}

// newStackWith builds the stack with the sessions controller mk returns (nil: the
// stand-in). mk gets the store and the conversation, whose Send delivers prompts.
func newStackWith(t *testing.T, mk func(st store.Store, conv *fakeConversation) server.Sessions) *stack {
	t.Helper()
	return newStackConfig(t, mk, nil)
}

// stackHook changes the server's and the UI's options before the stack is built;
// agentHost is the agent's host:port.
type stackHook func(so *server.Options, uo *ui.Options, kr *keyring.Keyring, authn *auth.Middleware, agentHost string)

// newStackConfig is newStackWith with options changed by hook (nil: none).
func newStackConfig(t *testing.T, mk func(st store.Store, conv *fakeConversation) server.Sessions, hook stackHook) *stack {
	t.Helper()
	ctx := context.Background()
	kr, err := keyring.New([]byte("ui-test-auth-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	log := hclog.New(&hclog.LoggerOptions{Name: "agent", Level: hclog.Warn})
	header, err := auth.NewHeaderAuthenticator(auth.HeaderConfig{
		EmailHeader: emailHeader,
		// The test proxy and the browser both connect from loopback; a real agent
		// never trusts loopback (port-forwarded connections arrive there).
		TrustedProxyCIDRs: []string{"127.0.0.0/8"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokenAuthenticator(st, log)
	rec := audit.NewRecorder(st, log)
	authn := auth.NewMiddleware([]auth.Authenticator{header, tokens, ui.NewCookieAuthenticator(tokens, "")}, st, rec, log,
		auth.WithAdminResolver(emailAdmins{"root@example.com": true}))
	conv := newFakeConversation()
	ctrl := &fakeController{st: st, conv: conv, step: 400 * time.Millisecond}
	var sessions server.Sessions = ctrl
	if mk != nil {
		sessions = mk(st, conv)
	}
	gh := fakegithub.New("Iv1.ui-test")
	ghSrv := httptest.NewServer(gh)
	t.Cleanup(ghSrv.Close)
	// Sessions' workspaces are on WorkBranch, and their pull requests are on the fake
	// GitHub, looked up with the owner's linked token.
	gh.AddUserToken(linkedToken)
	// Unstarted, so its address is known before the server is built.
	agent := httptest.NewUnstartedServer(nil)
	uo := ui.Options{Authenticate: authn.WrapWith, Tokens: tokens, Log: log}
	so := server.Options{
		GitHub: &github.DeviceFlow{BaseURL: ghSrv.URL, ClientID: "Iv1.ui-test", Scope: "repo", HTTP: ghSrv.Client()},
		Workspaces: &vcs.Watcher{Branches: conv, Tokens: staticToken(linkedToken), Store: st, GitHubHost: "github.com",
			APIURL: github.APIURL(ghSrv.URL), HTTP: ghSrv.Client()},
		Store:             st,
		Sessions:          sessions,
		Conversation:      conv,
		Authenticate:      authn.Wrap,
		Audit:             rec,
		Log:               log,
		MaxActiveSessions: 5,
		// As the agent is wired with a gateway: sessions may start without stored providers.
		Providers: &providers.Defaults{LiteLLMBaseURL: "http://litellm:4000/v1", DefaultModel: "gpt-4o-mini"},
	}
	if hook != nil {
		hook(&so, &uo, kr, authn, agent.Listener.Addr().String())
	}
	so.UI = ui.New(uo)
	srv := server.New(so)
	agent.Config.Handler = srv
	agent.Start()
	t.Cleanup(agent.Close)
	t.Cleanup(ctrl.wait)
	return &stack{t: t, st: st, handler: srv, agent: agent, conv: conv, ctrl: ctrl, github: gh}
}

// proxy starts an authenticating proxy in front of the agent that signs every request
// in as email, the way oauth2-proxy does after its own login.
func (s *stack) proxy(email string) *httptest.Server {
	target, _ := url.Parse(s.agent.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // stream SSE at once
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(emailHeader)
		r.Header.Set(emailHeader, email)
		rp.ServeHTTP(w, r)
	}))
	s.t.Cleanup(p.Close)
	return p
}

// user upserts a header user and returns its id.
func (s *stack) user(email string) string {
	u := &store.User{Source: auth.SourceHeader, Subject: email, Email: email}
	if err := s.st.UpsertUser(context.Background(), u); err != nil {
		s.t.Fatal(err)
	}
	return u.ID
}

// token issues a personal access token for email.
func (s *stack) token(email string) string {
	secret, _, err := auth.IssueToken(context.Background(), s.st, s.user(email), "test", time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return secret
}

type emailAdmins map[string]bool

func (a emailAdmins) Admin(_ context.Context, id *auth.Identity) (bool, error) {
	return a[id.Email], nil
}

// fakeController stands in for agent/sessions: it persists through the real store
// and moves sessions Pending → Starting → Running (and Stopping → Stopped, Deleting →
// gone) one step at a time, delivering the initial prompt when Running as the real
// agent's ready hook does.
type fakeController struct {
	st   store.Store
	conv *fakeConversation
	step time.Duration
	mu   sync.Mutex
	wg   sync.WaitGroup
	seq  atomic.Int64
}

func (c *fakeController) wait() { c.wg.Wait() }

func (c *fakeController) update(id string, fn func(s *store.Session)) (*store.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx := context.Background()
	s, err := c.st.GetSession(ctx, id)
	if err != nil {
		return nil, err
	}
	fn(s)
	s.UpdatedAt = time.Now().UTC()
	return s, c.st.UpdateSession(ctx, s)
}

// later applies the states one step apart.
func (c *fakeController) later(id string, steps ...func(s *store.Session)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for _, fn := range steps {
			time.Sleep(c.step)
			s, err := c.update(id, fn)
			if err != nil {
				return
			}
			if s.State == apiv1.StateRunning && s.Prompt != "" && !s.PromptSent {
				if _, err := c.update(id, func(s *store.Session) { s.PromptSent = true }); err == nil {
					_ = c.conv.Send(context.Background(), s, s.Prompt)
				}
			}
		}
	}()
}

func (c *fakeController) boot(id string) {
	c.later(id,
		func(s *store.Session) {
			s.State, s.Reason, s.Message = apiv1.StateStarting, "PodScheduled", "pulling images"
		},
		func(s *store.Session) {
			now := time.Now().UTC()
			s.State, s.Reason, s.Message = apiv1.StateRunning, "", ""
			s.PodName, s.PodNamespace, s.StartedAt = "cake-session-"+s.ID, "sessions", &now
		})
}

func (c *fakeController) Create(ctx context.Context, s *store.Session, maxActive int) error {
	// The real controller fills the id (and the defaults, which these tests do not show).
	s.ID = fmt.Sprintf("s%d-%d", time.Now().UnixNano()%100000, c.seq.Add(1))
	if err := c.st.CreateSession(ctx, s, maxActive); err != nil {
		return err
	}
	c.boot(s.ID)
	return nil
}

func (c *fakeController) Stop(_ context.Context, id, reason, message string) (*store.Session, error) {
	s, err := c.update(id, func(s *store.Session) { s.State, s.Reason, s.Message = apiv1.StateStopping, reason, message })
	if err != nil {
		return nil, err
	}
	c.later(id, func(s *store.Session) {
		now := time.Now().UTC()
		s.State, s.StoppedAt, s.PodName = apiv1.StateStopped, &now, ""
	})
	return s, nil
}

func (c *fakeController) Start(_ context.Context, id string, _ int) (*store.Session, error) {
	s, err := c.update(id, func(s *store.Session) { s.State, s.Reason, s.Message = apiv1.StatePending, "", "" })
	if err != nil {
		return nil, err
	}
	c.boot(id)
	return s, nil
}

func (c *fakeController) Delete(_ context.Context, id string) error {
	if _, err := c.update(id, func(s *store.Session) { s.State = apiv1.StateDeleting }); err != nil {
		return err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		time.Sleep(c.step)
		c.mu.Lock()
		defer c.mu.Unlock()
		_ = c.st.DeleteSession(context.Background(), id)
	}()
	return nil
}

func (c *fakeController) Touch(ctx context.Context, id, source string) {
	_ = c.st.TouchSession(ctx, id, time.Now().UTC(), source)
}

func (c *fakeController) Password(context.Context, *store.Session) (string, error) {
	return "session-password", nil
}

func (c *fakeController) Ready(context.Context) error { return nil }

// Reply is what the fake model answers to every prompt, streamed in small deltas.
const Reply = "I found the flaky test: TestQueueDrain races with the worker shutdown. I added a WaitGroup so Drain waits for in-flight jobs, and the test now passes 500 times in a row."

// fakeConversation streams events shaped like OpenCode's bus (message.updated,
// message.part.updated, message.part.delta, session.status, session.idle) and keeps
// the history GET /logs returns.
type fakeConversation struct {
	mu      sync.Mutex
	history map[string][]apiv1.Message
	subs    map[string]map[chan []byte]struct{}
	seq     int
	sent    []string
	// delay between deltas; long enough for a browser to see the reply grow.
	delay time.Duration
}

// WorkBranch is the branch every fake session's workspace is on.
const WorkBranch = "cake/fix-flaky-test"

const linkedToken = "gho_ui_linked"

// Branch implements vcs.Branches.
func (f *fakeConversation) Branch(context.Context, *store.Session) (string, error) {
	return WorkBranch, nil
}

// staticToken is the git token every session has.
type staticToken string

func (s staticToken) GitToken(context.Context, *store.Session) (string, error) { return string(s), nil }

func newFakeConversation() *fakeConversation {
	return &fakeConversation{history: map[string][]apiv1.Message{}, subs: map[string]map[chan []byte]struct{}{}, delay: 120 * time.Millisecond}
}

func (f *fakeConversation) publish(sid string, ev map[string]any) {
	b, _ := json.Marshal(ev)
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs[sid] {
		select {
		case ch <- b:
		default:
		}
	}
}

func (f *fakeConversation) Send(_ context.Context, s *store.Session, text string) error {
	f.mu.Lock()
	f.seq++
	uid, aid := fmt.Sprintf("msg_u%d", f.seq), fmt.Sprintf("msg_a%d", f.seq)
	f.history[s.ID] = append(f.history[s.ID], apiv1.Message{ID: uid, Role: "user", Text: text, CreatedAt: time.Now().UTC()})
	f.sent = append(f.sent, s.ID+":"+text)
	f.mu.Unlock()
	sid := s.ID
	f.publish(sid, map[string]any{"type": "message.updated", "properties": map[string]any{"info": map[string]any{"id": uid, "role": "user"}}})
	f.publish(sid, map[string]any{"type": "message.part.updated", "properties": map[string]any{"part": map[string]any{"type": "text", "messageID": uid, "text": text}}})
	go func() {
		f.publish(sid, map[string]any{"type": "session.status", "properties": map[string]any{"status": map[string]any{"type": "busy"}}})
		f.publish(sid, map[string]any{"type": "message.updated", "properties": map[string]any{"info": map[string]any{"id": aid, "role": "assistant"}}})
		words := strings.SplitAfter(Reply, " ")
		for i := 0; i < len(words); i += 3 {
			time.Sleep(f.delay)
			f.publish(sid, map[string]any{"type": "message.part.delta", "properties": map[string]any{"messageID": aid, "field": "text", "delta": strings.Join(words[i:min(i+3, len(words))], "")}})
		}
		f.mu.Lock()
		f.history[sid] = append(f.history[sid], apiv1.Message{ID: aid, Role: "assistant", Text: Reply, CreatedAt: time.Now().UTC()})
		f.mu.Unlock()
		f.publish(sid, map[string]any{"type": "session.idle", "properties": map[string]any{"sessionID": sid}})
	}()
	return nil
}

func (f *fakeConversation) Messages(_ context.Context, s *store.Session) ([]apiv1.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiv1.Message(nil), f.history[s.ID]...), nil
}

func (f *fakeConversation) Events(ctx context.Context, s *store.Session, w http.ResponseWriter) error {
	ch := make(chan []byte, 256)
	f.mu.Lock()
	if f.subs[s.ID] == nil {
		f.subs[s.ID] = map[chan []byte]struct{}{}
	}
	f.subs[s.ID][ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs[s.ID], ch)
		f.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if _, err := fmt.Fprint(w, ": connected\n\n"); err != nil {
		return err
	}
	_ = rc.Flush()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-ch:
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return err
			}
			if err := rc.Flush(); err != nil {
				return err
			}
		}
	}
}

func (f *fakeConversation) Proxy(w http.ResponseWriter, _ *http.Request, s *store.Session, rest string, _ func()) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = fmt.Fprintf(w, "<!doctype html><title>OpenCode</title><h1>OpenCode for %s</h1><p>%s</p>", s.ID, rest)
}

func (f *fakeConversation) sentTexts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}
