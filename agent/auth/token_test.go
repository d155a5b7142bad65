package auth

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the raw-row inspection opens the file directly

	"github.com/cakeai/cake-agents/agent/store"
)

func bearerRequest(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/v1/whoami", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

func TestIssueAndAuthenticateToken(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceKubernetes, "jane", "devs")
	secret, tok, err := IssueToken(ctx, st, u.ID, "laptop", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, TokenPrefix) || len(secret) < len(TokenPrefix)+40 {
		t.Fatalf("secret %q lacks the prefix or entropy", secret)
	}
	if tok.ExpiresAt == nil || tok.OwnerID != u.ID || !bytes.Equal(tok.Hash, HashToken(secret)) {
		t.Fatalf("token = %+v", tok)
	}

	a := NewTokenAuthenticator(st, nil)
	id, ok, err := a.Authenticate(bearerRequest(secret))
	if err != nil || !ok {
		t.Fatalf("authenticate: ok=%v err=%v", ok, err)
	}
	if id.UserID != u.ID || id.Username != "jane" || id.Source != SourceToken || len(id.Groups) != 1 || id.Groups[0] != "devs" {
		t.Errorf("identity = %+v", id)
	}

	for name, r := range map[string]*http.Request{
		"no header":         httptest.NewRequest(http.MethodGet, "/", nil),
		"kubernetes token":  bearerRequest("eyJhbGciOiJSUzI1NiJ9.e30.sig"),
		"basic auth":        func() *http.Request { r := bearerRequest(""); r.Header.Set("Authorization", "Basic "+secret); return r }(),
		"prefix in a value": bearerRequest("x" + secret),
	} {
		if id, ok, err := a.Authenticate(r); id != nil || ok || err != nil {
			t.Errorf("%s: want not recognised, got id=%v ok=%v err=%v", name, id, ok, err)
		}
	}

	if _, _, err := a.Authenticate(bearerRequest(secret + "x")); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("unknown token: err = %v, want ErrUnauthenticated", err)
	}
	if err := st.DeleteToken(ctx, u.ID, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Authenticate(bearerRequest(secret)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("revoked token: err = %v, want ErrUnauthenticated", err)
	}
}

func TestTokenExpiry(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceHeader, "jane@example.com")
	secret, _, err := IssueToken(ctx, st, u.ID, "short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := NewTokenAuthenticator(st, nil)
	a.now = func() time.Time { return time.Now().Add(time.Hour + time.Second) }
	_, _, err = a.Authenticate(bearerRequest(secret))
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v, want expired", err)
	}
	if _, _, err := IssueToken(ctx, st, u.ID, "forever", 0); err == nil || !strings.Contains(err.Error(), "every token expires") {
		t.Fatalf("ttl 0: err = %v, want a refusal: every token expires", err)
	}
}

// Tokens stored without an expiry (issued before expiry was mandatory) expire the
// maximum lifetime after their creation.
func TestTokenWithoutStoredExpiryGetsTheMaximum(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceKubernetes, "jane")
	now := time.Now().UTC()
	for name, created := range map[string]time.Time{"old": now.Add(-91 * 24 * time.Hour), "recent": now.Add(-24 * time.Hour)} {
		if err := st.CreateToken(ctx, &store.Token{OwnerID: u.ID, Name: name, Hash: HashToken(TokenPrefix + name), CreatedAt: created}); err != nil {
			t.Fatal(err)
		}
	}
	a := NewTokenAuthenticator(st, nil, WithMaxTokenTTL(90*24*time.Hour))
	a.now = func() time.Time { return now }
	if _, _, err := a.Authenticate(bearerRequest(TokenPrefix + "old")); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("token created 91 days ago without an expiry: err = %v, want expired", err)
	}
	id, ok, err := a.Authenticate(bearerRequest(TokenPrefix + "recent"))
	if err != nil || !ok {
		t.Fatalf("token created yesterday without an expiry: ok=%v err=%v", ok, err)
	}
	if want := now.Add(-24 * time.Hour).Add(90 * 24 * time.Hour); id.TokenExpiresAt.Sub(want).Abs() > time.Millisecond {
		t.Errorf("TokenExpiresAt = %v, want %v", id.TokenExpiresAt, want)
	}
}

