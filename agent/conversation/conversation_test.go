package conversation

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

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
	c := New(nil, ctrl, nil, hclog.NewNullLogger())
	rec := httptest.NewRecorder()
	c.Proxy(rec, httptest.NewRequest(http.MethodGet, "/api/v1/sessions/abc/proxy/", nil),
		&store.Session{ID: "abc", PodName: "cake-session-abc", PodNamespace: "sessions"}, "/", func() { t.Error("a request that never reached the pod counted as activity") })
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
