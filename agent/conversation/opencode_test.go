package conversation

import (
	"bufio"
	"context"
	"errors"
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
	defer func(d time.Duration) { KeepAliveInterval = d }(KeepAliveInterval)
	KeepAliveInterval = 300 * time.Millisecond
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
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "event: server.connected\n" {
		t.Fatalf("first line of the stream: %q, %v", line, err)
	}
	// A quiet stream carries keep-alive comments.
	for line != ": keep-alive\n" {
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatalf("no keep-alive on a quiet stream: %v", err)
		}
	}

	// The recorder: everything so far, in order, tool calls too; then a follower keeps
	// the transcript current without being asked.
	rec := NewRecorder(r, st, nil)
	if err := rec.Record(ctx, cur, nil); err != nil {
		t.Fatal(err)
	}
	if got := transcriptTexts(ctx, t, st, s.ID); got != "user:first prompt|assistant:"+fakemodel.Reply("first prompt")+"|user:second prompt|assistant:"+fakemodel.Reply("second prompt") {
		t.Fatalf("recorded: %s", got)
	}
	rec.scanEvery, rec.debounce = 100*time.Millisecond, 50*time.Millisecond
	runCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(runCtx) }()
	if err := r.Send(ctx, cur, "#tool:bash echo recorded-tool"); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(transcriptTexts(ctx, t, st, s.ID), fakemodel.ToolResultPrefix+"recorded-tool") {
		select {
		case <-ctx.Done():
			t.Fatalf("the follower never recorded the tool turn: %s", transcriptTexts(ctx, t, st, s.ID))
		case <-time.After(100 * time.Millisecond):
		}
	}
	_, msgs, err := Transcript(ctx, st, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	var tool *apiv1.ToolCall
	for _, m := range msgs {
		for i := range m.Tools {
			tool = &m.Tools[i]
		}
	}
	if tool == nil || tool.Tool != "bash" || !strings.Contains(tool.Output, "recorded-tool") {
		t.Fatalf("the recorded tool call: %+v", tool)
	}
	stopRec()
	<-recDone

	// OpenCode lost the conversation (a pod started without its state): the next
	// prompt goes to a new conversation that starts with a digest of the transcript.
	cur, err = st.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	lost := cur.OpenCodeSessionID
	cur.OpenCodeSessionID = "ses_lostlostlostlostlostlost"
	if err := st.UpdateSession(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := r.Send(ctx, cur, "after the loss"); err != nil {
		t.Fatalf("Send to a lost conversation: %v", err)
	}
	if cur.OpenCodeSessionID == lost || cur.OpenCodeSessionID == "ses_lostlostlostlostlostlost" {
		t.Fatalf("the conversation was not replaced: %s", cur.OpenCodeSessionID)
	}
	waitForMessage(ctx, t, r, cur, "assistant", fakemodel.Reply("after the loss"))
	seeded := false
	for _, req := range oc.Model.Requests() {
		if !req.Title && strings.Contains(req.LastUserText(), "after the loss") {
			for _, m := range req.Messages {
				seeded = seeded || (strings.Contains(m.Content, "continues an earlier one") && strings.Contains(m.Content, "user: first prompt"))
			}
		}
	}
	if !seeded {
		t.Fatalf("the new conversation's first request lacks the digest: %+v", oc.Model.Requests())
	}
}

// transcriptTexts renders a session's recorded transcript as role:text|role:text.
func transcriptTexts(ctx context.Context, t *testing.T, st store.Store, id string) string {
	t.Helper()
	_, msgs, err := Transcript(ctx, st, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	var parts []string
	for _, m := range msgs {
		parts = append(parts, m.Role+":"+m.Text)
	}
	return strings.Join(parts, "|")
}
