package auth

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

// newStore opens a real SQLite store in a temp file (a file, not :memory:, so tests can
// read the raw rows with a second connection).
func newStore(t testing.TB) (*sqlite.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agents.db")
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, path
}

func mustUser(t testing.TB, st store.Store, source, subject string, groups ...string) *store.User {
	t.Helper()
	u := &store.User{Source: source, Subject: subject, Email: subject, Groups: groups}
	if err := st.UpsertUser(context.Background(), u); err != nil {
		t.Fatalf("upsert user: %v", err)
	}
	return u
}
