package storetest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
)

func testDeleteUserTokens(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	for i, owner := range []*store.User{a, a, a, b} {
		if err := s.CreateToken(ctx, &store.Token{OwnerID: owner.ID, Name: fmt.Sprint("t", i), Hash: hashOf(fmt.Sprint("secret", i))}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DeleteUserTokens(ctx, a.ID)
	if err != nil || n != 3 {
		t.Fatalf("DeleteUserTokens(a) = %d, %v; want 3", n, err)
	}
	if list, _ := s.ListTokens(ctx, a.ID); len(list) != 0 {
		t.Errorf("a still has tokens: %+v", list)
	}
	for i := range 3 {
		_, err := s.GetTokenByHash(ctx, hashOf(fmt.Sprint("secret", i)))
		wantErr(t, err, store.ErrNotFound, "a revoked token")
	}
	if list, _ := s.ListTokens(ctx, b.ID); len(list) != 1 {
		t.Errorf("b's tokens were touched: %+v", list)
	}
	if n, err := s.DeleteUserTokens(ctx, a.ID); err != nil || n != 0 {
		t.Errorf("second DeleteUserTokens(a) = %d, %v; want 0", n, err)
	}
	if n, err := s.DeleteUserTokens(ctx, "nosuchowner0"); err != nil || n != 0 {
		t.Errorf("DeleteUserTokens(unknown) = %d, %v; want 0", n, err)
	}
}

func hashOf(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func testTokens(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	exp := time.Now().Add(24 * time.Hour)
	t1 := &store.Token{OwnerID: a.ID, Name: "laptop", Hash: hashOf("cake_pat_one"), ExpiresAt: &exp}
	if err := s.CreateToken(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if t1.ID == "" || t1.CreatedAt.IsZero() {
		t.Errorf("CreateToken did not fill id/created: %+v", t1)
	}
	t2 := &store.Token{ID: "tok-two", OwnerID: a.ID, Name: "ci", Hash: hashOf("cake_pat_two"), CreatedAt: t1.CreatedAt.Add(time.Second)}
	if err := s.CreateToken(ctx, t2); err != nil {
		t.Fatal(err)
	}
	t3 := &store.Token{OwnerID: b.ID, Name: "laptop", Hash: hashOf("cake_pat_three")}
	if err := s.CreateToken(ctx, t3); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: b.ID, Name: "other", Hash: hashOf("cake_pat_one")}), store.ErrConflict, "duplicate hash")
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: a.ID, Name: "laptop", Hash: hashOf("x")}), store.ErrConflict, "duplicate name for one owner")
	wantErr(t, s.CreateToken(ctx, &store.Token{ID: t2.ID, OwnerID: a.ID, Name: "y", Hash: hashOf("y")}), store.ErrConflict, "duplicate id")
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: "nosuchowner0", Name: "z", Hash: hashOf("z")}), store.ErrNotFound, "unknown owner")
	wantErr(t, s.CreateToken(ctx, &store.Token{OwnerID: a.ID, Name: "nohash"}), store.ErrInvalid, "no hash")

	got, err := s.GetTokenByHash(ctx, hashOf("cake_pat_one"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != t1.ID || got.OwnerID != a.ID || got.Name != "laptop" || !bytes.Equal(got.Hash, t1.Hash) ||
		!got.CreatedAt.Equal(t1.CreatedAt) || got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp.Truncate(time.Microsecond)) || got.LastUsedAt != nil {
		t.Errorf("GetTokenByHash = %+v, want %+v", got, t1)
	}
	_, err = s.GetTokenByHash(ctx, hashOf("cake_pat_unknown"))
	wantErr(t, err, store.ErrNotFound, "unknown hash")

	list, err := s.ListTokens(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != t1.ID || list[1].ID != "tok-two" || list[1].ExpiresAt != nil {
		t.Errorf("ListTokens(a) = %+v", list)
	}
	if list, _ := s.ListTokens(ctx, "nobody"); list == nil || len(list) != 0 {
		t.Errorf("ListTokens(nobody) = %v, want empty", list)
	}

	used := time.Now().Add(time.Minute)
	if err := s.TouchToken(ctx, "tok-two", used); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchToken(ctx, "tok-two", used.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetTokenByHash(ctx, hashOf("cake_pat_two"))
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(used.Truncate(time.Microsecond)) {
		t.Errorf("LastUsedAt %v, want %v", got.LastUsedAt, used)
	}
	wantErr(t, s.TouchToken(ctx, "nosuch", used), store.ErrNotFound, "touch of a missing token")

	wantErr(t, s.DeleteToken(ctx, b.ID, t1.ID), store.ErrNotFound, "deleting another owner's token")
	if err := s.DeleteToken(ctx, a.ID, t1.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetTokenByHash(ctx, hashOf("cake_pat_one"))
	wantErr(t, err, store.ErrNotFound, "deleted token")
	wantErr(t, s.DeleteToken(ctx, a.ID, t1.ID), store.ErrNotFound, "second delete")
}
