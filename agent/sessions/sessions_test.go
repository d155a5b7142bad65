package sessions

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

func testConfig(ns string) Config {
	return Config{
		Namespace:          ns,
		Release:            "rel",
		DataPlaneImage:     "example.invalid/data-plane:1",
		DataPlaneInitImage: "example.invalid/data-plane-init:1",
		ImagePullPolicy:    "IfNotPresent",
		CPURequest:         "100m", CPULimit: "1", MemoryRequest: "128Mi", MemoryLimit: "1Gi",
		StorageSize:    "1Gi",
		LiteLLMBaseURL: "http://litellm:4000/v1",
		DefaultModel:   "m",
		Registerer:     prometheus.NewRegistry(),
	}
}

// newStore opens a real (in-memory SQLite) store with one user and returns its id.
func newStore(t *testing.T) (store.Store, string) {
	t.Helper()
	kr, err := keyring.New([]byte("sessions-test-auth-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return st, u.ID
}

func newTestController(t *testing.T, cfg Config, kube kubernetes.Interface, st store.Store) *Controller {
	t.Helper()
	c, err := New(cfg, kube, st, hclog.New(&hclog.LoggerOptions{Name: "sessions", Level: hclog.Debug, Output: testWriter{t}}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 8 || id[0] < 'a' || id[0] > 'z' || !ValidID(id) {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "1abc", "Abc", "a_b", "a-", strings.Repeat("a", 41)} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
	if PodName("abc") != "cake-session-abc" || SecretName("abc") != "cake-session-abc" || PVCName("abc") != "cake-session-abc-workspace" {
		t.Error("object names changed")
	}
}
