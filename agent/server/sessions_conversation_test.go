package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
	if code, body := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/logs", nil); code != 200 || !strings.Contains(string(body), `"role":"user"`) {
		t.Fatalf("logs: %d %s", code, body)
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