// fakeAuthorizer answers from a map of user -> allowed verbs and records who it was
// asked about.
type fakeAuthorizer struct {
	allow map[string][]string
	err   error
	asked []Identity
}

func (f *fakeAuthorizer) Authorize(_ context.Context, id *Identity, verb string) (bool, string, error) {
	f.asked = append(f.asked, *id)
	if f.err != nil {
		return false, "", f.err
	}
	if slices.Contains(f.allow[id.Username], verb) {
		return true, "", nil
	}
	return false, "no RBAC rule allows it", nil
}

func (f *fakeAuthorizer) AuthorizeSession(ctx context.Context, id *Identity, verb, _ string) (bool, string, error) {
	return f.Authorize(ctx, id, verb)
}

// adminByGroup makes the members of group admins, as SARAuthorizer's admin groups do.
type adminByGroup struct {
	*fakeAuthorizer
	group string
}

func (a *adminByGroup) Admin(_ context.Context, id *Identity) (bool, error) {
	return slices.Contains(id.Groups, a.group), nil
}

// A token works only while its owner may still get sessions, and acts with the groups
// of the owner's latest sign-in.
func TestTokenFollowsTheOwnersAccess(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceKubernetes, "jane", "team-a", "system:authenticated")
	secret, tok, err := IssueToken(ctx, st, u.ID, "laptop", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	authz := &fakeAuthorizer{allow: map[string][]string{"jane": {OwnerAccessVerb}}}
	a := NewTokenAuthenticator(st, nil, WithOwnerAccess(authz))
	id, ok, err := a.Authenticate(bearerRequest(secret))
	if err != nil || !ok || !id.TokenExpiresAt.Equal(*tok.ExpiresAt) {
		t.Fatalf("owner with access: id=%+v ok=%v err=%v", id, ok, err)
	}
	if last := authz.asked[len(authz.asked)-1]; last.Username != "jane" || !slices.Equal(last.Groups, []string{"team-a", "system:authenticated"}) {
		t.Errorf("SubjectAccessReview asked about %+v, want jane in team-a", last)
	}

	// Jane signs in with her kubeconfig again; Kubernetes now reports other groups,
	// and the middleware stores them. The token follows.
	if err := st.UpsertUser(ctx, &store.User{Source: SourceKubernetes, Subject: "jane", Groups: []string{"team-b", "system:authenticated"}}); err != nil {
		t.Fatal(err)
	}
	id, _, err = a.Authenticate(bearerRequest(secret))
	if err != nil || !slices.Equal(id.Groups, []string{"team-b", "system:authenticated"}) {
		t.Fatalf("after the owner's new sign-in: groups %v err %v, want team-b", id.Groups, err)
	}

	// RBAC lets her go: the token stops working.
	authz.allow = nil
	_, ok, err = a.Authenticate(bearerRequest(secret))
	if ok || !errors.Is(err, ErrUnauthenticated) ||
		!strings.Contains(err.Error(), `personal access token "laptop" no longer works: its owner jane may not get sessions.agents.cake.ai any more (no RBAC rule allows it)`) {
		t.Fatalf("owner without access: ok=%v err=%v", ok, err)
	}
	// A member of an admin group needs no RBAC grant, for the token as for the rest.
	adminGroups := &adminByGroup{fakeAuthorizer: authz, group: "team-b"}
	if _, ok, err := NewTokenAuthenticator(st, nil, WithOwnerAccess(adminGroups)).Authenticate(bearerRequest(secret)); !ok || err != nil {
		t.Fatalf("owner in an admin group without RBAC: ok=%v err=%v", ok, err)
	}
	// The Kubernetes API cannot be asked: the token is not accepted either, and the
	// error is not a rejection (503, not 401).
	authz.err = errors.New("connection refused")
	_, ok, err = a.Authenticate(bearerRequest(secret))
	if ok || err == nil || errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("authorizer down: ok=%v err=%v, want an error that is no rejection", ok, err)
	}
}

