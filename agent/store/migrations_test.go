package store_test

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
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

// TestMigrationsForwardOnly: a migration, once in the tree, is never edited, renamed or
// removed: databases out there have run it and recorded only its version, so a change to
// it would never reach them (and an upgrade from an earlier release would build a schema
// no one tested). New migrations append a version; migrations.sum records every one's
// checksum per dialect. Add a new migration's line with
// `CAKE_UPDATE_MIGRATIONS_SUM=1 go test ./agent/store -run TestMigrationsForwardOnly`.
func TestMigrationsForwardOnly(t *testing.T) {
	var lines []string
	for _, d := range []struct {
		name string
		fs   fs.FS
	}{{"sqlite", sqlite.MigrationFiles()}, {"postgres", postgres.MigrationFiles()}} {
		ms, err := sqlcommon.LoadMigrations(d.fs, "migrations")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			sum := sha256.Sum256([]byte(m.SQL))
			lines = append(lines, fmt.Sprintf("%s %04d_%s %x", d.name, m.Version, m.Name, sum))
		}
	}
	got := strings.Join(lines, "\n") + "\n"
	const file = "migrations.sum"
	want, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if os.Getenv("CAKE_UPDATE_MIGRATIONS_SUM") != "" {
		// Only appending is allowed, even when updating.
		for _, l := range strings.Split(strings.TrimSpace(string(want)), "\n") {
			if l != "" && !slices.Contains(lines, l) {
				t.Fatalf("%s: %q is gone or changed: a migration that ran somewhere must stay as it is; add a new one instead", file, l)
			}
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(want) == got {
		return
	}
	have := map[string]bool{}
	for _, l := range lines {
		have[l] = true
	}
	for _, l := range strings.Split(strings.TrimSpace(string(want)), "\n") {
		if !have[l] {
			t.Errorf("%s: %q is gone or changed: a migration that ran somewhere must stay as it is; add a new one instead", file, l)
		}
	}
	if !t.Failed() {
		t.Errorf("%s lacks the new migrations: run CAKE_UPDATE_MIGRATIONS_SUM=1 go test ./agent/store -run TestMigrationsForwardOnly", file)
	}
}
