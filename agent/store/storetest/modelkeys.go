package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testModelKeys: a key's row is written before the key exists, updated once it does and
// once it is deleted, listed per session or live, and survives its session's row (the
// agent deletes keys of sessions that are gone), until its deleted rows are forgotten.
func testModelKeys(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	mustCreate(t, s, session("s1", owner.ID, apiv1.StateRunning))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	a := &store.ModelKey{Alias: "k-s1-a", SessionID: "s1", OwnerID: owner.ID, CreatedAt: t0}
	if err := s.PutModelKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	a.Token = "hash-a"
	if err := s.PutModelKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := &store.ModelKey{Alias: "k-s1-b", SessionID: "s1", OwnerID: owner.ID, Token: "hash-b", CreatedAt: t0.Add(time.Minute)}
	c := &store.ModelKey{Alias: "k-s2-a", SessionID: "s2", OwnerID: owner.ID, CreatedAt: t0.Add(2 * time.Minute)}
	for _, k := range []*store.ModelKey{b, c} {
		if err := s.PutModelKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// Delete a: its final spend and time are kept; the session and owner never change.
	del := t0.Add(time.Hour)
	if err := s.PutModelKey(ctx, &store.ModelKey{Alias: "k-s1-a", SessionID: "s1", OwnerID: owner.ID, Token: "hash-a",
		Spend: 0.0375, CreatedAt: t0, DeletedAt: &del}); err != nil {
		t.Fatal(err)
	}
	list := func(f store.ModelKeyFilter) []string {
		t.Helper()
		ks, err := s.ListModelKeys(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, k := range ks {
			out = append(out, k.Alias)
		}
		return out
	}
	for _, tc := range []struct {
		f    store.ModelKeyFilter
		want []string
	}{
		{store.ModelKeyFilter{}, []string{"k-s1-a", "k-s1-b", "k-s2-a"}},
		{store.ModelKeyFilter{SessionID: "s1"}, []string{"k-s1-a", "k-s1-b"}},
		{store.ModelKeyFilter{Live: true}, []string{"k-s1-b", "k-s2-a"}},
		{store.ModelKeyFilter{SessionID: "s1", Live: true}, []string{"k-s1-b"}},
		{store.ModelKeyFilter{SessionID: "none"}, []string{}},
	} {
		if got := list(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListModelKeys(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	ks, err := s.ListModelKeys(ctx, store.ModelKeyFilter{SessionID: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	got := ks[0]
	if got.Token != "hash-a" || got.Spend != 0.0375 || got.OwnerID != owner.ID || !got.CreatedAt.Equal(t0) ||
		got.DeletedAt == nil || !got.DeletedAt.Equal(del) {
		t.Errorf("deleted key = %+v", got)
	}
	if ks[1].DeletedAt != nil || ks[1].Token != "hash-b" {
		t.Errorf("live key = %+v", ks[1])
	}

	// The session row goes; its keys stay until forgotten, and a live one even then.
	if err := s.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if got := list(store.ModelKeyFilter{SessionID: "s1"}); len(got) != 2 {
		t.Errorf("keys after the session row went: %v", got)
	}
	if n, err := s.DeleteModelKeys(ctx, "s1"); err != nil || n != 1 {
		t.Errorf("DeleteModelKeys = %d, %v; want 1 (only the deleted key)", n, err)
	}
	if got := list(store.ModelKeyFilter{SessionID: "s1"}); !reflect.DeepEqual(got, []string{"k-s1-b"}) {
		t.Errorf("after forgetting: %v, want the live key kept", got)
	}

	for _, bad := range []*store.ModelKey{{SessionID: "s", OwnerID: "o"}, {Alias: "a", OwnerID: "o"}, {Alias: "a", SessionID: "s"}} {
		wantErr(t, s.PutModelKey(ctx, bad), store.ErrInvalid, "incomplete model key")
	}
}
