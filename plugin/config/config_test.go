package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLoadUpdate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "plugin.json")
	s, err := Load(path)
	if err != nil || s != (State{}) {
		t.Fatalf("Load(missing) = %+v, %v", s, err)
	}
	if err := Save(path, State{Server: "https://agents.example.com", Token: "cka_x"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600 (the file holds a token)", fi.Mode().Perm())
	}
	if err := Update(path, func(s *State) { s.AgentNamespace = "ops" }); err != nil {
		t.Fatal(err)
	}
	s, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (State{Server: "https://agents.example.com", Token: "cka_x", AgentNamespace: "ops"}); s != want {
		t.Errorf("state = %+v, want %+v", s, want)
	}
}

func TestCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plugin.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Fatal("Load of a corrupt file succeeded")
	}
	if err := Update(path, func(s *State) { s.AgentNamespace = "x" }); err != nil {
		t.Fatalf("Update over a corrupt file: %v", err)
	}
	if s, err := Load(path); err != nil || s.AgentNamespace != "x" {
		t.Fatalf("after Update: %+v, %v", s, err)
	}
}

func TestDefaultPathHonoursEnv(t *testing.T) {
	t.Setenv(EnvPath, "/tmp/x.json")
	if p, err := DefaultPath(); err != nil || p != "/tmp/x.json" {
		t.Fatalf("DefaultPath = %q, %v", p, err)
	}
	t.Setenv(EnvPath, "")
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	if p, err := DefaultPath(); err != nil || p != "/cfg/cake-agents/plugin.json" {
		t.Fatalf("DefaultPath = %q, %v", p, err)
	}
}
