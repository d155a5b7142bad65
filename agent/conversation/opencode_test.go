package conversation

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/opencode/opencodetest"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// directPool reaches every pod at one address, standing in for the port-forward pool.
type directPool struct{ addr string }

func (d directPool) Transport(_, _ string, _ int) http.RoundTripper {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dd net.Dialer
		return dd.DialContext(ctx, "tcp", d.addr)
	}}
}

type staticPassword string

func (p staticPassword) Password(context.Context, *store.Session) (string, error) {
	return string(p), nil
}

// waitForMessage polls the conversation until a message with text shows up (OpenCode
// records prompts asynchronously); the test's deadline bounds it.
func waitForMessage(ctx context.Context, t *testing.T, r *Relay, s *store.Session, role, text string) {
	t.Helper()
	for {
		msgs, err := r.Messages(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Role == role && m.Text == text {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no %s message %q in %+v", role, text, msgs)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestRelayWithRealOpenCode drives a real `opencode serve` through the relay: the
// health check, the initial prompt delivered once into a conversation recorded in the
// store, prompts sent into that same conversation, and the event relay.
func TestRelayWithRealOpenCode(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a real OpenCode (drop -short to run it)")
	}
	oc := opencodetest.Start(t, opencodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	s := &store.Session{ID: "s1", Title: "relay test", OwnerID: u.ID, State: apiv1.StateRunning, Prompt: "first prompt",
		PodName: "cake-session-s1", PodNamespace: "sessions"}
	if err := st.CreateSession(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	r := New(directPool{oc.Addr}, staticPassword(oc.Password), st, nil)
	if err := r.Healthy(ctx, s); err != nil {
		t.Fatalf("Healthy: %v", err)
	}
	if err := New(directPool{oc.Addr}, staticPassword("wrong"), st, nil).Healthy(ctx, s); err == nil {
		t.Error("Healthy with the wrong password succeeded")
	}
	if msgs, err := r.Messages(ctx, s); err != nil || len(msgs) != 0 {
		t.Fatalf("Messages before any prompt: %v, %v", msgs, err)
	}

	r.DeliverInitialPrompt(ctx, s)
	cur, err := st.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !cur.PromptSent || !strings.HasPrefix(cur.OpenCodeSessionID, "ses_") {
		t.Fatalf("after delivery: PromptSent %v, conversation %q", cur.PromptSent, cur.OpenCodeSessionID)
	}
	waitForMessage(ctx, t, r, cur, "user", "first prompt")
	waitForMessage(ctx, t, r, cur, "assistant", fakemodel.Reply("first prompt"))
	// Answered: the conversation turns idle (what the Slack integration waits for).
	for {
		busy, err := r.Busy(ctx, cur)
		if err != nil {
			t.Fatalf("Busy: %v", err)
		}
		if !busy {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the conversation stayed busy after its answer")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if busy, err := r.Busy(ctx, s); err != nil || busy {
		t.Errorf("Busy before a conversation exists: %v, %v", busy, err)
	}

	// Delivered is delivered: a second call (a restart, another replica) sends nothing.
	r.DeliverInitialPrompt(ctx, cur)
	again, err := st.GetSession(ctx, s.ID)
	if err != nil || again.OpenCodeSessionID != cur.OpenCodeSessionID || again.ResourceVersion != cur.ResourceVersion {
		t.Fatalf("a second delivery changed the session: %+v, %v", again, err)
	}

	if err := r.Send(ctx, cur, "second prompt"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	waitForMessage(ctx, t, r, cur, "user", "second prompt")
	waitForMessage(ctx, t, r, cur, "assistant", fakemodel.Reply("second prompt"))

	// The event relay: OpenCode's first event, as a server-sent event.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if err := r.Events(req.Context(), cur, w); err != nil && req.Context().Err() == nil {
			t.Errorf("Events: %v", err)
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: server.connected\n" {
		t.Fatalf("first line of the stream: %q, %v", line, err)
	}
}
