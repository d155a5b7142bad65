package storetest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
)

func testCredentials(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	a, b := user(t, s, "a"), user(t, s, "b")
	c := &store.Credential{OwnerID: a.ID, Provider: "github", Secret: []byte("gho_first")}
	if err := s.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	if c.CreatedAt.IsZero() || !c.UpdatedAt.Equal(c.CreatedAt) {
		t.Errorf("times after first put: %v %v", c.CreatedAt, c.UpdatedAt)
	}
	got, err := s.GetCredential(ctx, a.ID, "github")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Secret) != "gho_first" || got.OwnerID != a.ID || got.Provider != "github" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Errorf("GetCredential = %+v", got)
	}
	time.Sleep(2 * time.Millisecond)
	c2 := &store.Credential{OwnerID: a.ID, Provider: "github", Secret: []byte("gho_second")}
	if err := s.PutCredential(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if !c2.CreatedAt.Equal(c.CreatedAt) || !c2.UpdatedAt.After(c.UpdatedAt) {
		t.Errorf("replace: created %v (want %v), updated %v", c2.CreatedAt, c.CreatedAt, c2.UpdatedAt)
	}
	got, _ = s.GetCredential(ctx, a.ID, "github")
	if string(got.Secret) != "gho_second" {
		t.Errorf("after replace secret %q", got.Secret)
	}
	for _, p := range []string{"openai", "anthropic"} {
		if err := s.PutCredential(ctx, &store.Credential{OwnerID: a.ID, Provider: p, Secret: []byte("k-" + p)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutCredential(ctx, &store.Credential{OwnerID: b.ID, Provider: "github", Secret: []byte("gho_b")}); err != nil {
		t.Fatal(err)
	}
	// An empty secret is a value too.
	if err := s.PutCredential(ctx, &store.Credential{OwnerID: b.ID, Provider: "empty"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetCredential(ctx, b.ID, "empty"); err != nil || len(got.Secret) != 0 {
		t.Errorf("empty secret: %+v, %v", got, err)
	}
	list, err := s.ListCredentials(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	var providers []string
	for _, l := range list {
		providers = append(providers, l.Provider)
		if l.Secret != nil {
			t.Errorf("ListCredentials returned the secret of %s", l.Provider)
		}
	}
	if !slices.Equal(providers, []string{"anthropic", "github", "openai"}) {
		t.Errorf("ListCredentials providers %v", providers)
	}
	if got, _ := s.GetCredential(ctx, b.ID, "github"); got == nil || string(got.Secret) != "gho_b" {
		t.Errorf("b's credential: %+v", got)
	}
	_, err = s.GetCredential(ctx, a.ID, "gitlab")
	wantErr(t, err, store.ErrNotFound, "missing credential")
	wantErr(t, s.PutCredential(ctx, &store.Credential{OwnerID: "nosuchowner0", Provider: "x", Secret: []byte("x")}), store.ErrNotFound, "unknown owner")
	if err := s.DeleteCredential(ctx, a.ID, "github"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetCredential(ctx, a.ID, "github")
	wantErr(t, err, store.ErrNotFound, "deleted credential")
	wantErr(t, s.DeleteCredential(ctx, a.ID, "github"), store.ErrNotFound, "second delete")
}

func testEncryptionAtRest(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	secrets := []string{
		"sk-live-CANARY-credential-0123456789abcdef",
		"gho_CANARYgithubtoken9876543210",
	}
	for i, sec := range secrets {
		if err := s.PutCredential(ctx, &store.Credential{OwnerID: owner.ID, Provider: fmt.Sprintf("provider-canary-%d", i), Secret: []byte(sec)}); err != nil {
			t.Fatal(err)
		}
	}
	tokenSecret := "cake_pat_CANARYtokensecret424242"
	if err := s.CreateToken(ctx, &store.Token{OwnerID: owner.ID, Name: "canary", Hash: hashOf(tokenSecret)}); err != nil {
		t.Fatal(err)
	}
	// Rotation must not leave plaintext behind either.
	s.Close()
	s = h.open(OpenOptions{Keyring: mustKeyring(t, secretB, secretA)})
	if n, err := s.RotateCredentials(ctx); err != nil || n != len(secrets) {
		t.Fatalf("rotate: %d, %v", n, err)
	}
	s.Close()

	dump, err := h.db.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The dump must actually show the rows, or this test proves nothing.
	if !dumpContains(dump, []byte("provider-canary-0")) || !dumpContains(dump, hashOf(tokenSecret)) && !dumpContains(dump, []byte(hex.EncodeToString(hashOf(tokenSecret)))) {
		t.Fatalf("the raw dump (%d columns) does not show the credential and token rows", len(dump))
	}
	for _, sec := range append(secrets, tokenSecret) {
		for _, form := range encodings(sec) {
			for col, vals := range dump {
				for _, v := range vals {
					if bytes.Contains(v, form) {
						t.Errorf("%s holds %q (a form of a secret) in plain text", col, form)
					}
				}
			}
		}
	}
	for _, sec := range []string{secretA, secretB} {
		if dumpContains(dump, []byte(sec)) {
			t.Error("the raw database contains the auth secret")
		}
	}
}

func dumpContains(dump map[string][][]byte, needle []byte) bool {
	for _, vals := range dump {
		for _, v := range vals {
			if bytes.Contains(v, needle) {
				return true
			}
		}
	}
	return false
}

// encodings are the forms a leaked secret could take in a raw dump.
func encodings(s string) [][]byte {
	b := []byte(s)
	return [][]byte{
		b,
		[]byte(hex.EncodeToString(b)),
		[]byte(strings.ToUpper(hex.EncodeToString(b))),
		[]byte(base64.StdEncoding.EncodeToString(b)[:len(s)*4/3-2]),
		[]byte(base64.RawURLEncoding.EncodeToString(b)[:len(s)*4/3-2]),
	}
}

func testCredentialBoundToRow(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	owner := user(t, s, "owner")
	for _, p := range []string{"alpha", "beta"} {
		if err := s.PutCredential(ctx, &store.Credential{OwnerID: owner.ID, Provider: p, Secret: []byte("secret-of-" + p)}); err != nil {
			t.Fatal(err)
		}
	}
	// Copy beta's ciphertext over alpha's: it must not decrypt as alpha's secret.
	if err := h.db.Exec(ctx, `UPDATE credentials SET ciphertext = (SELECT ciphertext FROM credentials WHERE provider = 'beta') WHERE provider = 'alpha'`); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCredential(ctx, owner.ID, "alpha")
	if err == nil {
		t.Fatalf("a ciphertext moved to another row decrypted to %q", got.Secret)
	}
	if errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tampered credential reported as missing: %v", err)
	}
	if got, err := s.GetCredential(ctx, owner.ID, "beta"); err != nil || string(got.Secret) != "secret-of-beta" {
		t.Errorf("untouched row: %+v, %v", got, err)
	}
}

func testRotate(t *testing.T, h *harness) {
	ctx := t.Context()
	old := h.open(OpenOptions{Keyring: mustKeyring(t, secretA)})
	a, b := user(t, old, "a"), user(t, old, "b")
	want := map[string]string{}
	for _, u := range []*store.User{a, b} {
		for _, p := range []string{"github", "openai"} {
			sec := "secret-" + u.Subject + "-" + p
			want[u.ID+"/"+p] = sec
			if err := old.PutCredential(ctx, &store.Credential{OwnerID: u.ID, Provider: p, Secret: []byte(sec)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := old.RotateCredentials(ctx); err != nil || n != 0 {
		t.Fatalf("rotating with the same primary: %d, %v; want 0", n, err)
	}
	check := func(s store.Store, what string) {
		t.Helper()
		for k, sec := range want {
			owner, provider, _ := strings.Cut(k, "/")
			got, err := s.GetCredential(ctx, owner, provider)
			if err != nil || string(got.Secret) != sec {
				t.Fatalf("%s: %s = %v, %v", what, k, got, err)
			}
		}
	}

	// New secret, old one kept for decryption: reads work before rotating.
	both := h.open(OpenOptions{Keyring: mustKeyring(t, secretB, secretA)})
	check(both, "new primary, before rotation")
	// A credential written now uses the new key: rotation rewrites only the old ones.
	if err := both.PutCredential(ctx, &store.Credential{OwnerID: a.ID, Provider: "fresh", Secret: []byte("fresh")}); err != nil {
		t.Fatal(err)
	}
	want[a.ID+"/fresh"] = "fresh"
	n, err := both.RotateCredentials(ctx)
	if err != nil || n != 4 {
		t.Fatalf("RotateCredentials = %d, %v; want 4", n, err)
	}
	if n, err := both.RotateCredentials(ctx); err != nil || n != 0 {
		t.Fatalf("second rotation = %d, %v; want 0", n, err)
	}
	check(both, "after rotation")

	// The old secret can now be dropped...
	onlyNew := h.open(OpenOptions{Keyring: mustKeyring(t, secretB)})
	check(onlyNew, "new key only")
	// ...and a keyring with only the old key reads nothing.
	_, err = old.GetCredential(ctx, a.ID, "github")
	wantErr(t, err, keyring.ErrUnknownKey, "old keyring after rotation")
	other := h.open(OpenOptions{Keyring: mustKeyring(t, "an unrelated secret")})
	_, err = other.GetCredential(ctx, a.ID, "github")
	wantErr(t, err, keyring.ErrUnknownKey, "unrelated keyring")
	if _, err := other.RotateCredentials(ctx); err == nil {
		t.Error("rotating with a keyring that cannot read the data succeeded")
	}
	check(onlyNew, "after a failed rotation")
}
