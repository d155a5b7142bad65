package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

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
	if code, body := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/logs", nil); code != 200 || !strings.Contains(string(body), `"role":"user"`) || !strings.Contains(string(body), `"source":"live"`) {
		t.Fatalf("logs: %d %s", code, body)
	}
}

// TestLogsReadTheTranscript: the conversation of a session that is not Running, or was
// deleted, is its recorded transcript, visible as the session was (a private one's only
// to its owner and admins); a Running one merges the live conversation into it; nothing
// recorded and no session is a 404.
func TestLogsReadTheTranscript(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	private := true
	s := e.create("alice", apiv1.CreateSessionRequest{Private: &private})
	cur, err := e.st.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	msg := func(id, role, text string, at time.Duration) apiv1.Message {
		return apiv1.Message{ID: id, Role: role, Text: text, CreatedAt: t0.Add(at), Conversation: "ses_1"}
	}
	var rows []*store.TranscriptMessage
	for _, m := range []apiv1.Message{msg("msg_1", "user", "fix it", 0), msg("msg_2", "assistant", "half", time.Second)} {
		b, _ := json.Marshal(m)
		rows = append(rows, &store.TranscriptMessage{ID: m.ID, Role: m.Role, Body: b, CreatedAt: m.CreatedAt})
	}
	if err := e.st.PutTranscript(ctx, &store.Transcript{SessionID: s.ID, OwnerID: cur.OwnerID, Private: true}, rows); err != nil {
		t.Fatal(err)
	}
	logs := func(user string) (int, apiv1.MessageList) {
		t.Helper()
		code, body := e.do(user, "GET", "/api/v1/sessions/"+s.ID+"/logs", nil)
		var out apiv1.MessageList
		if code == 200 {
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
		}
		return code, out
	}
	texts := func(l apiv1.MessageList) string {
		var b []string
		for _, m := range l.Items {
			b = append(b, m.ID+"="+m.Text)
		}
		return strings.Join(b, " ")
	}
	// Not Running: the record.
	if code, l := logs("alice"); code != 200 || l.Source != apiv1.TranscriptRecorded || texts(l) != "msg_1=fix it msg_2=half" {
		t.Fatalf("a stopped session's logs: %d %+v", code, l)
	}
	// Running: what OpenCode has now replaces what was recorded of a message, and adds.
	if _, err := e.sess.setState(ctx, s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	e.conv.messages = []apiv1.Message{msg("msg_2", "assistant", "half and done", time.Second), msg("msg_3", "user", "thanks", 2*time.Second)}
	if code, l := logs("alice"); code != 200 || l.Source != apiv1.TranscriptLive || texts(l) != "msg_1=fix it msg_2=half and done msg_3=thanks" {
		t.Fatalf("a running session's logs: %d %+v", code, l)
	}
	// Deleted: still readable by its owner and admins, never by others.
	if err := e.st.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	code, l := logs("alice")
	if code != 200 || l.Deleted == nil || texts(l) != "msg_1=fix it msg_2=half" {
		t.Fatalf("a deleted session's logs: %d %+v", code, l)
	}
	if code, _ := logs("root"); code != 200 {
		t.Fatalf("an admin reading a deleted session's logs: %d", code)
	}
	if code, _ := logs("bob"); code != 404 {
		t.Fatalf("bob reading alice's private deleted session: %d, want 404", code)
	}
	if code, body := e.do("alice", "GET", "/api/v1/sessions/s-never-was/logs", nil); code != 404 || !strings.Contains(string(body), "no transcript") {
		t.Fatalf("a session that never was: %d %s", code, body)
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

// TestEventStreamEndsWhenSessionStops: an open event stream ends once its session is no
// longer Running (stopped through any replica), so a follower learns it at once.
func TestEventStreamEndsWhenSessionStops(t *testing.T) {
	defer func(d time.Duration) { runningCheckEvery = d }(runningCheckEvery)
	runningCheckEvery = 20 * time.Millisecond
	e := newEnv(t, nil)
	e.conv.holdEvents = true
	s := e.create("alice", apiv1.CreateSessionRequest{})
	if _, err := e.sess.setState(context.Background(), s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		code, _ := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/events", nil)
		done <- code
	}()
	select {
	case code := <-done:
		t.Fatalf("the stream of a running session ended: %d", code)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := e.sess.setState(context.Background(), s.ID, apiv1.StateStopped, "StoppedByUser"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("stream answered %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived the session's stop")
	}
}
