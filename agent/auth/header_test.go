package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func headerConfig() HeaderConfig {
	return HeaderConfig{
		EmailHeader:       "x-auth-request-email",
		UserHeader:        "x-auth-request-user",
		JWTHeader:         "x-auth-request-access-token",
		EmailClaim:        "email",
		TrustedProxyCIDRs: []string{"10.0.0.0/8", "fd00::/8"},
		Groups:            []string{"cake-agents:users"},
	}
}

// fakeJWT is a well-formed JWT signed with a key nobody checks: what a forger sends.
func fakeJWT(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("not-a-real-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHeaderAuthenticator(t *testing.T) {
	h, err := NewHeaderAuthenticator(headerConfig())
	if err != nil {
		t.Fatal(err)
	}
	jwtJane := fakeJWT(t, jwt.MapClaims{"email": "Jane@Example.com", "sub": "123"})
	type want int
	const (
		accepted want = iota
		rejected
		ignored
	)
	cases := []struct {
		name      string
		peer      string
		headers   [][2]string
		want      want
		wantEmail string
		errHas    string
	}{
		{name: "email from trusted proxy", peer: "10.1.2.3:40000", headers: [][2]string{{"X-Auth-Request-Email", "jane@example.com"}, {"X-Auth-Request-User", "Jane Doe"}}, want: accepted, wantEmail: "jane@example.com"},
		{name: "email is lower-cased", peer: "10.1.2.3:40000", headers: [][2]string{{"X-Auth-Request-Email", "Jane@Example.COM"}}, want: accepted, wantEmail: "jane@example.com"},
		{name: "IPv4-mapped IPv6 peer in trusted range", peer: "[::ffff:10.9.9.9]:1", headers: [][2]string{{"X-Auth-Request-Email", "a@b.c"}}, want: accepted, wantEmail: "a@b.c"},
		{name: "IPv6 trusted proxy", peer: "[fd00::5]:1", headers: [][2]string{{"X-Auth-Request-Email", "a@b.c"}}, want: accepted, wantEmail: "a@b.c"},
		{name: "email from JWT claim when no email header", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Access-Token", jwtJane}}, want: accepted, wantEmail: "jane@example.com"},
		{name: "email header wins without JWKS, opaque token ignored", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Email", "a@b.c"}, {"X-Auth-Request-Access-Token", "gho_opaque"}}, want: accepted, wantEmail: "a@b.c"},
		{name: "no identity headers: not recognised", peer: "127.0.0.1:1", headers: [][2]string{{"Authorization", "Bearer x"}}, want: ignored},
		{name: "loopback (port-forward) with email", peer: "127.0.0.1:5555", headers: [][2]string{{"X-Auth-Request-Email", "admin@example.com"}}, want: rejected, errHas: "not a trusted proxy"},
		{name: "loopback with valid-looking JWT", peer: "127.0.0.1:5555", headers: [][2]string{{"X-Auth-Request-Access-Token", jwtJane}}, want: rejected, errHas: "not a trusted proxy"},
		{name: "IPv6 loopback with user only", peer: "[::1]:5555", headers: [][2]string{{"X-Auth-Request-User", "root"}}, want: rejected, errHas: "not a trusted proxy"},
		{name: "untrusted network with email and JWT", peer: "192.168.1.10:5555", headers: [][2]string{{"X-Auth-Request-Email", "jane@example.com"}, {"X-Auth-Request-Access-Token", jwtJane}}, want: rejected, errHas: "192.168.1.10"},
		{name: "empty header value still counts", peer: "127.0.0.1:1", headers: [][2]string{{"X-Auth-Request-Email", ""}}, want: rejected},
		{name: "unparsable peer", peer: "pipe", headers: [][2]string{{"X-Auth-Request-Email", "a@b.c"}}, want: rejected},
		{name: "duplicate email header", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Email", "a@b.c"}, {"X-Auth-Request-Email", "admin@b.c"}}, want: rejected, errHas: "exactly once"},
		{name: "no email anywhere", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-User", "jane"}}, want: rejected, errHas: "without an email"},
		{name: "email with display name", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Email", "Jane <jane@example.com>"}}, want: rejected, errHas: "plain email"},
		{name: "not an email", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Email", "jane"}}, want: rejected},
		{name: "garbage JWT", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Access-Token", "not.a.jwt"}}, want: rejected, errHas: "JWT"},
		{name: "JWT without the claim", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Access-Token", fakeJWT(t, jwt.MapClaims{"sub": "x"})}}, want: rejected, errHas: "without an email"},
		{name: "JWT claim not a string", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Access-Token", fakeJWT(t, jwt.MapClaims{"email": 42})}}, want: rejected, errHas: "not a string"},
		{name: "JWT email not verified", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Access-Token", fakeJWT(t, jwt.MapClaims{"email": "a@b.c", "email_verified": false})}}, want: rejected, errHas: "not verified"},
		{name: "control character in user", peer: "10.1.2.3:1", headers: [][2]string{{"X-Auth-Request-Email", "a@b.c"}, {"X-Auth-Request-User", "a\x00b"}}, want: rejected},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/sessions", nil)
			r.RemoteAddr = tc.peer
			for _, kv := range tc.headers {
				r.Header.Add(kv[0], kv[1])
			}
			id, ok, err := h.Authenticate(r)
			switch tc.want {
			case accepted:
				if err != nil || !ok {
					t.Fatalf("want accepted, got ok=%v err=%v", ok, err)
				}
				if id.Email != tc.wantEmail || id.Username != tc.wantEmail || id.Source != SourceHeader {
					t.Errorf("identity = %+v, want email/username %q, source header", id, tc.wantEmail)
				}
				if !slices.Equal(id.Groups, []string{"cake-agents:users", "system:authenticated"}) {
					t.Errorf("groups = %v", id.Groups)
				}
			case rejected:
				if ok || id != nil || !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("want rejection wrapping ErrUnauthenticated, got id=%v ok=%v err=%v", id, ok, err)
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q does not mention %q", err, tc.errHas)
				}
			case ignored:
				if ok || id != nil || err != nil {
					t.Fatalf("want not recognised, got id=%v ok=%v err=%v", id, ok, err)
				}
			}
		})
	}
}

func TestNewHeaderAuthenticatorConfig(t *testing.T) {
	for name, mutate := range map[string]func(*HeaderConfig){
		"bad CIDR":                func(c *HeaderConfig) { c.TrustedProxyCIDRs = []string{"10.0.0.1"} },
		"no email nor JWT header": func(c *HeaderConfig) { c.EmailHeader, c.JWTHeader = "", "" },
		"JWKS without JWT header": func(c *HeaderConfig) { c.JWTHeader, c.JWKS = "", "/jwks.json" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := headerConfig()
			mutate(&cfg)
			if _, err := NewHeaderAuthenticator(cfg); err == nil {
				t.Fatal("want a configuration error")
			}
		})
	}
}

// testIssuer signs JWTs the way an identity provider would and publishes its JWKS.
type testIssuer struct {
	key *rsa.PrivateKey
	kid string
}

func newIssuer(t testing.TB, kid string) *testIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{key: key, kid: kid}
}

func (i *testIssuer) jwk() map[string]string {
	return map[string]string{
		"kty": "RSA", "kid": i.kid, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(i.key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(i.key.E)).Bytes()),
	}
}

func jwksJSON(t testing.TB, issuers ...*testIssuer) []byte {
	t.Helper()
	var keys []map[string]string
	for _, i := range issuers {
		keys = append(keys, i.jwk())
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (i *testIssuer) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = i.kid
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHeaderAuthenticatorJWKSFile(t *testing.T) {
	idp := newIssuer(t, "k1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksJSON(t, idp), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := headerConfig()
	cfg.JWKS = path
	h, err := NewHeaderAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	stranger := newIssuer(t, "k1") // same kid, different key
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	esTok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"email": "a@b.c", "exp": exp})
	esTok.Header["kid"] = "k1"
	esSigned, err := esTok.SignedString(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"email": "a@b.c", "exp": exp}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		email   string
		token   string
		wantErr string
	}{
		{name: "valid token", token: idp.sign(t, jwt.MapClaims{"email": "jane@example.com", "exp": exp}), wantErr: ""},
		{name: "valid token, matching email header", email: "Jane@example.com", token: idp.sign(t, jwt.MapClaims{"email": "jane@example.com", "exp": exp})},
		{name: "email header disagrees with verified claim", email: "admin@example.com", token: idp.sign(t, jwt.MapClaims{"email": "jane@example.com", "exp": exp}), wantErr: "does not match"},
		{name: "verified token without email claim uses header", email: "jane@example.com", token: idp.sign(t, jwt.MapClaims{"sub": "1", "exp": exp})},
		{name: "no token", email: "jane@example.com", wantErr: "no JWT"},
		{name: "signed by another key", token: stranger.sign(t, jwt.MapClaims{"email": "jane@example.com", "exp": exp}), wantErr: "verification"},
		{name: "expired", token: idp.sign(t, jwt.MapClaims{"email": "jane@example.com", "exp": time.Now().Add(-time.Hour).Unix()}), wantErr: "expired"},
		{name: "no exp", token: idp.sign(t, jwt.MapClaims{"email": "jane@example.com"}), wantErr: "exp"},
		{name: "alg none", token: noneTok, wantErr: "verification"},
		{name: "HMAC with a forged key", token: fakeJWT(t, jwt.MapClaims{"email": "a@b.c", "exp": exp}), wantErr: "verification"},
		{name: "ES256 by unknown key", token: esSigned, wantErr: "verification"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = "10.0.0.7:1234"
			if tc.email != "" {
				r.Header.Set("X-Auth-Request-Email", tc.email)
			}
			if tc.token != "" {
				r.Header.Set("X-Auth-Request-Access-Token", tc.token)
			}
			id, ok, err := h.Authenticate(r)
			if tc.wantErr == "" {
				if err != nil || !ok || id.Email != "jane@example.com" {
					t.Fatalf("want jane@example.com, got id=%+v ok=%v err=%v", id, ok, err)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want ErrUnauthenticated mentioning %q, got %v", tc.wantErr, err)
			}
		})
	}
}

func TestJWKSURLRotation(t *testing.T) {
	old, rotated := newIssuer(t, "old"), newIssuer(t, "new")
	var served atomic.Pointer[[]byte]
	first := jwksJSON(t, old)
	served.Store(&first)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_, _ = w.Write(*served.Load())
	}))
	defer srv.Close()

	ks := newKeySet(srv.URL, srv.Client())
	now := time.Now()
	ks.now = func() time.Time { return now }
	exp := now.Add(time.Hour).Unix()
	ctx := context.Background()
	if _, err := ks.verify(ctx, old.sign(t, jwt.MapClaims{"exp": exp})); err != nil {
		t.Fatalf("token of the published key: %v", err)
	}
	// The provider rotates; a token with the new kid arrives within the refresh
	// floor: no second fetch yet, so it fails.
	second := jwksJSON(t, rotated)
	served.Store(&second)
	if _, err := ks.verify(ctx, rotated.sign(t, jwt.MapClaims{"exp": exp})); err == nil {
		t.Fatal("new key accepted before a refresh was allowed")
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1 (refresh is rate-limited)", n)
	}
	now = now.Add(jwksMinRefresh)
	if _, err := ks.verify(ctx, rotated.sign(t, jwt.MapClaims{"exp": exp})); err != nil {
		t.Fatalf("token of the rotated key after refresh: %v", err)
	}
	if _, err := ks.verify(ctx, old.sign(t, jwt.MapClaims{"exp": exp})); err == nil {
		t.Fatal("retired key still accepted")
	}
}

func TestParseJWKS(t *testing.T) {
	idp := newIssuer(t, "r")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecdhPub, err := ec.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	raw := ecdhPub.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	ecJWK := map[string]string{"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}
	offCurve := map[string]string{"kty": "EC", "kid": "bad", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[1:33])}
	weak := map[string]string{"kty": "RSA", "kid": "weak", "n": b64(small.N.Bytes()), "e": "AQAB"}
	enc := idp.jwk()
	enc["use"], enc["kid"] = "enc", "enc"
	doc, _ := json.Marshal(map[string]any{"keys": []any{idp.jwk(), ecJWK, offCurve, weak, enc, map[string]string{"kty": "oct", "k": "c2VjcmV0"}}})
	keys, err := parseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range keys {
		kids = append(kids, k.kid)
	}
	if !slices.Equal(kids, []string{"r", "e"}) {
		t.Fatalf("kept keys %v, want [r e] (weak RSA, off-curve EC, encryption and symmetric keys dropped)", kids)
	}
	if _, err := parseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Error("empty JWKS accepted")
	}
	if _, err := parseJWKS([]byte(`not json`)); err == nil {
		t.Error("invalid JSON accepted")
	}
}

// With a JWKS, issuer and audience are checked on real signed tokens, and the email
// header must agree with the verified email claim when the proxy sends both.
func TestHeaderAuthenticatorJWTIssuerAudienceEmail(t *testing.T) {
	idp := newIssuer(t, "k1")
	doc := jwksJSON(t, idp)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(doc) }))
	defer srv.Close()
	cfg := headerConfig()
	cfg.JWKS = srv.URL
	cfg.HTTPClient = srv.Client()
	cfg.Issuer = "https://accounts.example.com"
	cfg.Audiences = []string{"cake-agents", " "}
	h, err := NewHeaderAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	claims := func(mutate func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "https://accounts.example.com", "aud": "cake-agents", "email": "jane@example.com", "exp": exp}
		if mutate != nil {
			mutate(c)
		}
		return c
	}
	cases := []struct {
		name    string
		email   string
		claims  jwt.MapClaims
		wantErr string
	}{
		{name: "issuer and audience right", claims: claims(nil)},
		{name: "audience among several", claims: claims(func(c jwt.MapClaims) { c["aud"] = []string{"grafana", "cake-agents"} })},
		{name: "email header agrees with the claim", email: "Jane@Example.com", claims: claims(nil)},
		{name: "email header without an email claim", email: "jane@example.com", claims: claims(func(c jwt.MapClaims) { delete(c, "email") })},
		{name: "email header disagrees with the claim", email: "admin@example.com", claims: claims(nil), wantErr: `email header "admin@example.com" does not match JWT claim "email"="jane@example.com"`},
		{name: "another issuer", claims: claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com" }),
			wantErr: `issuer (iss) "https://evil.example.com" is not the configured "https://accounts.example.com"`},
		{name: "no issuer", claims: claims(func(c jwt.MapClaims) { delete(c, "iss") }), wantErr: "iss claim is required"},
		{name: "token for another application", claims: claims(func(c jwt.MapClaims) { c["aud"] = "grafana" }),
			wantErr: `audience (aud) "grafana" names none of the configured ["cake-agents"]`},
		{name: "no audience", claims: claims(func(c jwt.MapClaims) { delete(c, "aud") }), wantErr: "aud claim is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/whoami", nil)
			r.RemoteAddr = "10.0.0.7:1234"
			r.Header.Set("X-Auth-Request-Access-Token", idp.sign(t, tc.claims))
			if tc.email != "" {
				r.Header.Set("X-Auth-Request-Email", tc.email)
			}
			id, ok, err := h.Authenticate(r)
			if tc.wantErr == "" {
				if err != nil || !ok || id.Email != "jane@example.com" {
					t.Fatalf("want jane@example.com, got id=%+v ok=%v err=%v", id, ok, err)
				}
				return
			}
			if id != nil || ok || !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want ErrUnauthenticated mentioning %q, got id=%v ok=%v err=%v", tc.wantErr, id, ok, err)
			}
		})
	}

	info := h.Info()
	want := apiv1.HeaderAuthInfo{State: apiv1.HeaderAuthEnabled, EmailHeader: "X-Auth-Request-Email", UserHeader: "X-Auth-Request-User",
		JWTHeader: "X-Auth-Request-Access-Token", TrustedProxyCIDRs: []string{"10.0.0.0/8", "fd00::/8"}, JWTVerified: true,
		JWTIssuer: "https://accounts.example.com", JWTAudiences: []string{"cake-agents"}}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("Info() = %+v\nwant     %+v", info, want)
	}

	// Issuer or audience without a JWKS would check claims nobody signed.
	for _, mutate := range []func(*HeaderConfig){
		func(c *HeaderConfig) { c.Issuer = "https://accounts.example.com" },
		func(c *HeaderConfig) { c.Audiences = []string{"cake-agents"} },
	} {
		cfg := headerConfig()
		mutate(&cfg)
		if _, err := NewHeaderAuthenticator(cfg); err == nil || !strings.Contains(err.Error(), "no JWKS") {
			t.Errorf("issuer/audience without a JWKS: err = %v", err)
		}
	}
}
