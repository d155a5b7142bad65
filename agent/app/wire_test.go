package app

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestWiredHeaderCSRF: callers signed in by the proxy's identity headers are browsers,
// so the wired agent applies the web UI's CSRF rules to their state-changing requests:
// the API refuses a cross-site one with its JSON 403, a page with an HTML 403. Bearer
// tokens are never sent by a browser on its own and are not checked.
func TestWiredHeaderCSRF(t *testing.T) {
	cfg, err := parseArgs(t, map[string]string{
		"AGENT_HEADER_AUTH_ENABLED":      "true",
		"AGENT_HEADER_AUTH_EMAIL_HEADER": "X-Auth-Request-Email",
		// httptest.NewRequest's peer.
		"AGENT_TRUSTED_PROXY_CIDRS": "192.0.2.0/24",
	}, "--namespace", "agents", "--database-url", "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing here reaches the Kubernetes API: the request is refused before.
	deps := wireForTest(t, cfg)
	serve := func(method, path string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://agent.example"+path, strings.NewReader("{}"))
		r.Header.Set("X-Auth-Request-Email", "jane@example.com")
		r.Header.Set("Origin", "https://evil.example")
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		deps.handler.ServeHTTP(rec, r)
		return rec
	}

	rec := serve(http.MethodPost, "/api/v1/sessions", "Content-Type", "application/json")
	var e apiv1.Error
	if rec.Code != http.StatusForbidden || rec.Header().Get("Content-Type") != "application/json" ||
		json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Body.Code != apiv1.CodeForbidden ||
		!strings.HasPrefix(e.Body.Message, `cross-site request refused: cross-origin request from "https://evil.example" refused`) {
		t.Errorf("cross-site POST to the API: %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	// A page opened as a WebSocket from another site: the UI's HTML error page.
	rec = serve(http.MethodGet, "/", "Upgrade", "websocket", "Connection", "Upgrade")
	if rec.Code != http.StatusForbidden || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(rec.Body.String(), "cross-site request refused") {
		t.Errorf("cross-site page: %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	// The same page from the agent's own origin is served.
	rec = serve(http.MethodGet, "/", "Origin", "http://agent.example")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "jane@example.com") {
		t.Errorf("same-site page: %d %s", rec.Code, rec.Body)
	}
}

// TestWiredGitHubApp: the App's settings reach the session controller — its key read at
// start, its API derived from --github-url (GitHub Enterprise's /api/v3) unless set,
// its tokens for the host of --github-url — and a key file that is missing or not a
// key stops the agent at start, naming the flag.
func TestWiredGitHubApp(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "private-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseArgs(t, map[string]string{"AGENT_GITHUB_APP_ID": "42", "AGENT_GITHUB_APP_PRIVATE_KEY_FILE": keyFile,
		"AGENT_GITHUB_URL": "https://ghe.example.com", "AGENT_GITHUB_APP_INSTALLATION_ID": "7"})
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := sessionsConfig(cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	app, ok := scfg.GitHubApp.(*github.App)
	if !ok || app.ID != 42 || app.InstallationID != 7 || !app.Key.Equal(key) || app.APIURL != "https://ghe.example.com/api/v3" || scfg.GitHubHost != "ghe.example.com" {
		t.Fatalf("sessions config: app %+v host %q", scfg.GitHubApp, scfg.GitHubHost)
	}
	// Without an App, sessions get none.
	cfg, err = parseArgs(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if scfg, err := sessionsConfig(cfg, prometheus.NewRegistry()); err != nil || scfg.GitHubApp != nil {
		t.Fatalf("no App configured: %v %v", scfg.GitHubApp, err)
	}

	notKey := filepath.Join(dir, "token")
	if err := os.WriteFile(notKey, []byte("ghp_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{filepath.Join(dir, "missing.pem"): "no such file", notKey: "not a PEM private key"} {
		cfg, err := parseArgs(t, map[string]string{"AGENT_GITHUB_APP_ID": "42", "AGENT_GITHUB_APP_PRIVATE_KEY_FILE": file})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sessionsConfig(cfg, prometheus.NewRegistry()); err == nil || !strings.Contains(err.Error(), "--github-app-private-key-file") || !strings.Contains(err.Error(), want) {
			t.Errorf("key file %s: %v, want an error naming the flag and %q", file, err, want)
		}
	}
}

// wireForTest wires cfg on an in-memory store and a fake clientset, with an API server
// address nothing answers on.
func wireForTest(t *testing.T, cfg *Config) *components {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	deps, err := wire(context.Background(), cfg, &rest.Config{Host: "https://127.0.0.1:1"}, fake.NewClientset(), st, testKeyring(t), prometheus.NewRegistry(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return deps
}

func testKeyring(t *testing.T) *keyring.Keyring {
	t.Helper()
	kr, err := keyring.New([]byte("wire-test-auth-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestWiredSessionWeb: with a session domain, a session's host is the session's (its
// sign-in page, never the agent's API), and the agent's own host is unchanged.
func TestWiredSessionWeb(t *testing.T) {
	cfg, err := parseArgs(t, map[string]string{
		"AGENT_SESSION_WEB_DOMAIN":       "Agents.Example.",
		"AGENT_EXTERNAL_URL":             "https://agents.example",
		"AGENT_HEADER_AUTH_ENABLED":      "true",
		"AGENT_HEADER_AUTH_EMAIL_HEADER": "X-Auth-Request-Email",
		"AGENT_TRUSTED_PROXY_CIDRS":      "192.0.2.0/24",
	}, "--namespace", "agents", "--database-url", "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SessionWebDomain != "agents.example" {
		t.Errorf("domain %q", cfg.SessionWebDomain)
	}
	deps := wireForTest(t, cfg)
	serve := func(host, path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://"+host+path, nil)
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		rec := httptest.NewRecorder()
		deps.handler.ServeHTTP(rec, r)
		return rec
	}
	rec := serve("abc12345.agents.example", "/api/v1/version")
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "Open in OpenCode") || !strings.Contains(rec.Body.String(), "https://agents.example/sessions/abc12345") {
		t.Errorf("a session host without a sign-in: %d %s", rec.Code, rec.Body)
	}
	if rec := serve("agents.example", "/healthz"); rec.Code != http.StatusOK {
		t.Errorf("the agent's host: %d %s", rec.Code, rec.Body)
	}
	// Behind the proxy, OpenCode's own UI changes things with the session host's Origin
	// and without the API's CSRF header; another origin is refused.
	post := func(origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "http://abc12345.agents.example/session", strings.NewReader("{}"))
		r.Header.Set("X-Auth-Request-Email", "jane@example.com")
		r.Header.Set("Origin", origin)
		rec := httptest.NewRecorder()
		deps.handler.ServeHTTP(rec, r)
		return rec
	}
	if rec := post("https://abc12345.agents.example"); strings.Contains(rec.Body.String(), "cross-site") {
		t.Errorf("the session's own UI behind the proxy: %d %s", rec.Code, rec.Body)
	}
	if rec := post("https://evil.example"); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "cross-site") {
		t.Errorf("another site behind the proxy: %d %s", rec.Code, rec.Body)
	}
	for _, bad := range []map[string]string{
		{"AGENT_SESSION_WEB_DOMAIN": "*.agents.example", "AGENT_EXTERNAL_URL": "https://agents.example"},
		{"AGENT_SESSION_WEB_DOMAIN": "https://agents.example", "AGENT_EXTERNAL_URL": "https://agents.example"},
		{"AGENT_SESSION_WEB_DOMAIN": "agents.example"},
	} {
		if _, err := parseArgs(t, bad, "--namespace", "agents"); err == nil || !strings.Contains(err.Error(), "session-web-domain") {
			t.Errorf("%v: %v, want an error naming --session-web-domain", bad, err)
		}
	}
}
