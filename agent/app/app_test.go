package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
