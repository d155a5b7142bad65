package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzHeaderIdentity feeds arbitrary peers and header values through the header
// authenticator. Besides not panicking, an accepted request must come from a trusted
// peer and carry a normalised email; a rejection must wrap ErrUnauthenticated.
func FuzzHeaderIdentity(f *testing.F) {
	f.Add("10.0.0.1:1", "jane@example.com", "Jane", "")
	f.Add("127.0.0.1:1", "jane@example.com", "", "")
	f.Add("10.0.0.1:1", "", "", "eyJhbGciOiJIUzI1NiJ9.eyJlbWFpbCI6ImFAYi5jIn0.sig")
	f.Add("[::ffff:10.0.0.1]:80", "A@B.C", "x", "a.b.c")
	f.Add("10.0.0.1", "\"a b\"@c.d", "\x00", "..")
	f.Add("[fe80::1%eth0]:1", "<a@b.c>", "", "eyJ.eyJ.")
	h, err := NewHeaderAuthenticator(HeaderConfig{
		EmailHeader:       "X-Email",
		UserHeader:        "X-User",
		JWTHeader:         "X-Jwt",
		EmailClaim:        "email",
		TrustedProxyCIDRs: []string{"10.0.0.0/8"},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, peer, email, user, token string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = peer
		for name, v := range map[string]string{"X-Email": email, "X-User": user, "X-Jwt": token} {
			if v != "" {
				r.Header.Set(name, v)
			}
		}
		id, ok, err := h.Authenticate(r)
		switch {
		case err != nil:
			if !errors.Is(err, ErrUnauthenticated) || ok || id != nil {
				t.Fatalf("rejection must wrap ErrUnauthenticated alone: id=%v ok=%v err=%v", id, ok, err)
			}
		case ok:
			a, parsed := peerAddr(peer)
			if !parsed || !h.isTrusted(a) {
				t.Fatalf("accepted identity from untrusted peer %q", peer)
			}
			if id.Email == "" || id.Email != strings.ToLower(id.Email) || id.Username != id.Email || id.Source != SourceHeader {
				t.Fatalf("accepted malformed identity %+v", id)
			}
		default:
			if email != "" || user != "" || token != "" {
				t.Fatalf("identity headers ignored: %q %q %q", email, user, token)
			}
		}
		// The unverified JWT decoder on its own, as the email-less path uses it.
		_, _ = decodeUnverified(token)
	})
}

// FuzzParseJWKS checks the JWK decoder never panics and only returns usable keys.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","e":"AAAAAAAA","n":""}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseJWKS(data)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if k.key == nil {
				t.Fatal("nil key returned")
			}
		}
	})
}
