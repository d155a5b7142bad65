package opencode

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// messagesFixture is GET /session/{id}/message as opencode-ai 1.18.33 answered it for a
// turn with a tool call (trimmed), plus a synthetic part and a failed turn.
const messagesFixture = `[
 {"info":{"id":"msg_u1","sessionID":"ses_1","role":"user","time":{"created":1795898885597},"agent":"build","model":{"providerID":"litellm","modelID":"fake-model"}},
  "parts":[{"id":"prt_1","sessionID":"ses_1","messageID":"msg_u1","type":"text","text":"please list files"},
           {"id":"prt_2","type":"text","text":"Called the Read tool","synthetic":true}]},
 {"info":{"id":"msg_a1","sessionID":"ses_1","role":"assistant","time":{"created":1795898890092,"completed":1795898893395},"finish":"tool-calls"},
  "parts":[{"id":"prt_3","type":"step-start","snapshot":"4b82"},
           {"id":"prt_4","type":"tool","tool":"bash","state":{"status":"completed","input":{"command":"ls"},"output":".git\n"}},
           {"id":"prt_5","type":"step-finish","reason":"tool-calls"}]},
 {"info":{"id":"msg_a2","sessionID":"ses_1","role":"assistant","time":{"created":1795898894000},"finish":"stop"},
  "parts":[{"id":"prt_6","type":"step-start"},{"id":"prt_7","type":"reasoning","text":"thinking"},
           {"id":"prt_8","type":"text","text":"first"},{"id":"prt_9","type":"text","text":"second"},{"id":"prt_10","type":"step-finish"}]},
 {"info":{"id":"msg_a3","sessionID":"ses_1","role":"assistant","time":{"created":1795898895000},
          "error":{"name":"APIError","data":{"message":"model unreachable"}}},
  "parts":[]}
]`

type recorded struct {
	method, path, body, user, pass string
}

func fakeOpenCode(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) (*Client, func() []recorded) {
	t.Helper()
	var mu sync.Mutex
	var reqs []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, recorded{r.Method, r.URL.Path, string(b), u, p})
		mu.Unlock()
		if p != "pw" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL+"/", "pw", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return c, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), reqs...)
	}
}

func TestMessagesMapsInfoAndParts(t *testing.T) {
	c, reqs := fakeOpenCode(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/session/ses_1/message" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, messagesFixture)
	})
	msgs, err := c.Messages(context.Background(), "ses_1")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, role, text string }{
		{"msg_u1", "user", "please list files"},
		{"msg_a1", "assistant", ""},
		{"msg_a2", "assistant", "first\nsecond"},
		{"msg_a3", "assistant", "error: model unreachable"},
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages: %+v", len(msgs), msgs)
	}
	for i, w := range want {
		if msgs[i].ID != w.id || msgs[i].Role != w.role || msgs[i].Text != w.text {
			t.Errorf("message %d = %+v, want %+v", i, msgs[i], w)
		}
	}
	if got := msgs[0].CreatedAt; !got.Equal(time.UnixMilli(1795898885597)) || got.Location() != time.UTC {
		t.Errorf("CreatedAt = %v", got)
	}
	if r := reqs()[0]; r.user != "opencode" || r.pass != "pw" || r.method != http.MethodGet {
		t.Errorf("request %+v, want GET with Basic opencode:pw", r)
	}
}

func TestPromptAsyncBody(t *testing.T) {
	c, reqs := fakeOpenCode(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	if err := c.PromptAsync(context.Background(), "ses_1", "fix the \"flaky\" test"); err != nil {
		t.Fatal(err)
	}
	r := reqs()[0]
	if r.method != http.MethodPost || r.path != "/session/ses_1/prompt_async" {
		t.Fatalf("request %s %s", r.method, r.path)
	}
	var body struct {
		Parts []struct{ Type, Text string } `json:"parts"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || len(body.Parts) != 1 ||
		body.Parts[0].Type != "text" || body.Parts[0].Text != `fix the "flaky" test` {
		t.Fatalf("body %s (%v)", r.body, err)
	}
	if err := c.PromptAsync(context.Background(), "", "x"); err == nil {
		t.Fatal("PromptAsync without a session id succeeded")
	}
}

func TestErrorsNameTheCause(t *testing.T) {
	c, _ := fakeOpenCode(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"name":"NotFoundError"}`, http.StatusNotFound)
	})
	_, err := c.Messages(context.Background(), "ses_gone")
	if !IsNotFound(err) || !strings.Contains(err.Error(), "NotFoundError") {
		t.Fatalf("err = %v, want a 404 carrying the body", err)
	}

	bad, err := New(strings.TrimSuffix(c.base.String(), "/"), "wrong", c.hc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Health(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusUnauthorized || !strings.Contains(err.Error(), "password") {
		t.Fatalf("err = %v, want a 401 that points at the password", err)
	}
	// A wrong password is final: WaitHealthy must not spin until its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := bad.WaitHealthy(ctx, 10*time.Millisecond); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("WaitHealthy with a wrong password: %v after %s", err, time.Since(start))
	}

	if _, err := New("127.0.0.1:4096", "pw", nil); err == nil {
		t.Fatal("a base URL without a scheme was accepted")
	}
}

func TestDeliverPromptWaitsForHealth(t *testing.T) {
	var mu sync.Mutex
	healthCalls := 0
	c, reqs := fakeOpenCode(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/global/health":
			mu.Lock()
			healthCalls++
			n := healthCalls
			mu.Unlock()
			if n < 3 {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, `{"healthy":true,"version":"1.18.33"}`)
		case "/session":
			io.WriteString(w, `{"id":"ses_new","title":"my title","time":{"created":1,"updated":1}}`)
		case "/session/ses_new/prompt_async":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := DeliverPrompt(ctx, c, "my title", "hello")
	if err != nil || id != "ses_new" {
		t.Fatalf("DeliverPrompt = %q, %v", id, err)
	}
	var order []string
	for _, r := range reqs() {
		order = append(order, r.method+" "+r.path)
	}
	want := "GET /global/health,GET /global/health,GET /global/health,POST /session,POST /session/ses_new/prompt_async"
	if strings.Join(order, ",") != want {
		t.Fatalf("requests %v", order)
	}
	if body := reqs()[3].body; body != `{"title":"my title"}` {
		t.Fatalf("create body %s", body)
	}
}

func TestEventsParsesServerSentEvents(t *testing.T) {
	c, _ := fakeOpenCode(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "want SSE", http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"evt_1","type":"server.connected","properties":{}}`+"\n\n")
		io.WriteString(w, ": a comment line\n\n")
		io.WriteString(w, "event: custom.kind\nid: 7\ndata: {\"properties\":\ndata: {\"sessionID\":\"ses_1\"}}\n\n")
		io.WriteString(w, `data: {"id":"evt_2","type":"message.part.delta","properties":{"sessionID":"ses_1","delta":"hi"}}`+"\n\n")
	})
	s, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := []struct{ id, typ, sid string }{
		{"evt_1", "server.connected", ""},
		{"7", "custom.kind", "ses_1"},
		{"evt_2", "message.part.delta", "ses_1"},
	}
	for _, w := range want {
		ev, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID != w.id || ev.Type != w.typ || ev.SessionID() != w.sid {
			t.Fatalf("event %+v (session %q), want %+v", ev, ev.SessionID(), w)
		}
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
}

func TestEventsRejectsNonStream(t *testing.T) {
	c, _ := fakeOpenCode(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>")
	})
	if _, err := c.Events(context.Background()); err == nil {
		t.Fatal("an HTML answer was accepted as an event stream")
	}
}
