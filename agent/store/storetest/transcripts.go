package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testTranscripts: a transcript's messages are kept in order, a message recorded again
// replaces itself (no duplicates), the head outlives its session (deleted by the
// session's delete, in the same transaction) until the pruner removes it with its
// messages, and a transcript first recorded after its session was deleted is pruned too.
func testTranscripts(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	mustCreate(t, s, session("s1", owner.ID, apiv1.StateRunning))
	if _, _, err := s.GetTranscript(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("nothing recorded: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	msg := func(id, role, body string, at time.Duration) *store.TranscriptMessage {
		return &store.TranscriptMessage{ID: id, Role: role, Body: []byte(body), CreatedAt: t0.Add(at)}
	}
	head := &store.Transcript{SessionID: "s1", OwnerID: owner.ID, Private: true, Title: "fix the flaky test", Repo: "https://example.com/r.git"}
	// Out of order on purpose: the order read back is the messages' own.
	if err := s.PutTranscript(ctx, head, []*store.TranscriptMessage{
		msg("msg_02", "assistant", `{"text":"Look"}`, time.Second),
		msg("msg_01", "user", `{"text":"fix it"}`, 0),
	}); err != nil {
		t.Fatal(err)
	}
	if head.CreatedAt.IsZero() || head.DeletedAt != nil {
		t.Fatalf("head after the first recording: %+v", head)
	}
	// The assistant's message is complete now; a new one follows.
	if err := s.PutTranscript(ctx, &store.Transcript{SessionID: "s1", OwnerID: owner.ID, Private: false, Title: "renamed"}, []*store.TranscriptMessage{
		msg("msg_02", "assistant", `{"text":"Looking at it: done."}`, time.Second),
		msg("msg_03", "user", `{"text":"thanks"}`, 2*time.Second),
	}); err != nil {
		t.Fatal(err)
	}
	got, msgs, err := s.GetTranscript(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Title != "renamed" || got.Private || !got.CreatedAt.Equal(head.CreatedAt) || got.OwnerID != owner.ID {
		t.Errorf("head %+v: want the latest title and privacy, the first creation time", got)
	}
	want := []string{`msg_01 user {"text":"fix it"}`, `msg_02 assistant {"text":"Looking at it: done."}`, `msg_03 user {"text":"thanks"}`}
	if g := describeMessages(msgs); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("messages %q, want %q", g, want)
	}
	if !msgs[1].CreatedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("created %v, want %v", msgs[1].CreatedAt, t0.Add(time.Second))
	}

	for _, bad := range []struct {
		t    *store.Transcript
		msgs []*store.TranscriptMessage
	}{
		{&store.Transcript{OwnerID: owner.ID}, nil},
		{&store.Transcript{SessionID: "s1"}, nil},
		{&store.Transcript{SessionID: "s1", OwnerID: owner.ID}, []*store.TranscriptMessage{msg("", "user", "{}", 0)}},
	} {
		if err := s.PutTranscript(ctx, bad.t, bad.msgs); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutTranscript(%+v): %v, want ErrInvalid", bad.t, err)
		}
	}

	// The session goes; its transcript stays, marked deleted by the delete itself.
	before := time.Now().Add(-time.Second)
	if err := s.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	got, msgs, err = s.GetTranscript(ctx, "s1")
	if err != nil || len(msgs) != 3 {
		t.Fatalf("after the session was deleted: %v, %d messages", err, len(msgs))
	}
	if got.DeletedAt == nil || got.DeletedAt.Before(before) || got.DeletedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("deleted at %v, want about now", got.DeletedAt)
	}

	// A recording that lands after the delete is born deleted.
	if err := s.PutTranscript(ctx, &store.Transcript{SessionID: "gone", OwnerID: owner.ID}, []*store.TranscriptMessage{msg("msg_01", "user", "{}", 0)}); err != nil {
		t.Fatal(err)
	}
	if late, _, err := s.GetTranscript(ctx, "gone"); err != nil || late.DeletedAt == nil {
		t.Fatalf("a transcript of a missing session: %+v, %v; want deleted", late, err)
	}
	// A live session's transcript is never pruned.
	mustCreate(t, s, session("s2", owner.ID, apiv1.StateStopped))
	if err := s.PutTranscript(ctx, &store.Transcript{SessionID: "s2", OwnerID: owner.ID}, []*store.TranscriptMessage{msg("msg_01", "user", "{}", 0)}); err != nil {
		t.Fatal(err)
	}

	if n, err := s.PruneTranscripts(ctx, before); err != nil || n != 0 {
		t.Errorf("prune before the delete: %d, %v; want 0", n, err)
	}
	if n, err := s.PruneTranscripts(ctx, time.Now().Add(time.Minute)); err != nil || n != 2 {
		t.Errorf("prune after the delete: %d, %v; want 2", n, err)
	}
	for _, id := range []string{"s1", "gone"} {
		if _, _, err := s.GetTranscript(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s after pruning: %v, want ErrNotFound", id, err)
		}
	}
	if _, msgs, err := s.GetTranscript(ctx, "s2"); err != nil || len(msgs) != 1 {
		t.Errorf("the live session's transcript after pruning: %d messages, %v", len(msgs), err)
	}
}

func describeMessages(msgs []*store.TranscriptMessage) []string {
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.ID+" "+m.Role+" "+string(m.Body))
	}
	return out
}
