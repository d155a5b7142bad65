package conversation

import (
	"strings"
	"testing"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestMerge: live messages replace recorded ones of the same id and join them in
// creation order; nothing is duplicated.
func TestMerge(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	m := func(id, text string, at int) apiv1.Message {
		return apiv1.Message{ID: id, Text: text, CreatedAt: t0.Add(time.Duration(at) * time.Second)}
	}
	got := Merge(
		[]apiv1.Message{m("msg_a", "old conversation", 0), m("msg_b", "half", 2)},
		[]apiv1.Message{m("msg_b", "half and done", 2), m("msg_c", "new", 3), m("msg_0", "same second, smaller id", 0)},
	)
	var ids []string
	for _, x := range got {
		ids = append(ids, x.ID+"="+x.Text)
	}
	if want := "msg_0=same second, smaller id|msg_a=old conversation|msg_b=half and done|msg_c=new"; strings.Join(ids, "|") != want {
		t.Fatalf("Merge: %s\nwant %s", strings.Join(ids, "|"), want)
	}
}

// TestDigest: who said what and which tools ran, oldest first; past the limit the
// oldest messages are left out, and the digest says how many.
func TestDigest(t *testing.T) {
	msgs := []apiv1.Message{
		{Role: "user", Text: "first " + strings.Repeat("x", 100)},
		{Role: "assistant", Text: "ran it", Tools: []apiv1.ToolCall{{Tool: "bash", Title: "go test", Status: "completed"}}},
		{Role: "user", Text: "thanks"},
	}
	d := Digest("s1", msgs, 1000)
	for _, want := range []string{"continues an earlier one of session s1", "user: first", "assistant: ran it\n  (ran bash: go test, completed)", "user: thanks"} {
		if !strings.Contains(d, want) {
			t.Errorf("digest lacks %q:\n%s", want, d)
		}
	}
	short := Digest("s1", msgs, 70)
	if strings.Contains(short, "user: first") || !strings.Contains(short, "user: thanks") || !strings.Contains(short, "its 1 oldest messages left out") {
		t.Errorf("a cut digest:\n%s", short)
	}
	if f := ForkDigest("src", msgs, 1000); !strings.Contains(f, "fork of session src") || !strings.Contains(f, "user: thanks") {
		t.Errorf("fork digest:\n%s", f)
	}
}

// TestChangesTranscript: text deltas do not make the recorder read the conversation;
// message updates and a conversation going idle do.
func TestChangesTranscript(t *testing.T) {
	for typ, want := range map[string]bool{
		"message.part.delta": false, "message.part.updated": true, "message.updated": true, "message.removed": true,
		"session.idle": true, "session.status": true, "server.heartbeat": false, "session.updated": false,
	} {
		if got := changesTranscript(typ); got != want {
			t.Errorf("changesTranscript(%q) = %v, want %v", typ, got, want)
		}
	}
}
