package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func newTestClient(t *testing.T, h http.Handler, opts ...Option) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL+"/prefix/", srv.Client(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := New(u, nil); err == nil {
			t.Errorf("New(%q) succeeded, want an error", u)
		}
	}
}

func TestRequestsCarryPathQueryTokenAndBody(t *testing.T) {
	var got *http.Request
	var body apiv1.CreateSessionRequest
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		if r.Method == http.MethodPost {
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				t.Error(err)
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id":"abc","state":"Pending"}`))
			return
		}
		_, _ = w.Write([]byte(`{"items":[{"id":"a"}],"continue":""}`))
	}), WithToken("cka_secret"), WithUserAgent("kubectl-agents/test"))

	l, err := c.ListSessions(context.Background(), ListOptions{Limit: 5, State: apiv1.StateRunning, Owner: "me", AllUsers: true, Continue: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].ID != "a" {
		t.Errorf("items = %+v", l.Items)
	}
	if got.URL.Path != "/prefix/api/v1/sessions" {
		t.Errorf("path = %q", got.URL.Path)
	}
	if q := got.URL.Query().Encode(); q != "all=true&continue=tok&limit=5&owner=me&state=Running" {
		t.Errorf("query = %q", q)
	}
	if a := got.Header.Get("Authorization"); a != "Bearer cka_secret" {
		t.Errorf("Authorization = %q", a)
	}
	if ua := got.Header.Get("User-Agent"); ua != "kubectl-agents/test" {
		t.Errorf("User-Agent = %q", ua)
	}

	s, err := c.CreateSession(context.Background(), apiv1.CreateSessionRequest{Title: "t", Repo: "https://example.com/r"})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "abc" || s.State != apiv1.StatePending {
		t.Errorf("session = %+v", s)
	}
	if body.Title != "t" || body.Repo != "https://example.com/r" {
		t.Errorf("body = %+v", body)
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestSessionIDsAreEscaped(t *testing.T) {
	var raw string
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw = r.URL.EscapedPath()
		_, _ = w.Write([]byte(`{}`))
	}))
	if _, err := c.StopSession(context.Background(), "a/b"); err != nil {
		t.Fatal(err)
	}
	if raw != "/prefix/api/v1/sessions/a%2Fb/stop" {
		t.Errorf("path = %q", raw)
	}
}

func TestErrorsDecodeTheEnvelope(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/prefix/api/v1/sessions/missing":
			// Byte for byte what the agent's error writer (agent/httperr) sends.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("{\n  \"error\": {\n    \"code\": \"NotFound\",\n    \"message\": \"session \\\"missing\\\" not found\"\n  }\n}\n"))
		default:
			// A proxy in front of the agent answers with plain text.
			http.Error(w, "upstream connect error", http.StatusBadGateway)
		}
	}))
	_, err := c.GetSession(context.Background(), "missing")
	if !IsNotFound(err) {
		t.Fatalf("IsNotFound(%v) = false", err)
	}
	var apiErr *apiv1.Error
	if !errors.As(err, &apiErr) || apiErr.Body.Code != apiv1.CodeNotFound {
		t.Fatalf("errors.As apiv1.Error: %v", err)
	}
	if want := `session "missing" not found (HTTP 404 NotFound)`; err.Error() != want {
		t.Errorf("error = %q, want %q", err.Error(), want)
	}

	_, err = c.WhoAmI(context.Background())
	if StatusCode(err) != http.StatusBadGateway {
		t.Fatalf("status of %v = %d", err, StatusCode(err))
	}
	if want := "upstream connect error (HTTP 502 Unavailable)"; err.Error() != want {
		t.Errorf("error = %q, want %q", err.Error(), want)
	}
}

func TestReadyzReturnsChecksWhenNotReady(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"ready":false,"checks":{"store":"ok","kube":"connection refused"}}`))
	}))
	r, err := c.Readyz(context.Background())
	if StatusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("err = %v", err)
	}
	if r == nil || r.Checks["kube"] != "connection refused" {
		t.Fatalf("readiness = %+v", r)
	}
}

func TestListAllSessionsFollowsContinue(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("continue") {
		case "":
			_, _ = w.Write([]byte(`{"items":[{"id":"a"}],"continue":"p2"}`))
		case "p2":
			_, _ = w.Write([]byte(`{"items":[{"id":"b"}]}`))
		}
	}))
	all, err := c.ListAllSessions(context.Background(), ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != "a" || all[1].ID != "b" {
		t.Errorf("all = %+v", all)
	}

	loop := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"items":[],"continue":"same"}`))
	}))
	if _, err := loop.ListAllSessions(context.Background(), ListOptions{}); err == nil {
		t.Error("a repeated continue token did not fail")
	}
}

func TestEventStreamParsesSSE(t *testing.T) {
	in := ": connected\n\n" +
		"event: session.status\ndata: {\"a\":1}\nid: 7\n\n" +
		"data: line1\r\ndata: line2\r\n\r\n" +
		"retry: 1500\nid: 8\n\n" + // no data: not dispatched
		"data:x\rdata: y\r\r" +
		"data: unterminated"
	s := NewEventStream(strings.NewReader(in))
	want := []Event{
		{Type: "session.status", Data: []byte(`{"a":1}`), ID: "7"},
		{Type: "message", Data: []byte("line1\nline2")},
		{Type: "message", Data: []byte("x\ny"), ID: "8"},
	}
	for i, w := range want {
		got, err := s.Next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if got.Type != w.Type || string(got.Data) != string(w.Data) || got.ID != w.ID {
			t.Errorf("event %d = %+v (%q), want %+v (%q)", i, got, got.Data, w, w.Data)
		}
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last event: %v, want io.EOF", err)
	}
}

func TestEventsStreamsUntilCancelled(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "text/event-stream" {
			t.Errorf("Accept = %q", r.Header.Get("Accept"))
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message.part.delta\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Events(ctx, "abc")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ev, err := s.Next()
	if err != nil || ev.Type != "message.part.delta" {
		t.Fatalf("event = %+v, %v", ev, err)
	}
	cancel()
	if _, err := s.Next(); err == nil {
		t.Error("stream did not end after cancel")
	}
}

// TestEventsIdleTimeout: keep-alive comments keep a quiet stream alive; a stream silent
// past the idle timeout (a dead connection that never says so) fails with ErrStreamIdle.
func TestEventsIdleTimeout(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 6; i++ { // 600 ms of keep-alives, then the event
			_, _ = io.WriteString(w, ": keep-alive\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "data: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then silence, connection open
	}))
	s, err := c.Events(context.Background(), "abc")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetIdleTimeout(300 * time.Millisecond)
	if _, err := s.Next(); err != nil {
		t.Fatalf("an event after keep-alives longer than the timeout in total: %v", err)
	}
	if _, err := s.Next(); !errors.Is(err, ErrStreamIdle) {
		t.Fatalf("a silent stream: %v, want ErrStreamIdle", err)
	}
}

func TestEventsReportsErrors(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"error":{"code":"SessionNotRunning","message":"session is stopped"}}`))
	}))
	_, err := c.Events(context.Background(), "abc")
	if StatusCode(err) != http.StatusConflict || !strings.Contains(err.Error(), "session is stopped") {
		t.Fatalf("err = %v", err)
	}
}
