package app

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestProxyWithoutPasswordAnswersJSON: a session whose Secret cannot be read is
// answered in the API's JSON error shape, like every other /api/v1 answer.
func TestProxyWithoutPasswordAnswersJSON(t *testing.T) {
	ctrl, err := sessions.New(sessions.Config{
		Namespace: "sessions", Release: "cake-agents",
		DataPlaneImage: "dp", DataPlaneInitImage: "dpi",
		Registerer: prometheus.NewRegistry(),
	}, fake.NewClientset(), nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	c := newConversation(nil, ctrl, nil, hclog.NewNullLogger())
	rec := httptest.NewRecorder()
	c.Proxy(rec, httptest.NewRequest(http.MethodGet, "/api/v1/sessions/abc/proxy/", nil),
		&store.Session{ID: "abc", PodName: "cake-session-abc", PodNamespace: "sessions"}, "/")
	var body apiv1.Error
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/json" ||
		json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Body.Code != apiv1.CodeUnavailable {
		t.Fatalf("got %d %q %s, want 503 with a JSON error", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	// The Secret is usually just being created: a little longer than the API's default.
	if ra := rec.Header().Get("Retry-After"); ra != "5" {
		t.Errorf("Retry-After %q, want 5", ra)
	}
	if want := "the password of session abc is not readable yet; retry shortly, or restart the session if this persists"; body.Body.Message != want {
		t.Errorf("message %q, want %q", body.Body.Message, want)
	}
}

// TestHeaderCSRF: callers signed in by the proxy's headers are browsers, so their
// state-changing requests must pass the web UI's CSRF rules; other callers are not
// checked. The refusal is the API's JSON error.
func TestHeaderCSRF(t *testing.T) {
	reached := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reached++; w.WriteHeader(http.StatusNoContent) })
	as := func(source string) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r.WithContext(auth.WithIdentity(r.Context(), &auth.Identity{Username: "u", Source: source})))
			})
		}
	}
	post := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "https://agent.example/api/v1/sessions", nil)
		r.Header.Set("Origin", "https://evil.example")
		return r
	}
	rec := httptest.NewRecorder()
	withHeaderCSRF(as(auth.SourceHeader), "")(next).ServeHTTP(rec, post())
	var body apiv1.Error
	if rec.Code != http.StatusForbidden || rec.Header().Get("Content-Type") != "application/json" ||
		json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Body.Code != apiv1.CodeForbidden ||
		!strings.HasPrefix(body.Body.Message, "cross-site request refused: cross-origin request from") {
		t.Fatalf("header identity, cross-site POST: %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	if reached != 0 {
		t.Fatal("the refused request reached the handler")
	}
	rec = httptest.NewRecorder()
	withHeaderCSRF(as(auth.SourceKubernetes), "")(next).ServeHTTP(rec, post())
	if rec.Code != http.StatusNoContent || reached != 1 {
		t.Fatalf("kube identity, cross-site POST: %d, want it passed on", rec.Code)
	}
}
