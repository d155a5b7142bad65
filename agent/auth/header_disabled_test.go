package auth

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

// With header auth off, identity headers are refused from every peer, trusted or not,
// and a request without them is left to the other authenticators.
func TestHeaderAuthDisabledRefusesIdentityHeaders(t *testing.T) {
	h, err := NewHeaderAuthenticator(HeaderConfig{
		EmailHeader: "X-Auth-Request-Email", JWTHeader: "X-Auth-Request-Access-Token",
		TrustedProxyCIDRs: []string{"10.0.0.0/8"}, Disabled: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []string{"127.0.0.1:5555", "10.1.2.3:5555"} {
		r := httptest.NewRequest("GET", "/api/v1/whoami", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Auth-Request-Email", "admin@example.com")
		id, ok, err := h.Authenticate(r)
		if id != nil || ok || !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "disabled") {
			t.Fatalf("peer %s: got %v %v %v", peer, id, ok, err)
		}
	}
	r := httptest.NewRequest("GET", "/api/v1/whoami", nil)
	if id, ok, err := h.Authenticate(r); id != nil || ok || err != nil {
		t.Fatalf("no headers: got %v %v %v", id, ok, err)
	}
	// Disabled needs no trusted CIDR.
	if _, err := NewHeaderAuthenticator(HeaderConfig{EmailHeader: "X-E", Disabled: true}); err != nil {
		t.Fatal(err)
	}
}
