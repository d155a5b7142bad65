// Package storetest is the conformance suite every store backend must pass, and the
// benchmarks `make bench` runs against each of them.
//
// A backend's test calls Run with a function that creates a fresh, empty database and
// returns a DB handle for it; the suite opens stores on it (several times when it
// needs to: key rotation, migrations) and reads the raw database to prove that no
// credential or token is stored in plain text:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, newTestDB) }
//	func BenchmarkStore(b *testing.B)  { storetest.Bench(b, newTestDB) }
package storetest

import (
	"context"
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
)

// DB is one fresh database of the backend under test.
type DB interface {
	// Open opens a new store on this database. Each call returns an independent
	// store (its own connections); the suite closes it.
	Open(ctx context.Context, o OpenOptions) (store.Store, error)
	// Dump returns every value of every column of every table, keyed by
	// "table.column", as the database holds it (text as UTF-8, blobs as raw bytes).
	// A file-based backend should add the raw bytes of its files under "file:NAME".
	Dump(ctx context.Context) (map[string][][]byte, error)
	// Exec runs one SQL statement on the raw database (used to simulate a database
	// migrated by a newer binary and to tamper with rows).
	Exec(ctx context.Context, stmt string) error
}

// OpenOptions are passed to DB.Open.
type OpenOptions struct {
	// Keyring to encrypt credentials with.
	Keyring *keyring.Keyring
	// SkipMigrate opens without applying migrations.
	SkipMigrate bool
}

// NewDB creates a fresh, empty database for one test (cleaned up with tb).
type NewDB func(tb testing.TB) DB