func TestIssueTokenValidation(t *testing.T) {
	st, _ := newStore(t)
	u := mustUser(t, st, SourceHeader, "jane@example.com")
	for name, args := range map[string]struct {
		owner, name string
		ttl         time.Duration
	}{
		"no owner":        {"", "x", 0},
		"no name":         {u.ID, "  ", 0},
		"long name":       {u.ID, strings.Repeat("n", MaxTokenNameLen+1), 0},
		"control in name": {u.ID, "a\nb", 0},
		"negative ttl":    {u.ID, "x", -time.Second},
		"no expiry":       {u.ID, "x", 0},
	} {
		if _, _, err := IssueToken(context.Background(), st, args.owner, args.name, args.ttl); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

// countingStore counts TouchToken calls on top of the real store.
type countingStore struct {
	store.Store
	touches int
}

func (c *countingStore) TouchToken(ctx context.Context, id string, at time.Time) error {
	c.touches++
	return c.Store.TouchToken(ctx, id, at)
}

func TestTokenLastUsedIsRateLimited(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceHeader, "jane@example.com")
	secret, tok, err := IssueToken(ctx, st, u.ID, "cli", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: st}
	a := NewTokenAuthenticator(cs, nil)
	now := time.Now()
	a.now = func() time.Time { return now }
	a.touched.now = a.now
	for range 5 {
		if _, _, err := a.Authenticate(bearerRequest(secret)); err != nil {
			t.Fatal(err)
		}
	}
	if cs.touches != 1 {
		t.Fatalf("touches = %d after a burst, want 1", cs.touches)
	}
	got, err := st.GetTokenByHash(ctx, tok.Hash)
	if err != nil || got.LastUsedAt == nil || got.LastUsedAt.Sub(now).Abs() > time.Second {
		t.Fatalf("last used = %v (err %v), want about %v", got.LastUsedAt, err, now)
	}
	now = now.Add(tokenTouchInterval + time.Second)
	if _, _, err := a.Authenticate(bearerRequest(secret)); err != nil {
		t.Fatal(err)
	}
	if cs.touches != 2 {
		t.Fatalf("touches = %d after the interval, want 2", cs.touches)
	}
}

// TestTokensNeverStoredInPlainText reads every column of every table of the database
// file and looks for the secret in any encoding a careless backend might use.
func TestTokensNeverStoredInPlainText(t *testing.T) {
	st, path := newStore(t)
	ctx := context.Background()
	u := mustUser(t, st, SourceHeader, "jane@example.com")
	secret, _, err := IssueToken(ctx, st, u.ID, "laptop", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := NewTokenAuthenticator(st, nil).Authenticate(bearerRequest(secret)); !ok || err != nil {
		t.Fatalf("authenticate: ok=%v err=%v", ok, err)
	}
	body := strings.TrimPrefix(secret, TokenPrefix)
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	needles := [][]byte{[]byte(secret), []byte(body), raw, []byte(hex.EncodeToString(raw)), []byte(base64.StdEncoding.EncodeToString(raw))}

	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables := queryStrings(t, db, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	sawHash := false
	for _, table := range tables {
		rows, err := db.Query(fmt.Sprintf(`SELECT * FROM %q`, table))
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				var b []byte
				switch v := v.(type) {
				case []byte:
					b = v
				case string:
					b = []byte(v)
				default:
					continue
				}
				for _, n := range needles {
					if bytes.Contains(b, n) {
						t.Errorf("table %s column %s holds the token secret", table, cols[i])
					}
				}
				if bytes.Equal(b, HashToken(secret)) {
					sawHash = true
				}
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	if !sawHash {
		t.Error("the token's SHA-256 is in no row: the inspection did not see the tokens table")
	}
}

func queryStrings(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
