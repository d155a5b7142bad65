// Package config keeps the plugin's small amount of state between runs: the personal
// access token and server URL from `kubectl agents login` (for --server mode), and the
// agent namespace that last worked, so users who installed the agent somewhere other
// than the default do not have to repeat --agent-namespace.
//
// The file lives under the user's config directory (os.UserConfigDir, so
// $XDG_CONFIG_HOME/cake-agents/plugin.json on Linux) with mode 0600 because it holds a
// credential. It is JSON, written atomically, and ignored when unreadable rather than
// breaking every command.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// EnvPath overrides where the state file lives (tests, and users with several setups).
const EnvPath = "KUBECTL_AGENTS_CONFIG"

// State is what the plugin remembers.
type State struct {
	// Server and Token are set by `login` and cleared by `logout`.
	Server string `json:"server,omitempty"`
	Token  string `json:"token,omitempty"`
	// AgentNamespace is the namespace where the agent was last reached by discovery.
	AgentNamespace string `json:"agentNamespace,omitempty"`
}

// DefaultPath returns the state file's path: $KUBECTL_AGENTS_CONFIG, else
// <user config dir>/cake-agents/plugin.json.
func DefaultPath() (string, error) {
	if p := os.Getenv(EnvPath); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the user config directory for the plugin state (set $%s to a file path instead): %w", EnvPath, err)
	}
	return filepath.Join(dir, "cake-agents", "plugin.json"), nil
}

// Load reads the state at path; a missing file is an empty State.
func Load(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read plugin state %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("parse plugin state %s (delete it to start afresh): %w", path, err)
	}
	return s, nil
}

// Save writes s to path atomically with mode 0600, creating the directory.
func Save(path string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create plugin state directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".plugin-*.json")
	if err != nil {
		return fmt.Errorf("write plugin state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write plugin state: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write plugin state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write plugin state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write plugin state: %w", err)
	}
	return nil
}

// Update loads the state at path, applies fn and saves the result.
func Update(path string, fn func(*State)) error {
	s, err := Load(path)
	if err != nil {
		// A corrupt file must not block login or namespace memory: start afresh.
		s = State{}
	}
	fn(&s)
	return Save(path, s)
}
