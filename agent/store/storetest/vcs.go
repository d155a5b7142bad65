package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testSessionVCS: what a session's workspace was last seen on is recorded, replaced on
// the next look, never touches the session's resource version, and goes with the
// session; a missing session is ErrNotFound, none recorded yet ErrNotFound.
func testSessionVCS(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	sess := session("s1", owner.ID, apiv1.StateRunning)
	mustCreate(t, s, sess)
	if _, err := s.GetSessionVCS(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("never looked at: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	want := &store.SessionVCS{SessionID: "s1", Branch: "cake/fix-flaky-test", CheckedAt: t0}
	if err := s.PutSessionVCS(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSessionVCS(ctx, "s1")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	want = &store.SessionVCS{SessionID: "s1", Branch: "cake/fix-flaky-test", PullRequestURL: "https://github.com/acme/widgets/pull/7", CheckedAt: t0.Add(time.Minute)}
	if err := s.PutSessionVCS(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetSessionVCS(ctx, "s1"); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("after the second look: %+v, %v; want %+v", got, err, want)
	}
	if cur, err := s.GetSession(ctx, "s1"); err != nil || cur.ResourceVersion != sess.ResourceVersion {
		t.Errorf("the session's resource version moved: %v %v -> %v", err, sess.ResourceVersion, cur.ResourceVersion)
	}

	if err := s.PutSessionVCS(ctx, &store.SessionVCS{SessionID: "nope", Branch: "x", CheckedAt: t0}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing session: %v, want ErrNotFound", err)
	}
	if err := s.PutSessionVCS(ctx, &store.SessionVCS{Branch: "x", CheckedAt: t0}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("no session id: %v, want ErrInvalid", err)
	}
	if err := s.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSessionVCS(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the session was deleted: %v, want ErrNotFound", err)
	}
}
