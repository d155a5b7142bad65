package auth

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
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
	if h.State() != apiv1.HeaderAuthDisabled || h.Offered() {
		t.Errorf("state %q offered %v, want Disabled and not offered", h.State(), h.Offered())
	}
}

// `--header-auth=false` with every header name empty used to stop the agent at start
// ("needs an email header or a JWT header name"), although nothing is believed then.
func TestHeaderAuthDisabledNeedsNoHeaderNames(t *testing.T) {
	h, err := NewHeaderAuthenticator(HeaderConfig{Disabled: true})
	if err != nil {
		t.Fatalf("disabled header auth without header names: %v", err)
	}
	r := httptest.NewRequest("GET", "/api/v1/whoami", nil)
	r.Header.Set("X-Auth-Request-Email", "admin@example.com")
	if id, ok, err := h.Authenticate(r); id != nil || ok || err != nil {
		t.Fatalf("got %v %v %v, want the request left to the other authenticators", id, ok, err)
	}
	// Enabled, the names are still required: without them nothing could be read.
	if _, err := NewHeaderAuthenticator(HeaderConfig{TrustedProxyCIDRs: []string{"10.0.0.0/8"}}); err == nil ||
		!strings.Contains(err.Error(), "--header-auth-email-header") {
		t.Fatalf("enabled without header names: err = %v", err)
	}
}

// The install guide's minimal values enable header auth without trusted proxy networks.
// That used to be a start-up error (a crash loop on a real cluster); now the agent
// starts with header auth inert: identity headers are refused from every peer, loopback
// and private networks alike, with a message naming the chart value, the flag and the
// environment variable, and requests without them go on to the other authenticators.
func TestHeaderAuthWithoutTrustedProxyIsInert(t *testing.T) {
	cfg := headerConfig()
	cfg.TrustedProxyCIDRs = nil
	cfg.JWKS = "/nonexistent/jwks.json" // never read: nothing is believed
	h, err := NewHeaderAuthenticator(cfg)
	if err != nil {
		t.Fatalf("header auth enabled without trusted CIDRs must start: %v", err)
	}
	if h.State() != apiv1.HeaderAuthNoTrustedProxy || h.Offered() {
		t.Errorf("state %q offered %v, want NoTrustedProxy and not offered", h.State(), h.Offered())
	}
	for _, peer := range []string{"127.0.0.1:5555", "10.1.2.3:5555", "[::1]:5555", "192.168.1.1:80"} {
		for _, header := range []string{"X-Auth-Request-Email", "X-Auth-Request-User", "X-Auth-Request-Access-Token"} {
			r := httptest.NewRequest("GET", "/api/v1/whoami", nil)
			r.RemoteAddr = peer
			r.Header.Set(header, "admin@example.com")
			id, ok, err := h.Authenticate(r)
			if id != nil || ok || !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("peer %s, header %s: got %v %v %v, want a rejection", peer, header, id, ok, err)
			}
			for _, want := range []string{"headerAuth.trustedProxyCIDRs", "--trusted-proxy-cidrs", "AGENT_TRUSTED_PROXY_CIDRS", strings.ToLower(header)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
		}
	}
	r := httptest.NewRequest("GET", "/api/v1/whoami", nil)
	if id, ok, err := h.Authenticate(r); id != nil || ok || err != nil {
		t.Fatalf("no headers: got %v %v %v", id, ok, err)
	}

	full, err := NewHeaderAuthenticator(headerConfig())
	if err != nil {
		t.Fatal(err)
	}
	if full.State() != apiv1.HeaderAuthEnabled || !full.Offered() {
		t.Errorf("with trusted CIDRs: state %q offered %v", full.State(), full.Offered())
	}
}

// Behind an Istio sidecar every request reaches the agent over TCP from the sidecar's
// inbound passthrough address 127.0.0.6, which the chart trusts with istio.enabled;
// port-forwarded connections arrive from 127.0.0.1 (or ::1) and must stay refused. Real
// connections from each source address, so RemoteAddr is what the kernel reports.
func TestIstioSidecarAddressTrustedLoopbackNot(t *testing.T) {
	h, err := NewHeaderAuthenticator(HeaderConfig{
		EmailHeader: "X-Auth-Request-Email", JWTHeader: "X-Auth-Request-Access-Token",
		TrustedProxyCIDRs: []string{"127.0.0.6/32", "::6/128"},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok, err := h.Authenticate(r)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case !ok:
			http.Error(w, "no identity", http.StatusTeapot)
		default:
			_, _ = io.WriteString(w, id.Email)
		}
	}))
	defer srv.Close()
	get := func(t *testing.T, network, local, target string) (int, string) {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, target)
		}}}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "http://agent/api/v1/whoami", nil)
		req.Header.Set("X-Auth-Request-Email", "jane@example.com")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request from %s: %v", local, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	addr := srv.Listener.Addr().String()
	if code, body := get(t, "tcp4", "127.0.0.6", addr); code != http.StatusOK || body != "jane@example.com" {
		t.Errorf("from the sidecar's 127.0.0.6: %d %q, want 200 jane@example.com", code, body)
	}
	if code, body := get(t, "tcp4", "127.0.0.1", addr); code != http.StatusUnauthorized || !strings.Contains(body, "from 127.0.0.1, which is not a trusted proxy") {
		t.Errorf("from loopback 127.0.0.1 (port-forward): %d %q, want 401 naming 127.0.0.1", code, body)
	}
	// The rest of 127.0.0.0/8 is no sidecar either.
	if code, _ := get(t, "tcp4", "127.0.0.7", addr); code != http.StatusUnauthorized {
		t.Errorf("from 127.0.0.7: %d, want 401", code)
	}
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback here, ::1 not checked: %v", err)
		return
	}
	srv6 := httptest.NewUnstartedServer(srv.Config.Handler)
	srv6.Listener = l6
	srv6.Start()
	defer srv6.Close()
	if code, _ := get(t, "tcp6", "::1", l6.Addr().String()); code != http.StatusUnauthorized {
		t.Errorf("from loopback ::1: %d, want 401", code)
	}
}
