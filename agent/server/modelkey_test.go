package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakelitellm"
)

// TestCreateSessionLiteLLMRefusal: LiteLLM refusing the master key answers with a
// prefix of the key it got (as real LiteLLM's 401 does); the caller, the audit record
// and the session get a fixed text naming what to check, never that answer.
func TestCreateSessionLiteLLMRefusal(t *testing.T) {
	const master, leak = "sk-wrong-master-0123456789", "sk-wrong-mas"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"Authentication Error, Invalid proxy server token passed. Received API Key = ` + leak + `...","type":"auth_error"}}`))
	}))
	defer srv.Close()
	client, err := litellm.New(srv.URL, master, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st store.Store
	e := newEnvWith(t, nil, func(o *Options) {
		st = o.Store
		c, err := sessions.New(sessions.Config{
			Namespace: "sessions-ns", Release: "rel",
			DataPlaneImage: "example.invalid/data-plane:1", DataPlaneInitImage: "example.invalid/data-plane-init:1",
			DefaultTTL: 24 * time.Hour, DefaultModel: "litellm/fake-model",
			LiteLLMBaseURL: srv.URL, LiteLLM: client,
			Registerer: prometheus.NewRegistry(),
		}, fake.NewClientset(), o.Store, nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Sessions = c
	})
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git"})
	if code != http.StatusBadGateway || errorOf(t, body).Code != apiv1.CodeUnavailable ||
		!strings.Contains(string(body), "litellm.secret") || strings.Contains(string(body), leak) {
		t.Fatalf("create with the master key refused: %d %s; want a 502 Unavailable naming litellm.secret, without LiteLLM's answer", code, body)
	}
	page, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range page.Items {
		if strings.Contains(ev.Detail, leak) {
			t.Errorf("audit %+v holds LiteLLM's answer", ev)
		}
		found = found || (ev.Action == "session.create" && strings.Contains(ev.Detail, "litellm.secret"))
	}
	if !found {
		t.Errorf("audit %+v: want the refused create with the fixed text", page.Items)
	}
}

// TestCreateSessionLiteLLM: with LiteLLM keys, a create while LiteLLM is down is a 503
// naming LiteLLM that leaves no session; once it answers, the session is created and
// GET shows what its key spent.
func TestCreateSessionLiteLLM(t *testing.T) {
	const master = "sk-master-in-the-agent-only"
	gw := fakelitellm.New(master)
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
			return
		}
		gw.ServeHTTP(w, r)
	}))
	defer srv.Close()
	client, err := litellm.New(srv.URL+"/v1", master, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st store.Store
	e := newEnvWith(t, nil, func(o *Options) {
		st = o.Store
		c, err := sessions.New(sessions.Config{
			Namespace: "sessions-ns", Release: "rel",
			DataPlaneImage: "example.invalid/data-plane:1", DataPlaneInitImage: "example.invalid/data-plane-init:1",
			DefaultTTL: 24 * time.Hour, DefaultModel: "litellm/fake-model",
			LiteLLMBaseURL: srv.URL + "/v1", LiteLLM: client,
			Registerer: prometheus.NewRegistry(),
		}, fake.NewClientset(), o.Store, nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Sessions = c
	})

	down.Store(true)
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git"})
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"Unavailable"`) ||
		!strings.Contains(string(body), "litellm.baseURL") || strings.Contains(string(body), master) {
		t.Fatalf("create with LiteLLM down: %d %s; want a 503 naming LiteLLM", code, body)
	}
	if page, err := st.ListSessions(t.Context(), store.SessionFilter{}); err != nil || len(page.Items) != 0 {
		t.Fatalf("sessions after the refused create: %v, %v", page, err)
	}

	down.Store(false)
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git"})
	keys := gw.Keys()
	if len(keys) != 1 {
		t.Fatalf("live keys %+v, want the session's", keys)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+keys[0].Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("chat with the session's key: %v %v", resp, err)
	}
	resp.Body.Close()
	code, body = e.do("alice", "GET", "/api/v1/sessions/"+s.ID, nil)
	var got apiv1.Session
	if code != http.StatusOK || json.Unmarshal(body, &got) != nil || got.ModelSpend == nil || *got.ModelSpend != gw.CostPerRequest {
		t.Fatalf("GET: %d %s; want modelSpend %v", code, body, gw.CostPerRequest)
	}
	// LiteLLM down costs the field, not the answer.
	down.Store(true)
	code, body = e.do("alice", "GET", "/api/v1/sessions/"+s.ID, nil)
	if code != http.StatusOK || strings.Contains(string(body), "modelSpend") {
		t.Errorf("GET with LiteLLM down: %d %s", code, body)
	}
}

// slowSpender is a Sessions whose Spend records the deadline it was given and answers
// as a LiteLLM call that ran out of it.
type slowSpender struct {
	*fakeSessions
	deadline time.Time
	had      bool
}

func (s *slowSpender) Spend(ctx context.Context, _ string) (float64, bool, error) {
	s.deadline, s.had = ctx.Deadline()
	return 0, true, fmt.Errorf("LiteLLM read key info: %w", context.DeadlineExceeded)
}

// TestGetSessionSpendIsBounded: GET of one session asks for its spend with a short
// deadline of its own (not the LiteLLM client's 15 s), and answers without the spend
// when it runs out.
func TestGetSessionSpendIsBounded(t *testing.T) {
	sp := &slowSpender{}
	e := newEnvWith(t, nil, func(o *Options) {
		sp.fakeSessions = o.Sessions.(*fakeSessions)
		o.Sessions = sp
	})
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git"})
	before := time.Now()
	code, body := e.do("alice", "GET", "/api/v1/sessions/"+s.ID, nil)
	if code != http.StatusOK || strings.Contains(string(body), "modelSpend") {
		t.Fatalf("GET with the spend timed out: %d %s; want the session without modelSpend", code, body)
	}
	if !sp.had || sp.deadline.After(before.Add(detailTimeout+time.Second)) {
		t.Errorf("Spend's deadline %v (set %v): want at most %s after the request", sp.deadline, sp.had, detailTimeout)
	}
}
