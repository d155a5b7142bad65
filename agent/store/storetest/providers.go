package storetest

import (
	"bytes"
	"errors"
	"maps"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
)

func testProviders(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	if ps, err := s.ListProviders(ctx); err != nil || ps == nil || len(ps) != 0 {
		t.Fatalf("ListProviders on an empty database = %v, %v; want an empty list", ps, err)
	}
	set := []*store.Provider{
		{ID: "zeta", Config: []byte(`{"npm":"@ai-sdk/openai-compatible","models":{"m":{}}}`)},
		{ID: "acme", Config: []byte(`{"name":"Acme","models":{"a":{"name":"A"}}}`),
			Secrets: map[string]string{"options.apiKey": "sk-acme", "options.headers.X-Team": "t1"}},
	}
	if err := s.ReplaceProviders(ctx, set); err != nil {
		t.Fatal(err)
	}
	if set[0].UpdatedAt.IsZero() {
		t.Error("ReplaceProviders left UpdatedAt zero")
	}
	got, err := s.ListProviders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "acme" || got[1].ID != "zeta" {
		t.Fatalf("ListProviders = %+v; want acme, zeta", got)
	}
	if !bytes.Equal(got[0].Config, set[1].Config) || !maps.Equal(got[0].Secrets, set[1].Secrets) || !got[0].UpdatedAt.Equal(set[1].UpdatedAt) {
		t.Errorf("acme read back as %+v; want %+v", got[0], set[1])
	}
	if got[1].Secrets == nil || len(got[1].Secrets) != 0 {
		t.Errorf("zeta secrets = %v; want an empty map", got[1].Secrets)
	}

	// Replacing drops what the new set does not name.
	if err := s.ReplaceProviders(ctx, []*store.Provider{{ID: "acme", Config: []byte(`{}`), Secrets: map[string]string{"options.apiKey": "sk-2"}}}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.ListProviders(ctx)
	if len(got) != 1 || got[0].Secrets["options.apiKey"] != "sk-2" {
		t.Errorf("after replace: %+v", got)
	}

	// A bad set changes nothing.
	err = s.ReplaceProviders(ctx, []*store.Provider{{ID: "x", Config: []byte(`{}`)}, {ID: "x", Config: []byte(`{}`)}})
	wantErr(t, err, store.ErrInvalid, "duplicate provider id")
	err = s.ReplaceProviders(ctx, []*store.Provider{{Config: []byte(`{}`)}})
	wantErr(t, err, store.ErrInvalid, "empty provider id")
	if got, _ = s.ListProviders(ctx); len(got) != 1 || got[0].ID != "acme" {
		t.Errorf("a refused replace changed the set: %+v", got)
	}

	// Another store on the database sees the same set (another replica).
	other := h.open()
	if got, err := other.ListProviders(ctx); err != nil || len(got) != 1 || got[0].Secrets["options.apiKey"] != "sk-2" {
		t.Errorf("second store: %+v, %v", got, err)
	}

	if err := s.ReplaceProviders(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.ListProviders(ctx); len(got) != 0 {
		t.Errorf("after removing all: %+v", got)
	}
}

// testProviderSecretsAtRest: provider keys are sealed like credentials, follow a key
// rotation, and a row moved to another id does not decrypt.
func testProviderSecretsAtRest(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	canary := "sk-CANARY-provider-key-0123456789"
	header := "hdr-CANARY-provider-header-42"
	if err := s.ReplaceProviders(ctx, []*store.Provider{{ID: "acme", Config: []byte(`{"name":"acme-canary-row"}`),
		Secrets: map[string]string{"options.apiKey": canary, "options.headers.X-Key": header}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = h.open(OpenOptions{Keyring: mustKeyring(t, secretB, secretA)})
	if n, err := s.RotateCredentials(ctx); err != nil || n != 1 {
		t.Fatalf("rotate: %d, %v; want the provider rewritten", n, err)
	}
	s.Close()
	// Only the new key is needed now.
	s = h.open(OpenOptions{Keyring: mustKeyring(t, secretB)})
	if got, err := s.ListProviders(ctx); err != nil || len(got) != 1 || got[0].Secrets["options.apiKey"] != canary {
		t.Fatalf("after rotation with the new key only: %+v, %v", got, err)
	}
	dump, err := h.db.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !dumpContains(dump, []byte("acme-canary-row")) {
		t.Fatalf("the raw dump (%d columns) does not show the provider row", len(dump))
	}
	for _, sec := range []string{canary, header} {
		for _, form := range encodings(sec) {
			if dumpContains(dump, form) {
				t.Errorf("the database holds %q (a form of a provider secret) in plain text", form)
			}
		}
	}
	// The ciphertext is bound to its id: copied to another id it fails to decrypt.
	if err := h.db.Exec(ctx, `INSERT INTO providers (id, config, ciphertext, updated_at) SELECT 'evil', config, ciphertext, updated_at FROM providers WHERE id = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListProviders(ctx); !errors.Is(err, keyring.ErrDecrypt) {
		t.Errorf("a ciphertext moved to another provider id: %v; want a decrypt error", err)
	}
	s.Close()
	// Without a keyring providers cannot be stored.
	nokr := h.open(OpenOptions{})
	if err := nokr.ReplaceProviders(ctx, []*store.Provider{{ID: "p", Config: []byte(`{}`)}}); err == nil {
		t.Error("ReplaceProviders without a keyring succeeded")
	}
}
