package httperr_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cakeai/cake-agents/agent/httperr"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		status                int
		preset                string // Retry-After set before Write
		retryAfter, challenge string
	}{
		{name: "not found", status: http.StatusNotFound},
		{name: "unauthorized", status: http.StatusUnauthorized, challenge: `Bearer realm="cake-agents"`},
		{name: "unavailable", status: http.StatusServiceUnavailable, retryAfter: "2"},
		{name: "unavailable, writer's own Retry-After", status: http.StatusServiceUnavailable, preset: "5", retryAfter: "5"},
		{name: "bad gateway", status: http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if tc.preset != "" {
				rec.Header().Set("Retry-After", tc.preset)
			}
			httperr.Write(rec, tc.status, "SomeCode", `say "why" <here>`)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			h := rec.Header()
			if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" ||
				h.Get("Retry-After") != tc.retryAfter || h.Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("headers %v", h)
			}
			// The exact bytes: what pkg/client and scripts with jq read.
			want := "{\n  \"error\": {\n    \"code\": \"SomeCode\",\n    \"message\": \"say \\\"why\\\" \\u003chere\\u003e\"\n  }\n}\n"
			if rec.Body.String() != want {
				t.Errorf("body\n%s\nwant\n%s", rec.Body, want)
			}
			var e apiv1.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Body.Code != "SomeCode" || e.Error() != `say "why" <here>` {
				t.Errorf("decoded %+v, %v", e, err)
			}
		})
	}
}

func TestJSONRenderer(t *testing.T) {
	var render httperr.Renderer = httperr.JSON
	rec := httptest.NewRecorder()
	render(rec, httptest.NewRequest(http.MethodGet, "/", nil), http.StatusForbidden, apiv1.CodeForbidden, "no")
	var e apiv1.Error
	if rec.Code != http.StatusForbidden || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Body.Code != apiv1.CodeForbidden || e.Body.Message != "no" {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}
