package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// newControllerEnv serves the API with the real sessions controller (on a fake
// Kubernetes API: only the stored session matters here), whose configuration holds the
// session defaults.
func newControllerEnv(t *testing.T) *env {
	t.Helper()
	return newControllerEnvWith(t, nil)
}

// newControllerEnvWith is newControllerEnv with options changed by opts.
func newControllerEnvWith(t *testing.T, opts func(*Options)) *env {
	t.Helper()
	return newEnvWith(t, nil, func(o *Options) {
		if opts != nil {
			opts(o)
		}
		c, err := sessions.New(sessions.Config{
			Namespace:          "sessions-ns",
			Release:            "rel",
			DataPlaneImage:     "example.invalid/data-plane:1",
			DataPlaneInitImage: "example.invalid/data-plane-init:1",
			DefaultIdleTimeout: time.Hour,
			DefaultTTL:         24 * time.Hour,
			DefaultModel:       "litellm/default-model",
			Registerer:         prometheus.NewRegistry(),
		}, fake.NewClientset(), o.Store, nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Sessions = c
	})
}

// TestCreateSessionFilledByController pins the 201 body of a create: every default
// (id, state, timestamps, idle timeout, TTL, model, pod) is the one the sessions
// controller stored, and the body is what a GET of the session shows.
func TestCreateSessionFilledByController(t *testing.T) {
	e := newControllerEnv(t)
	before := time.Now().UTC().Add(-time.Second)
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git"})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	var s apiv1.Session
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if !sessions.ValidID(s.ID) || e.header.Get("Location") != "/api/v1/sessions/"+s.ID {
		t.Errorf("id %q, Location %q", s.ID, e.header.Get("Location"))
	}
	if s.State != apiv1.StatePending || s.Reason != "" || s.Message != "" {
		t.Errorf("state %s/%s/%q, want Pending", s.State, s.Reason, s.Message)
	}
	if s.PodName != sessions.PodName(s.ID) || s.PodNamespace != "sessions-ns" {
		t.Errorf("pod %s/%s", s.PodNamespace, s.PodName)
	}
	if s.IdleTimeout.Duration != time.Hour || s.TTL.Duration != 24*time.Hour || s.Model != "litellm/default-model" {
		t.Errorf("defaults: idle %s, ttl %s, model %q", s.IdleTimeout, s.TTL, s.Model)
	}
	if !s.Private || s.Title != "repo" || s.Owner != "alice@example.com" || s.Repo != "https://github.com/org/repo.git" {
		t.Errorf("request fields: %+v", s)
	}
	if s.CreatedAt.Before(before) || !s.UpdatedAt.Equal(s.CreatedAt) || !s.LastActivityAt.Equal(s.CreatedAt) ||
		s.StartedAt == nil || !s.StartedAt.Equal(s.CreatedAt) || s.StoppedAt != nil || s.LastActivitySource != "create" {
		t.Errorf("timestamps: created %s updated %s activity %s (%s) started %v stopped %v",
			s.CreatedAt, s.UpdatedAt, s.LastActivityAt, s.LastActivitySource, s.StartedAt, s.StoppedAt)
	}
	if s.IdleDeadline == nil || !s.IdleDeadline.Equal(s.LastActivityAt.Add(time.Hour)) ||
		s.ExpiresAt == nil || !s.ExpiresAt.Equal(s.CreatedAt.Add(24*time.Hour)) {
		t.Errorf("deadlines: idle %v, expires %v", s.IdleDeadline, s.ExpiresAt)
	}
	if s.ResourceVersion == 0 {
		t.Error("no resourceVersion")
	}
	code, got := e.do("alice", "GET", "/api/v1/sessions/"+s.ID, nil)
	if code != http.StatusOK || !jsonEqual(t, got, body) {
		t.Errorf("GET after create differs from the 201 body:\n got %s\nwant %s", got, body)
	}
}

// TestCreateSessionRequestOverridesDefaults: what the request sets is kept; a zero
// idle timeout or TTL means none (never), as CreateSessionRequest documents.
func TestCreateSessionRequestOverridesDefaults(t *testing.T) {
	e := newControllerEnv(t)
	pub := false
	s := e.create("alice", apiv1.CreateSessionRequest{Title: "mine", Private: &pub, Model: "litellm/other",
		IdleTimeout: &apiv1.Duration{Duration: 2 * time.Hour}, TTL: &apiv1.Duration{Duration: 48 * time.Hour}})
	if s.Title != "mine" || s.Private || s.Model != "litellm/other" || s.IdleTimeout.Duration != 2*time.Hour || s.TTL.Duration != 48*time.Hour {
		t.Errorf("request values not kept: %+v", s)
	}
	if !s.IdleDeadline.Equal(s.LastActivityAt.Add(2*time.Hour)) || !s.ExpiresAt.Equal(s.CreatedAt.Add(48*time.Hour)) {
		t.Errorf("deadlines: idle %v, expires %v", s.IdleDeadline, s.ExpiresAt)
	}
	z := e.create("alice", apiv1.CreateSessionRequest{IdleTimeout: &apiv1.Duration{}, TTL: &apiv1.Duration{}})
	if z.IdleTimeout.Duration != 0 || z.TTL.Duration != 0 || z.IdleDeadline != nil || z.ExpiresAt != nil {
		t.Errorf("zero idle timeout and TTL: %s, %s; want none", z.IdleTimeout, z.TTL)
	}
}

// TestCreateSessionRefusedIsAudited: a create the quota refuses is audited under the
// id the controller gave the session, and nothing is stored.
func TestCreateSessionRefusedIsAudited(t *testing.T) {
	e := newControllerEnv(t)
	for i := 0; i < 3; i++ { // MaxActiveSessions
		e.create("bob", apiv1.CreateSessionRequest{})
	}
	code, body := e.do("bob", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{})
	if code != http.StatusTooManyRequests || errorOf(t, body).Code != apiv1.CodeQuotaExceeded {
		t.Fatalf("create over the quota: %d %s", code, body)
	}
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var refused *store.AuditEvent
	for _, ev := range page.Items {
		if ev.Action == "session.create" && ev.Outcome == "denied" {
			refused = ev
		}
	}
	if refused == nil || !sessions.ValidID(refused.Target) {
		t.Fatalf("refused create audited as %+v", refused)
	}
	if _, err := e.st.GetSession(context.Background(), refused.Target); err == nil {
		t.Errorf("refused session %s was stored", refused.Target)
	}
}

// TestSessionDeadlines pins when the API shows the idle deadline and the expiry: the
// idle deadline while the session is active and has an idle timeout, the expiry while
// it has a TTL and is not being deleted.
func TestSessionDeadlines(t *testing.T) {
	e := newEnv(t, nil)
	req := httptestRequest(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	activity := created.Add(10 * time.Minute)
	for _, tc := range []struct {
		state             apiv1.SessionState
		idle, ttl         time.Duration
		wantIdle, wantTTL bool
	}{
		{apiv1.StatePending, time.Hour, time.Hour, true, true},
		{apiv1.StateStarting, time.Hour, time.Hour, true, true},
		{apiv1.StateRunning, time.Hour, time.Hour, true, true},
		{apiv1.StateRunning, 0, 0, false, false},
		{apiv1.StateStopping, time.Hour, time.Hour, false, true},
		{apiv1.StateStopped, time.Hour, time.Hour, false, true},
		{apiv1.StateFailed, time.Hour, time.Hour, false, true},
		{apiv1.StateDeleting, time.Hour, time.Hour, false, false},
	} {
		sess := &store.Session{ID: "s1", OwnerID: "u", State: tc.state, IdleTimeout: tc.idle, TTL: tc.ttl, CreatedAt: created, LastActivityAt: activity}
		out := e.api.toAPI(req, sess, map[string]string{"u": "u"})
		if (out.IdleDeadline != nil) != tc.wantIdle || (out.ExpiresAt != nil) != tc.wantTTL {
			t.Errorf("%s idle %s ttl %s: idleDeadline %v expiresAt %v", tc.state, tc.idle, tc.ttl, out.IdleDeadline, out.ExpiresAt)
			continue
		}
		if tc.wantIdle && !out.IdleDeadline.Equal(activity.Add(tc.idle)) {
			t.Errorf("%s: idleDeadline %s, want %s", tc.state, out.IdleDeadline, activity.Add(tc.idle))
		}
		if tc.wantTTL && !out.ExpiresAt.Equal(created.Add(tc.ttl)) {
			t.Errorf("%s: expiresAt %s, want %s", tc.state, out.ExpiresAt, created.Add(tc.ttl))
		}
	}
}

func httptestRequest(t *testing.T) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(context.Background(), "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// An idle timeout or TTL of 0 asked for is "never"; not asked for, the default applies.
// With an admin maximum set, "never" and longer values are refused, naming the maximum.
func TestCreateZeroTimeoutsMeanNever(t *testing.T) {
	create := func(e *env, req string) (int, apiv1.Session, string) {
		t.Helper()
		code, body := e.do("alice", "POST", "/api/v1/sessions", json.RawMessage(req))
		var s apiv1.Session
		if code == http.StatusCreated {
			if err := json.Unmarshal(body, &s); err != nil {
				t.Fatal(err)
			}
		}
		return code, s, string(body)
	}
	e := newControllerEnv(t)
	code, s, body := create(e, `{"idleTimeout": "0", "ttl": "0"}`)
	if code != http.StatusCreated || s.IdleTimeout.Duration != 0 || s.TTL.Duration != 0 || s.IdleDeadline != nil || s.ExpiresAt != nil {
		t.Fatalf("never asked for: %d idle %s ttl %s deadlines %v %v %s", code, s.IdleTimeout, s.TTL, s.IdleDeadline, s.ExpiresAt, body)
	}
	if code, s, body = create(e, `{}`); code != http.StatusCreated || s.IdleTimeout.Duration != time.Hour || s.TTL.Duration != 24*time.Hour {
		t.Fatalf("defaults: %d idle %s ttl %s %s", code, s.IdleTimeout, s.TTL, body)
	}

	capped := newControllerEnvWith(t, func(o *Options) { o.MaxIdleTimeout, o.MaxTTL = 8*time.Hour, 48*time.Hour })
	for req, want := range map[string]string{
		`{"idleTimeout": "0"}`:  "idleTimeout: 0 (never) is not allowed here: the maximum is 8h0m0s (chart value sessions.maxIdleTimeout)",
		`{"ttl": "0"}`:          "ttl: 0 (never) is not allowed here: the maximum is 48h0m0s (chart value sessions.maxTTL)",
		`{"idleTimeout": "9h"}`: "idleTimeout: 9h0m0s is longer than the maximum 8h0m0s (chart value sessions.maxIdleTimeout)",
	} {
		if code, _, body := create(capped, req); code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte(want)) {
			t.Errorf("%s with maxima: %d %s, want 400 saying %q", req, code, body, want)
		}
	}
	code, s, body = create(capped, `{"idleTimeout": "8h", "ttl": "48h"}`)
	if code != http.StatusCreated || s.IdleTimeout.Duration != 8*time.Hour {
		t.Fatalf("at the maxima: %d %s", code, body)
	}
	// An update is held to the same maxima.
	if code, body := capped.do("alice", "PATCH", "/api/v1/sessions/"+s.ID, json.RawMessage(`{"idleTimeout": "0"}`)); code != http.StatusBadRequest ||
		!bytes.Contains(body, []byte("sessions.maxIdleTimeout")) {
		t.Errorf("PATCH idleTimeout 0 with a maximum: %d %s", code, body)
	}
}

// TestForkTakesTheSourcesSettings: a fork gets the repository, branch, model and
// persistence of a session the caller can see, a title saying what it is, and names
// its source; a session the caller cannot see is not found, as everywhere.
func TestForkTakesTheSourcesSettings(t *testing.T) {
	e := newEnv(t, nil)
	src := e.create("alice", apiv1.CreateSessionRequest{Title: "flaky test", Repo: "https://github.com/org/repo", Branch: "dev", Persistent: true})
	fork := e.create("alice", apiv1.CreateSessionRequest{ForkOf: src.ID, Prompt: "try a mutex"})
	if fork.Repo != src.Repo || fork.Branch != "dev" || !fork.Persistent || fork.Model != src.Model || fork.ForkedFrom != src.ID || fork.Title != "fork of flaky test" {
		t.Fatalf("fork %+v of %+v", fork, src)
	}
	// What the request says wins.
	own := e.create("alice", apiv1.CreateSessionRequest{ForkOf: src.ID, Title: "mine", Repo: "https://github.com/org/other"})
	if own.Title != "mine" || own.Repo != "https://github.com/org/other" || own.Branch != "" {
		t.Fatalf("fork with its own settings: %+v", own)
	}
	if code, body := e.do("bob", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{ForkOf: src.ID}); code != 404 || !strings.Contains(string(body), "forkOf") {
		t.Fatalf("bob forking alice's private session: %d %s", code, body)
	}
	if code, _ := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{ForkOf: "../x"}); code != 400 {
		t.Fatalf("a malformed forkOf: %d", code)
	}
}
