package storetest

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
)

func testUsers(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	seen := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.FixedZone("X", 3600))
	u := &store.User{Source: "header", Subject: "ada@example.com", Email: "ada@example.com",
		DisplayName: "Ada", Groups: []string{"eng", "admins"}, Admin: true, LastSeenAt: seen}
	if err := s.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[a-z2-7]{12}$`).MatchString(u.ID) {
		t.Errorf("user id %q is not 12 lowercase base32 characters", u.ID)
	}
	if u.CreatedAt.IsZero() || !u.LastSeenAt.Equal(seen.Truncate(time.Microsecond)) {
		t.Errorf("CreatedAt %v, LastSeenAt %v", u.CreatedAt, u.LastSeenAt)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || got.Source != u.Source || got.Subject != u.Subject || got.Email != u.Email ||
		got.DisplayName != "Ada" || !slices.Equal(got.Groups, []string{"eng", "admins"}) || !got.Admin ||
		!got.CreatedAt.Equal(u.CreatedAt) || !got.LastSeenAt.Equal(u.LastSeenAt) {
		t.Errorf("GetUser = %+v, want %+v", got, u)
	}

	// Same (source, subject): same id and creation time, fields replaced.
	later := seen.Add(time.Hour)
	again := &store.User{Source: "header", Subject: "ada@example.com", Email: "ada@new.example.com",
		DisplayName: "Ada L.", LastSeenAt: later}
	if err := s.UpsertUser(ctx, again); err != nil {
		t.Fatal(err)
	}
	if again.ID != u.ID || !again.CreatedAt.Equal(u.CreatedAt) {
		t.Errorf("upsert of an existing user: id %q created %v, want %q %v", again.ID, again.CreatedAt, u.ID, u.CreatedAt)
	}
	got, err = s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Email != "ada@new.example.com" || got.DisplayName != "Ada L." || got.Groups != nil || got.Admin ||
		!got.LastSeenAt.Equal(later.Truncate(time.Microsecond)) {
		t.Errorf("after update GetUser = %+v", got)
	}

	// Same subject from another source is another user.
	k := &store.User{Source: "kubernetes", Subject: "ada@example.com"}
	if err := s.UpsertUser(ctx, k); err != nil {
		t.Fatal(err)
	}
	if k.ID == u.ID {
		t.Error("users from different sources share an id")
	}
	if k.LastSeenAt.IsZero() {
		t.Error("LastSeenAt not defaulted")
	}
	_, err = s.GetUser(ctx, "nosuchuser00")
	wantErr(t, err, store.ErrNotFound, "GetUser of a missing id")
	wantErr(t, s.UpsertUser(ctx, &store.User{Source: "header"}), store.ErrInvalid, "UpsertUser without subject")
}

func testFindUsers(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	mk := func(source, subject, email string, at time.Duration) *store.User {
		u := &store.User{Source: source, Subject: subject, Email: email, LastSeenAt: t0.Add(at)}
		if err := s.UpsertUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	header := mk("header", "jane@example.com", "jane@example.com", 0)
	kube := mk("kubernetes", "jane", "Jane@Example.com", time.Second)
	oidc := mk("kubernetes", "jane@example.com", "", 2*time.Second)
	other := mk("kubernetes", "john", "", 3*time.Second)
	ids := func(name string) []string {
		t.Helper()
		us, err := s.FindUsers(ctx, name)
		if err != nil {
			t.Fatalf("FindUsers(%q): %v", name, err)
		}
		if us == nil {
			t.Fatalf("FindUsers(%q) = nil, want an empty slice", name)
		}
		out := []string{}
		for _, u := range us {
			out = append(out, u.ID)
		}
		return out
	}
	for name, want := range map[string][]string{
		"jane@example.com": {header.ID, kube.ID, oidc.ID}, // subject of two, email of two
		"JANE@example.COM": {header.ID, kube.ID},          // emails ignore case, subjects do not
		"jane":             {kube.ID},
		other.ID:           {other.ID},
		"nobody":           {},
		"":                 {}, // no user has an empty email that matches
		"%":                {}, // no pattern matching
	} {
		if got := ids(name); !slices.Equal(got, want) {
			t.Errorf("FindUsers(%q) = %v, want %v", name, got, want)
		}
	}
	us, err := s.FindUsers(ctx, "jane")
	if err != nil || len(us) != 1 || us[0].Source != "kubernetes" || us[0].Subject != "jane" || us[0].Email != "Jane@Example.com" ||
		!us[0].CreatedAt.Equal(kube.CreatedAt) {
		t.Errorf("FindUsers(jane) = %+v, %v; want the full row of %+v", us, err, kube)
	}
}
