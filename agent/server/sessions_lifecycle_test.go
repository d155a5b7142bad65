package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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

// TestSharingARunningSessionWithACredentialIsRefused: a running private session on a
// host its owner holds a git credential for cannot be shared (everyone could then read
// the credential through the session's shell): 409 naming the stop command. Without a
// credential, or once stopped, sharing is fine.
func TestSharingARunningSessionWithACredentialIsRefused(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://git.example.com/org/repo.git"})
	if _, err := e.sess.setState(t.Context(), s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	share := map[string]any{"private": false}
	if err := e.st.PutCredential(t.Context(), &store.Credential{OwnerID: e.users["alice"].UserID, Provider: gitcred.Provider("git.example.com"), Secret: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	code, out := e.do("alice", "PATCH", "/api/v1/sessions/"+s.ID, share)
	if msg := errorOf(t, out).Message; code != http.StatusConflict || !strings.Contains(msg, "kubectl agents session stop "+s.ID) || !strings.Contains(msg, "git.example.com") {
		t.Fatalf("sharing a running session with a credential: %d %s", code, out)
	}
	if _, err := e.sess.setState(t.Context(), s.ID, apiv1.StateStopped, ""); err != nil {
		t.Fatal(err)
	}
	if code, out := e.do("alice", "PATCH", "/api/v1/sessions/"+s.ID, share); code != http.StatusOK {
		t.Fatalf("sharing a stopped session: %d %s", code, out)
	}
	other := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://other.example.com/org/repo.git"})
	if _, err := e.sess.setState(t.Context(), other.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	if code, out := e.do("alice", "PATCH", "/api/v1/sessions/"+other.ID, share); code != http.StatusOK {
		t.Fatalf("sharing a running session without a credential for its host: %d %s", code, out)
	}
}
