package sqlcommon

import (
	"errors"
	"regexp"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
)

func TestSessionCursorRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	tok := EncodeSessionCursor(at, "abc")
	got, id, err := DecodeSessionCursor(tok)
	if err != nil || !got.Equal(at) || id != "abc" {
		t.Fatalf("decode = %v %q %v", got, id, err)
	}
	for _, bad := range []string{"", "!!", "e30", EncodeAuditCursor(5)} {
		if _, _, err := DecodeSessionCursor(bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("DecodeSessionCursor(%q) = %v", bad, err)
		}
	}
	if id, err := DecodeAuditCursor(EncodeAuditCursor(42)); err != nil || id != 42 {
		t.Errorf("audit cursor = %d, %v", id, err)
	}
	if _, err := DecodeAuditCursor(tok); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("a session cursor decoded as an audit cursor: %v", err)
	}
}

func TestMigrations(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0002_more.sql": {Data: []byte("B")},
		"m/0001_init.sql": {Data: []byte("A")},
		"m/README.md":     {Data: []byte("ignored")},
	}
	ms, err := LoadMigrations(fsys, "m")
	if err != nil || len(ms) != 2 || ms[0].Version != 1 || ms[1].Name != "more" || Latest(ms) != 2 {
		t.Fatalf("LoadMigrations = %+v, %v", ms, err)
	}
	if p, err := Pending(ms, 1); err != nil || len(p) != 1 || p[0].Version != 2 {
		t.Errorf("Pending(1) = %+v, %v", p, err)
	}
	if p, err := Pending(ms, 2); err != nil || len(p) != 0 {
		t.Errorf("Pending(2) = %+v, %v", p, err)
	}
	_, err = Pending(ms, 7)
	if !errors.Is(err, store.ErrSchemaTooNew) ||
		err.Error() != "database schema version 7 is newer than this agent (max 2): upgrade the agent or restore a backup" {
		t.Errorf("Pending(7) = %v", err)
	}
	for name, f := range map[string]fstest.MapFS{
		"dup":     {"m/0001_a.sql": {}, "m/1_b.sql": {}},
		"badname": {"m/init.sql": {}},
		"zero":    {"m/0000_x.sql": {}},
		"empty":   {"m/x.txt": {}},
	} {
		if _, err := LoadMigrations(f, "m"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[a-z2-7]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}

func TestLimit(t *testing.T) {
	for in, want := range map[int]int{-1: 100, 0: 100, 1: 1, 1000: 1000, 1001: 1000} {
		if got := Limit(in); got != want {
			t.Errorf("Limit(%d) = %d, want %d", in, got, want)
		}
	}
}
