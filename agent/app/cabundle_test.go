package app

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/sessions"
)

// TestSessionCABundleConfig: the CA bundle settings come from the chart's env vars (or
// flags, which win), reach the sessions controller, and bad values fail at start with
// the flag named.
func TestSessionCABundleConfig(t *testing.T) {
	cfg, err := parseArgs(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SessionCAConfigMap != "" || cfg.SessionCAKey != "ca-certificates.crt" {
		t.Errorf("defaults: configmap %q key %q, want none and ca-certificates.crt", cfg.SessionCAConfigMap, cfg.SessionCAKey)
	}

	cfg, err = parseArgs(t, map[string]string{"AGENT_SESSION_CA_CONFIGMAP": "corp-roots", "AGENT_SESSION_CA_KEY": "from-env.pem"},
		"--session-ca-key", "bundle.pem", "--session-namespace", "sessions")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SessionCAConfigMap != "corp-roots" || cfg.SessionCAKey != "bundle.pem" {
		t.Fatalf("configmap %q key %q, want corp-roots and bundle.pem (the flag wins)", cfg.SessionCAConfigMap, cfg.SessionCAKey)
	}
	scfg, err := sessionsConfig(cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if scfg.CABundleConfigMap != "corp-roots" || scfg.CABundleKey != "bundle.pem" || scfg.Namespace != "sessions" {
		t.Errorf("sessions config: %q %q in %q", scfg.CABundleConfigMap, scfg.CABundleKey, scfg.Namespace)
	}

	if _, err := parseArgs(t, nil, "--session-ca-configmap", "corp-roots", "--session-ca-key", ""); err == nil ||
		!strings.Contains(err.Error(), "--session-ca-key") {
		t.Errorf("an empty key with a ConfigMap: %v, want an error naming --session-ca-key", err)
	}

	for flag, args := range map[string][]string{
		"--session-ca-configmap": {"--session-ca-configmap", "Corp_Roots"},
		"--session-ca-key":       {"--session-ca-configmap", "corp-roots", "--session-ca-key", "a/b.pem"},
	} {
		cfg, err := parseArgs(t, nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		scfg, err := sessionsConfig(cfg, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sessions.New(scfg, fake.NewClientset(), nil, nil); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: %v, want an error naming %s", args, err, flag)
		}
	}
}
