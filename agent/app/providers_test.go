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

// The providers file seeds an empty store once; an admin's later change survives restarts.
func TestSeedProviders(t *testing.T) {
	ctx := t.Context()
	kr, _ := keyring.New([]byte("app test auth secret, 32+ bytes long"))
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
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
	// A bad file stops the start with the field named.
	if err := st.ReplaceProviders(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(`{"acme": {"options": {"baseURL": "nope"}, "models": {"m": {}}}}`)
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "providers.acme.options.baseURL: must be an http(s) URL") {
		t.Errorf("bad file: %v", err)
	}
	write(`{"acme": {"options": {"apiKey": "%%SECRET%%"}, "models": {"m": {}}}}`)
	if err := seedProviders(ctx, st, file, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "none is stored") {
		t.Errorf("placeholder in the file: %v", err)
	}
}
