package server

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestTokensAndWhoAmI(t *testing.T) {
	e := newEnv(t, denyAuthorizer{"bob": {apiv1.VerbDelete}})
	code, body := e.do("bob", "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: "laptop"})
	if code != 201 {
		t.Fatalf("create token: %d %s", code, body)
	}
	var tok apiv1.Token
	_ = json.Unmarshal(body, &tok)
	if !strings.HasPrefix(tok.Token, "cka_") || tok.ExpiresAt == nil {
		t.Fatalf("token: %+v", tok)
	}
	// Names are unique per user; a second "laptop" is a conflict that says so (it once
	// read "changed by someone else"), and a name with control characters is refused
	// before the store sees it (it once was a 500).
	if code, body := e.do("bob", "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: "laptop"}); code != 409 || !strings.Contains(errorOf(t, body).Message, `already have a token named "laptop"`) {
		t.Fatalf("second token named laptop: %d %s", code, body)
	}
	if code, body := e.do("bob", "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: "lap\ttop"}); code != 400 || !strings.Contains(errorOf(t, body).Message, "plain text") {
		t.Fatalf("token name with a tab: %d %s", code, body)
	}
	_, body = e.do("bob", "GET", "/api/v1/tokens", nil)
	if strings.Contains(string(body), tok.Token) || !strings.Contains(string(body), "laptop") {
		t.Fatalf("list leaks the secret or misses the token: %s", body)
	}
	if code, _ := e.do("alice", "DELETE", "/api/v1/tokens/"+tok.ID, nil); code != 404 {
		t.Fatalf("alice revoked bob's token: %d", code)
	}
	if code, _ := e.do("bob", "DELETE", "/api/v1/tokens/"+tok.ID, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	_, body = e.do("bob", "GET", "/api/v1/whoami", nil)
	var who apiv1.WhoAmI
	_ = json.Unmarshal(body, &who)
	if who.Username != "bob" || who.Permissions["delete"] || !who.Permissions["create"] || who.User.Email != "bob@example.com" {
		t.Fatalf("whoami: %s", body)
	}
}

// whoami publishes how the agent reads identity headers, for `kubectl agents doctor`.
func TestWhoAmIPublishesHeaderAuthInfo(t *testing.T) {
	info := apiv1.HeaderAuthInfo{State: apiv1.HeaderAuthEnabled, EmailHeader: "X-Forwarded-Email", JWTHeader: "X-Forwarded-Access-Token",
		TrustedProxyCIDRs: []string{"127.0.0.6/32", "::6/128"}, JWTVerified: true, JWTIssuer: "https://idp.example.com", JWTAudiences: []string{"cake-agents"}}
	e := newEnvWith(t, nil, func(o *Options) { o.HeaderAuth, o.HeaderAuthInfo = info.State, info })
	code, body := e.do("bob", "GET", "/api/v1/whoami", nil)
	var who apiv1.WhoAmI
	if err := json.Unmarshal(body, &who); code != 200 || err != nil {
		t.Fatalf("whoami: %d %s", code, body)
	}
	if who.HeaderAuth != apiv1.HeaderAuthEnabled || who.HeaderAuthInfo == nil || !reflect.DeepEqual(*who.HeaderAuthInfo, info) {
		t.Errorf("whoami header auth = %q %+v, want %+v", who.HeaderAuth, who.HeaderAuthInfo, info)
	}
	// Without header auth configured (tests, old wiring) nothing is claimed.
	_, body = newEnv(t, nil).do("bob", "GET", "/api/v1/whoami", nil)
	if strings.Contains(string(body), "headerAuthInfo") {
		t.Errorf("whoami without header auth info: %s", body)
	}
}

func decodeToken(t *testing.T, body []byte) apiv1.Token {
	t.Helper()
	var tok apiv1.Token
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatalf("not a token: %s", body)
	}
	return tok
}

// Every token expires: the default, at most the maximum, and never after the token
// that created it.
func TestTokenLifetimes(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	e := newEnvWith(t, nil, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.DefaultTokenTTL, o.MaxTokenTTL = 30*24*time.Hour, 90*24*time.Hour
	})
	// "tok" is alice signed in with a personal access token that expires in an hour.
	tokID := *e.users["alice"]
	tokID.Source, tokID.TokenExpiresAt = auth.SourceToken, now.Add(time.Hour)
	e.users["tok"] = &tokID

	expiresIn := func(d time.Duration) *apiv1.Duration { return &apiv1.Duration{Duration: d} }
	for _, tc := range []struct {
		name, user string
		expiresIn  *apiv1.Duration
		code       int
		expires    time.Duration // after now, when created (the store keeps microseconds)
		message    string
	}{
		{name: "default", user: "alice", code: 201, expires: 30 * 24 * time.Hour},
		{name: "zero means the default", user: "alice", expiresIn: expiresIn(0), code: 201, expires: 30 * 24 * time.Hour},
		{name: "asked for", user: "alice", expiresIn: expiresIn(48 * time.Hour), code: 201, expires: 48 * time.Hour},
		{name: "the maximum", user: "alice", expiresIn: expiresIn(90 * 24 * time.Hour), code: 201, expires: 90 * 24 * time.Hour},
		{name: "above the maximum", user: "alice", expiresIn: expiresIn(91 * 24 * time.Hour), code: 400,
			message: "expiresIn: 2184h0m0s is longer than this agent's maximum token lifetime of 2160h0m0s (--token-max-ttl, chart value tokens.maxTTL)"},
		{name: "too short", user: "alice", expiresIn: expiresIn(30 * time.Second), code: 400, message: "expiresIn: 30s is shorter than the minimum of 1m"},
		{name: "with a token: no longer than it", user: "tok", code: 201, expires: time.Hour},
		{name: "with a token: shorter is fine", user: "tok", expiresIn: expiresIn(10 * time.Minute), code: 201, expires: 10 * time.Minute},
		{name: "with a token: longer is refused", user: "tok", expiresIn: expiresIn(2 * time.Hour), code: 400,
			message: "expiresIn: 2h0m0s is longer than the personal access token you used, which expires at 2026-12-01T13:00:00Z (in 1h0m0s): a token cannot outlive the token that created it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(tc.user, "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: tc.name, ExpiresIn: tc.expiresIn})
			if code != tc.code {
				t.Fatalf("create: %d %s, want %d", code, body, tc.code)
			}
			if tc.code != 201 {
				if msg := errorOf(t, body).Message; !strings.Contains(msg, tc.message) {
					t.Errorf("message %q, want it to contain %q", msg, tc.message)
				}
				return
			}
			tok := decodeToken(t, body)
			if tok.ExpiresAt == nil || tok.ExpiresAt.Sub(now.Add(tc.expires)).Abs() > time.Millisecond {
				t.Errorf("expires at %v, want %v", tok.ExpiresAt, now.Add(tc.expires))
			}
		})
	}

	// A token stored without an expiry (an older agent's) is shown, and treated, as
	// expiring the maximum lifetime after its creation.
	created := now.Add(-time.Hour)
	if err := e.st.CreateToken(context.Background(), &store.Token{OwnerID: e.users["bob"].UserID, Name: "old", Hash: auth.HashToken("cka_old"), CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	_, body := e.do("bob", "GET", "/api/v1/tokens", nil)
	var list apiv1.TokenList
	if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 1 || list.Items[0].ExpiresAt == nil ||
		!list.Items[0].ExpiresAt.Equal(created.Add(90*24*time.Hour)) || list.Items[0].Owner != "bob@example.com" {
		t.Fatalf("bob's tokens: %s", body)
	}
}

// An admin revokes every token of a user; anyone may revoke all of their own.
func TestRevokeUserTokens(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct{ user, name string }{{"alice", "laptop"}, {"alice", "ci"}, {"bob", "laptop"}} {
		if code, body := e.do(c.user, "POST", "/api/v1/tokens", apiv1.CreateTokenRequest{Name: c.name}); code != 201 {
			t.Fatalf("create %s's %s: %d %s", c.user, c.name, code, body)
		}
	}
	list := func(user, query string) (int, apiv1.TokenList, []byte) {
		code, body := e.do(user, "GET", "/api/v1/tokens"+query, nil)
		var l apiv1.TokenList
		_ = json.Unmarshal(body, &l)
		return code, l, body
	}

	if code, body := e.do("bob", "DELETE", "/api/v1/tokens?user=alice", nil); code != 403 || !strings.Contains(errorOf(t, body).Message, "are for admins") {
		t.Fatalf("bob revoking alice's tokens: %d %s", code, body)
	}
	if code, _, body := list("bob", "?user=alice@example.com"); code != 403 {
		t.Fatalf("bob listing alice's tokens: %d %s", code, body)
	}
	code, l, body := list("root", "?user=alice@example.com")
	if code != 200 || len(l.Items) != 2 || l.Items[0].Owner != "alice@example.com" || l.Items[0].OwnerID != e.users["alice"].UserID || l.Items[0].Token != "" {
		t.Fatalf("admin listing alice's tokens: %d %s", code, body)
	}

	code, body = e.do("root", "DELETE", "/api/v1/tokens?user=alice", nil)
	var rev apiv1.TokenRevocation
	if err := json.Unmarshal(body, &rev); code != 200 || err != nil || rev.Revoked != 2 || len(rev.Users) != 1 || rev.Users[0].ID != e.users["alice"].UserID {
		t.Fatalf("admin revoking alice's tokens: %d %s", code, body)
	}
	if _, l, body := list("alice", ""); len(l.Items) != 0 {
		t.Errorf("alice still has tokens: %s", body)
	}
	if _, l, body := list("bob", ""); len(l.Items) != 1 {
		t.Errorf("bob's token was touched: %s", body)
	}

	code, body = e.do("bob", "DELETE", "/api/v1/tokens?user=me", nil)
	if err := json.Unmarshal(body, &rev); code != 200 || err != nil || rev.Revoked != 1 {
		t.Fatalf("bob revoking all his own tokens: %d %s", code, body)
	}
	if code, body := e.do("root", "DELETE", "/api/v1/tokens?user=nobody@example.com", nil); code != 404 || !strings.Contains(errorOf(t, body).Message, `no user "nobody@example.com" is known`) {
		t.Errorf("unknown user: %d %s", code, body)
	}
	if code, body := e.do("root", "DELETE", "/api/v1/tokens", nil); code != 400 || !strings.Contains(errorOf(t, body).Message, "user: name the user") {
		t.Errorf("no user: %d %s", code, body)
	}

	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{Target: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Items {
		got = append(got, ev.Actor+" "+ev.Action+" "+ev.Outcome)
	}
	if want := []string{"root@example.com token.revoke-all success", "bob@example.com token.revoke-all denied"}; !reflect.DeepEqual(got, want) {
		t.Errorf("audit of revocations of alice's tokens = %q, want %q", got, want)
	}
}
