package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

func newSeedStore(t *testing.T) *sqlite.Store {
	t.Helper()
	kr, _ := keyring.New([]byte("app test auth secret, 32+ bytes long"))
	st, err := sqlite.Open(t.Context(), sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// The providers file seeds the store once; an admin's later change survives restarts,
// removing every provider included.
func TestSeedProviders(t *testing.T) {
	ctx := t.Context()
	st := newSeedStore(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "providers.json")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"acme": {"options": {"apiKey": "sk-seed"}, "models": {"m": {}}}}`)
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	ps, _ := st.ListProviders(ctx)
	if len(ps) != 1 || ps[0].ID != "acme" || ps[0].Secrets["options.apiKey"] != "sk-seed" {
		t.Fatalf("seeded: %+v", ps)
	}
	// An admin replaced them; the next start does not import the file again.
	set, _ := providers.Parse([]byte(`{"other": {"models": {"x": {}}}}`))
	if err := st.ReplaceProviders(ctx, set.ToStore()); err != nil {
		t.Fatal(err)
	}
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	if ps, _ := st.ListProviders(ctx); len(ps) != 1 || ps[0].ID != "other" {
		t.Errorf("a restart re-imported the file over the admin's providers: %+v", ps)
	}
	// An admin removed them all (PUT {}); a restart keeps it so.
	if err := st.ReplaceProviders(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	if ps, _ := st.ListProviders(ctx); len(ps) != 0 {
		t.Errorf("a restart re-imported the file after an admin removed every provider: %+v", ps)
	}
}

// A bad file stops the start with the field named; a missing one (a wrong
// providers.existingSecret) does not, and is imported once it is there.
func TestSeedProvidersFile(t *testing.T) {
	ctx := t.Context()
	file := filepath.Join(t.TempDir(), "providers.json")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st := newSeedStore(t)
	write(`{"acme": {"options": {"baseURL": "nope"}, "models": {"m": {}}}}`)
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "providers.acme.options.baseURL: must be an http(s) URL") {
		t.Errorf("bad file: %v", err)
	}
	write(`{"acme": {"options": {"apiKey": "%%SECRET%%"}, "models": {"m": {}}}}`)
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "none is stored") {
		t.Errorf("placeholder in the file: %v", err)
	}

	st = newSeedStore(t)
	missing := filepath.Join(t.TempDir(), "providers.json")
	var logs strings.Builder
	if err := seedProviders(ctx, st, missing, hclog.New(&hclog.LoggerOptions{Output: &logs})); err != nil {
		t.Fatalf("a missing providers file stopped the start: %v", err)
	}
	if !strings.Contains(logs.String(), "[WARN]") || !strings.Contains(logs.String(), "providers.existingSecret") {
		t.Errorf("log %q: want a warning naming providers.existingSecret", logs.String())
	}
	write(`{"acme": {"models": {"m": {}}}}`)
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	if ps, _ := st.ListProviders(ctx); len(ps) != 1 {
		t.Errorf("the file, once there, was not imported: %+v", ps)
	}
}
