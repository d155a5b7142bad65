package audit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

func TestRedact(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"bearer token rejected", "bearer token rejected"},
		{"Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", "Authorization: Bearer [REDACTED]"},
		{"basic dXNlcjpwYXNzd29yZHBhc3N3b3Jk", "basic [REDACTED]"},
		{"token cka_AbC-123_xyz was revoked", "token [REDACTED] was revoked"},
		{"jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln here", "jwt [REDACTED] here"},
		{"url ?auth_token=b3BlbmNvZGU6cGFzcw&x=1", "url ?auth_token=[REDACTED]&x=1"},
		{`{"password":"hunter2","title":"t"}`, `{"password":"[REDACTED]","title":"t"}`},
		{"password=hunter2, api_key=sk-123", "password=[REDACTED], api_key=[REDACTED]"},
		{"session abc12 created for jane@example.com", "session abc12 created for jane@example.com"},
	}
	for _, tc := range cases {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRecorderWritesScrubbedEvents(t *testing.T) {
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(t.TempDir(), "a.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := NewRecorder(st, nil)
	ctx, cancel := context.WithCancel(WithRequestID(context.Background(), "r-42"))
	cancel() // the client went away; the event must still be written
	rec.Denied(ctx, "jane@example.com", "session.delete", "abc12", "not owner; tried Bearer abcdefghijklmnopqrstuvwxyz")
	rec.Success(context.Background(), "jane@example.com", "session.create", "abc13", "")
	page, err := st.ListAudit(context.Background(), store.AuditFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 2 {
		t.Fatalf("got %d events, want 2", len(page.Items))
	}
	var denied *store.AuditEvent
	for _, e := range page.Items {
		if e.Action == "session.delete" {
			denied = e
		}
	}
	if denied == nil || denied.Outcome != OutcomeDenied || denied.RequestID != "r-42" || denied.Actor != "jane@example.com" || denied.Target != "abc12" {
		t.Fatalf("denied event = %+v", denied)
	}
	if strings.Contains(denied.Detail, "abcdefghijklmnopqrstuvwxyz") {
		t.Errorf("detail holds the credential: %q", denied.Detail)
	}
	var nilRec *Recorder
	nilRec.Success(ctx, "a", "b", "c", "d") // a nil recorder is a no-op, not a panic
}

func TestRequestIDMiddleware(t *testing.T) {
	var seen string
	h := RequestIDMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = RequestID(r.Context()) }))
	for _, tc := range []struct {
		name, in string
		keep     bool
	}{
		{"caller's id kept", "abc-123_DEF.4", true},
		{"none given", "", false},
		{"log injection", "x\nlevel=error msg=forged", false},
		{"too long", strings.Repeat("a", 65), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.in != "" {
				r.Header.Set(RequestIDHeader, tc.in)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get(RequestIDHeader)
			if got != seen || got == "" {
				t.Fatalf("response id %q, context id %q", got, seen)
			}
			if (got == tc.in) != tc.keep {
				t.Errorf("id %q for input %q, keep=%v", got, tc.in, tc.keep)
			}
		})
	}
}
