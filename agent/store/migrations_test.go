package store_test

import (
	"regexp"
	"slices"
	"testing"

	"github.com/cakeai/cake-agents/agent/store/internal/sqlcommon"
	"github.com/cakeai/cake-agents/agent/store/postgres"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

// TestMigrationsLockStep: both dialects must have the same migrations (version and
// name), so one schema version means the same thing on either backend.
func TestMigrationsLockStep(t *testing.T) {
	lite, err := sqlcommon.LoadMigrations(sqlite.MigrationFiles(), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := sqlcommon.LoadMigrations(postgres.MigrationFiles(), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	names := func(ms []sqlcommon.Migration) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	versions := func(ms []sqlcommon.Migration) []int {
		var out []int
		for _, m := range ms {
			out = append(out, m.Version)
		}
		return out
	}
	if !slices.Equal(versions(lite), versions(pg)) || !slices.Equal(names(lite), names(pg)) {
		t.Fatalf("migrations drifted between dialects:\nsqlite   %v %v\npostgres %v %v",
			versions(lite), names(lite), versions(pg), names(pg))
	}
	// Versions are 1..N without gaps, so "newer than this binary" is a simple comparison.
	for i, v := range versions(lite) {
		if v != i+1 {
			t.Errorf("migration versions %v have a gap at %d", versions(lite), i+1)
			break
		}
	}
	// Both dialects create the same tables.
	table := regexp.MustCompile(`(?i)CREATE TABLE\s+(?:IF NOT EXISTS\s+)?(\w+)`)
	tables := func(ms []sqlcommon.Migration) []string {
		var out []string
		for _, m := range ms {
			for _, g := range table.FindAllStringSubmatch(m.SQL, -1) {
				out = append(out, g[1])
			}
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(tables(lite), tables(pg)) {
		t.Errorf("tables differ: sqlite %v, postgres %v", tables(lite), tables(pg))
	}
}
