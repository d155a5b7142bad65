package server

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestActivityIsRecordedByTheAPI: what counts as a user's activity on a session (it
// keeps the session from its idle timeout) is decided by the handlers, once each: a
// prompt sent, a direct attach, an event stream opened, a proxied request. Reading a
// session or its conversation is not activity, nor is an event stream that never
// opened.
func TestActivityIsRecordedByTheAPI(t *testing.T) {
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	if _, err := e.sess.setState(context.Background(), s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	base := "/api/v1/sessions/" + s.ID
	touched := func() []string {
		e.sess.mu.Lock()
		defer e.sess.mu.Unlock()
		out := e.sess.touched
		e.sess.touched = nil
		return out
	}
	for _, step := range []struct {
		method, path string
		body         any
		status       int
		want         []string
	}{
		{"GET", base, nil, http.StatusOK, nil},
		{"GET", base + "/logs", nil, http.StatusOK, nil},
		{"POST", base + "/messages", apiv1.SendMessageRequest{Text: "hi"}, http.StatusAccepted, []string{s.ID + ":message"}},
		{"POST", base + "/attach", nil, http.StatusOK, []string{s.ID + ":attach"}},
		{"GET", base + "/events", nil, http.StatusOK, []string{s.ID + ":events"}},
		{"GET", base + "/proxy/global/health", nil, http.StatusOK, []string{s.ID + ":proxy"}},
	} {
		if code, body := e.do("alice", step.method, step.path, step.body); code != step.status {
			t.Fatalf("%s %s: %d %s", step.method, step.path, code, body)
		}
		if got := touched(); !reflect.DeepEqual(got, step.want) {
			t.Errorf("%s %s recorded activity %q, want %q", step.method, step.path, got, step.want)
		}
	}
	e.conv.eventsErr = errors.New("dial pod: connection refused")
	if code, _ := e.do("alice", "GET", base+"/events", nil); code != http.StatusBadGateway {
		t.Fatalf("events that fail to open: %d", code)
	}
	if got := touched(); got != nil {
		t.Errorf("an event stream that never opened recorded activity %q", got)
	}
}

// A proxied request held open (an attached TUI's event stream) keeps the session active
// however quiet it is: "attached" is recorded while it stays open, and no more after.
func TestOpenProxiedStreamIsActivity(t *testing.T) {
	old := attachedTouchEvery
	attachedTouchEvery = 20 * time.Millisecond
	defer func() { attachedTouchEvery = old }()
	e := newEnv(t, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	if _, err := e.sess.setState(context.Background(), s.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	count := func() (attached int) {
		e.sess.mu.Lock()
		defer e.sess.mu.Unlock()
		for _, t := range e.sess.touched {
			if t == s.ID+":"+ActivityAttached {
				attached++
			}
		}
		return attached
	}
	if code, _ := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/proxy/event", nil); code != http.StatusOK || count() != 0 {
		t.Fatalf("a quick request: %d, %d attached records", code, count())
	}
	e.conv.hold = 200 * time.Millisecond
	if code, _ := e.do("alice", "GET", "/api/v1/sessions/"+s.ID+"/proxy/event", nil); code != http.StatusOK {
		t.Fatalf("a held request: %d", code)
	}
	n := count()
	if n < 3 {
		t.Fatalf("a request held open for 200ms recorded %d attached activities, want one every 20ms", n)
	}
	time.Sleep(100 * time.Millisecond)
	if count() != n {
		t.Fatal("activity still recorded after the request ended")
	}
}
