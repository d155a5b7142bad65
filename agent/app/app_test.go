package app

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func parseArgs(t *testing.T, env map[string]string, args ...string) (*Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	load := BindFlags(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return load()
}

func TestConfigFlagsWinOverEnvironment(t *testing.T) {
	cfg, err := parseArgs(t, map[string]string{"AGENT_NAMESPACE": "from-env", "AGENT_SESSION_IDLE_TIMEOUT": "2h", "AGENT_HEADER_AUTH_ENABLED": "true"},
		"--namespace", "from-flag", "--trusted-proxy-cidrs", "10.0.0.0/8, 192.168.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Namespace != "from-flag" || cfg.SessionNamespace != "from-flag" || cfg.SessionIdleTimeout.Hours() != 2 || !cfg.HeaderAuthEnabled {
		t.Fatalf("config: %+v", cfg)
	}
	if len(cfg.TrustedProxyCIDRs) != 2 {
		t.Fatalf("cidrs: %v", cfg.TrustedProxyCIDRs)
	}
}

// The chart's existingSecretEnv may point DATABASE_URL at a Secret without a URL (the key is
// optional then): PG* variables alone must select Postgres, not the SQLite default.
func TestDatabaseFromPGVariablesWhenTheURLIsUnset(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "sqlite:///data/agents.db"},
		{map[string]string{"PGHOST": "db.example.com", "PGUSER": "agents"}, ""},
		{map[string]string{"PGHOST": "db.example.com", "DATABASE_URL": "postgres://other/agents"}, "postgres://other/agents"},
	} {
		cfg, err := parseArgs(t, tc.env)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.DatabaseURL != tc.want {
			t.Errorf("env %v: database URL %q, want %q", tc.env, cfg.DatabaseURL, tc.want)
		}
	}
}

func TestConfigErrorsNameTheFix(t *testing.T) {
	_, err := parseArgs(t, map[string]string{"AGENT_SESSION_TTL": "forever"},
		"--trusted-proxy-cidrs", "10.0.0.1", "--log-format", "xml", "--image-pull-policy", "Sometimes",
		"--session-node-selector", "oops", "--tls-cert-file", "x.pem")
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"--session-ttl", "--trusted-proxy-cidrs", "--log-format", "--image-pull-policy", "--session-node-selector", "--tls-key-file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

// Every personal access token expires: the lifetimes default to 30 and 90 days, and
// neither may be turned off.
func TestTokenLifetimeConfig(t *testing.T) {
	cfg, err := parseArgs(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenDefaultTTL != 30*24*time.Hour || cfg.TokenMaxTTL != 90*24*time.Hour {
		t.Errorf("defaults: %s, max %s; want 720h, 2160h", cfg.TokenDefaultTTL, cfg.TokenMaxTTL)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env: map[string]string{"AGENT_TOKEN_MAX_TTL": "0"}, want: "must be at least 1m: every personal access token expires"},
		{args: []string{"--token-default-ttl", "0"}, want: "must be at least 1m"},
		{args: []string{"--token-default-ttl", "2400h"}, want: "--token-default-ttl=2400h0m0s is longer than --token-max-ttl=2160h0m0s"},
		{args: []string{"--header-auth-jwt-audience", "cake-agents"}, want: "--header-auth-jwt-issuer and --header-auth-jwt-audience need --jwks-url"},
	} {
		if _, err := parseArgs(t, tc.env, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err = %v, want %q", tc.env, tc.args, err, tc.want)
		}
	}
	cfg, err = parseArgs(t, map[string]string{"AGENT_TOKEN_MAX_TTL": "168h"}, "--token-default-ttl", "24h",
		"--jwks-url", "https://idp.example.com/jwks", "--header-auth-jwt-issuer", "https://idp.example.com", "--header-auth-jwt-audience", "a, b")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenDefaultTTL != 24*time.Hour || cfg.TokenMaxTTL != 168*time.Hour || cfg.JWTIssuer != "https://idp.example.com" || !slices.Equal(cfg.JWTAudiences, []string{"a", "b"}) {
		t.Errorf("config: %+v", cfg)
	}
}

func TestEveryOptionHasAnEnvVar(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range Options() {
		if o.Env == "" || o.Flag == "" || o.Usage == "" || seen[o.Env] {
			t.Errorf("option %+v: flag, env and usage must be set and env unique", o)
		}
		seen[o.Env] = true
	}
}

// The serving CA is shared through a Secret: the first replica fills the empty one the
// chart created, later ones reuse it, so one published CA verifies every replica.
func TestSharedServingCA(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "ns"}})
	a, err := sharedServingCA(ctx, kube, "ns", "ca")
	if err != nil {
		t.Fatal(err)
	}
	b, err := sharedServingCA(ctx, kube, "ns", "ca")
	if err != nil {
		t.Fatal(err)
	}
	if string(a.pem) != string(b.pem) {
		t.Fatal("a second replica made its own CA")
	}
	cert, err := generateServingCert("cake-agents", "ns", b)
	if err != nil {
		t.Fatal(err)
	}
	if string(cert.caPEM) != string(a.pem) {
		t.Fatal("serving cert not issued by the shared CA")
	}
	// Without the Secret at all, the CA is created.
	if _, err := sharedServingCA(ctx, fake.NewClientset(), "ns", "ca"); err != nil {
		t.Fatal(err)
	}
}

func TestAuthSecretKeptBesideSQLite(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{DatabaseURL: "sqlite://" + filepath.Join(dir, "agents.db")}
	a, err := authSecret(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	b, err := authSecret(cfg, hclog.NewNullLogger())
	if err != nil || string(a) != string(b) {
		t.Fatalf("secret not stable across restarts: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "agents.db.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, err := authSecret(&Config{DatabaseURL: "postgres://db/agents"}, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "AGENT_AUTH_SECRET") {
		t.Fatalf("postgres without a secret: %v", err)
	}
}

// --debug-addr serves pprof's index and profiles, and nothing else.
func TestDebugServerServesProfiles(t *testing.T) {
	errc := make(chan error, 1)
	s, err := serveDebug("127.0.0.1:0", errc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr
	for path, want := range map[string]int{
		"/debug/pprof/":                  http.StatusOK,
		"/debug/pprof/goroutine?debug=1": http.StatusOK,
		"/debug/pprof/heap":              http.StatusOK,
		"/api/v1/sessions":               http.StatusNotFound,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}
