// Package sqlcommon holds what the SQL backends share without sharing SQL: migration
// file loading and version checks, opaque continue tokens, id generation, time
// normalisation and argument validation. Each dialect writes its own statements.
package sqlcommon

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Page sizes for ListSessions and ListAudit.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Migration is one embedded schema migration file, NNNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads dir/*.sql from fsys, sorted by version. File names must be
// NNNN_name.sql with unique, positive versions.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || name == "" {
			return nil, fmt.Errorf("migration file %q: want NNNN_name.sql", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %q and %q share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %q: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations in %q", dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// UpTo is the migrations of ms (sorted) whose version is at most to.
func UpTo(ms []Migration, to int) []Migration {
	for i, m := range ms {
		if m.Version > to {
			return ms[:i]
		}
	}
	return ms
}

// Latest is the highest version in ms (which must be sorted).
func Latest(ms []Migration) int { return ms[len(ms)-1].Version }

// TooNewError reports a database migrated by a newer binary. It wraps store.ErrSchemaTooNew.
type TooNewError struct {
	Current, Latest int
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("database schema version %d is newer than this agent (max %d): upgrade the agent or restore a backup", e.Current, e.Latest)
}

// Unwrap makes errors.Is(err, store.ErrSchemaTooNew) true.
func (e *TooNewError) Unwrap() error { return store.ErrSchemaTooNew }

// Pending returns the migrations above current, or a *TooNewError when current is
// beyond what the binary knows.
func Pending(ms []Migration, current int) ([]Migration, error) {
	if latest := Latest(ms); current > latest {
		return nil, &TooNewError{Current: current, Latest: latest}
	}
	var out []Migration
	for _, m := range ms {
		if m.Version > current {
			out = append(out, m)
		}
	}
	return out, nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a random 12-character lowercase base32 id (60 bits), DNS-label safe.
func NewID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return idEncoding.EncodeToString(b[:])[:12]
}

// Time normalises t as stored: UTC, truncated to microseconds (Postgres' precision).
func Time(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Now is Time(time.Now()).
func Now() time.Time { return Time(time.Now()) }

// TimePtr normalises an optional time.
func TimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := Time(*t)
	return &v
}

// Limit applies the default and the maximum page size.
func Limit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// ActiveStates lists the states counted by the per-user quota.
func ActiveStates() []string {
	var out []string
	for _, s := range apiv1.AllStates {
		if s.Active() {
			out = append(out, string(s))
		}
	}
	return out
}

// States converts a filter's states, rejecting unknown ones.
func States(in []apiv1.SessionState) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !s.Valid() {
			return nil, fmt.Errorf("unknown session state %q: %w", s, store.ErrInvalid)
		}
		out = append(out, string(s))
	}
	return out, nil
}

type sessionCursor struct {
	T  int64  `json:"t"` // CreatedAt, unix microseconds
	ID string `json:"i"`
}

// EncodeSessionCursor makes the continue token after the session (createdAt, id).
func EncodeSessionCursor(createdAt time.Time, id string) string {
	b, _ := json.Marshal(sessionCursor{T: createdAt.UnixMicro(), ID: id})
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeSessionCursor parses a token from EncodeSessionCursor.
func DecodeSessionCursor(tok string) (time.Time, string, error) {
	var c sessionCursor
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.ID == "" {
		return time.Time{}, "", fmt.Errorf("malformed continue token: %w", store.ErrInvalid)
	}
	return time.UnixMicro(c.T).UTC(), c.ID, nil
}

// EncodeAuditCursor makes the continue token after audit event id.
func EncodeAuditCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("a" + strconv.FormatInt(id, 10)))
}

// DecodeAuditCursor parses a token from EncodeAuditCursor.
func DecodeAuditCursor(tok string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil && len(b) > 1 && b[0] == 'a' {
		if id, err := strconv.ParseInt(string(b[1:]), 10, 64); err == nil && id > 0 {
			return id, nil
		}
	}
	return 0, fmt.Errorf("malformed continue token: %w", store.ErrInvalid)
}

// PrepareSession validates s for CreateSession and fills its defaults: Pending state,
// CreatedAt now, UpdatedAt = CreatedAt, LastActivityAt = CreatedAt, ResourceVersion 1,
// and every time normalised to what the database stores.
func PrepareSession(s *store.Session) error {
	if s.ID == "" {
		return fmt.Errorf("session id is empty: %w", store.ErrInvalid)
	}
	if s.OwnerID == "" {
		return fmt.Errorf("session %q has no owner: %w", s.ID, store.ErrInvalid)
	}
	if s.State == "" {
		s.State = apiv1.StatePending
	}
	if !s.State.Valid() {
		return fmt.Errorf("session %q: unknown state %q: %w", s.ID, s.State, store.ErrInvalid)
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = Now()
	}
	s.CreatedAt = Time(s.CreatedAt)
	s.UpdatedAt = s.CreatedAt
	if s.LastActivityAt.IsZero() {
		s.LastActivityAt = s.CreatedAt
	}
	s.LastActivityAt = Time(s.LastActivityAt)
	s.StartedAt = TimePtr(s.StartedAt)
	s.StoppedAt = TimePtr(s.StoppedAt)
	switch s.StartKind {
	case "":
		s.StartKind = apiv1.StartKindCold
	case apiv1.StartKindCold, apiv1.StartKindWarm:
	default:
		return fmt.Errorf("session %q: unknown start kind %q: %w", s.ID, s.StartKind, store.ErrInvalid)
	}
	s.ResourceVersion = 1
	return nil
}

// PrepareUpdate validates s for UpdateSession and normalises its times.
func PrepareUpdate(s *store.Session) error {
	if s.ID == "" {
		return fmt.Errorf("session id is empty: %w", store.ErrInvalid)
	}
	if !s.State.Valid() {
		return fmt.Errorf("session %q: unknown state %q: %w", s.ID, s.State, store.ErrInvalid)
	}
	s.LastActivityAt = Time(s.LastActivityAt)
	s.StartedAt = TimePtr(s.StartedAt)
	s.StoppedAt = TimePtr(s.StoppedAt)
	return nil
}

// CredentialAAD is the associated data binding a credential's ciphertext to its row.
func CredentialAAD(ownerID, provider string) []byte {
	return []byte("credential\x00" + ownerID + "\x00" + provider)
}

// ProviderAAD is the associated data binding a provider's sealed secrets to its row.
func ProviderAAD(id string) []byte {
	return []byte("provider\x00" + id)
}

// CheckTranscript refuses what PutTranscript must not store: a head without session
// or owner, a message without id.
func CheckTranscript(t *store.Transcript, msgs []*store.TranscriptMessage) error {
	if t.SessionID == "" || t.OwnerID == "" {
		return fmt.Errorf("record a transcript: the session and its owner are required: %w", store.ErrInvalid)
	}
	for _, m := range msgs {
		if m.ID == "" {
			return fmt.Errorf("record the transcript of session %s: a message without id: %w", t.SessionID, store.ErrInvalid)
		}
	}
	return nil
}

// CheckProviders refuses a set ReplaceProviders must not store: an empty or
// duplicate ID.
func CheckProviders(ps []*store.Provider) error {
	seen := map[string]bool{}
	for _, p := range ps {
		if p.ID == "" {
			return fmt.Errorf("replace providers: a provider has no id: %w", store.ErrInvalid)
		}
		if seen[p.ID] {
			return fmt.Errorf("replace providers: provider %q appears twice: %w", p.ID, store.ErrInvalid)
		}
		seen[p.ID] = true
	}
	return nil
}

// MarshalSecrets encodes a provider's secrets for sealing ("{}" for none).
func MarshalSecrets(m map[string]string) []byte {
	if m == nil {
		m = map[string]string{}
	}
	b, _ := json.Marshal(m)
	return b
}

// UnmarshalSecrets decodes what MarshalSecrets encoded.
func UnmarshalSecrets(b []byte) (map[string]string, error) {
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode provider secrets: %w", err)
	}
	return m, nil
}

// MarshalGroups encodes groups as JSON text ("[]" for none).
func MarshalGroups(g []string) string {
	if len(g) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(g)
	return string(b)
}

// UnmarshalGroups decodes MarshalGroups' output; none is nil.
func UnmarshalGroups(s string) ([]string, error) {
	var g []string
	if s == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(s), &g); err != nil {
		return nil, fmt.Errorf("decode groups: %w", err)
	}
	if len(g) == 0 {
		return nil, nil
	}
	return g, nil
}
