package sessions

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
)

const (
	keyCanary    = "sk-CANARY-sessions-provider-key"
	headerCanary = "hdr-CANARY-sessions-header"
)

// storeWithProviders opens a store with a keyring and the given providers JSON.
func storeWithProviders(t *testing.T, body string) (store.Store, string) {
	t.Helper()
	kr, err := keyring.New([]byte("sessions test auth secret, 32+ bytes"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	putProviders(t, st, body)
	return st, u.ID
}

func putProviders(t *testing.T, st store.Store, body string) {
	t.Helper()
	set, err := providers.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ReplaceProviders(context.Background(), set.ToStore()); err != nil {
		t.Fatal(err)
	}
}

var sessionProvidersJSON = `{"acme": {"npm": "@ai-sdk/openai-compatible", "name": "Acme",
  "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "` + keyCanary + `", "headers": {"X-Team": "` + headerCanary + `"}},
  "models": {"big": {"name": "Acme Big", "limit": {"context": 1000, "output": 100}}}}}`

// The stored providers reach the pod as a config referencing files of the Secret; the
// keys are in the Secret only.
func TestPodUsesStoredProviders(t *testing.T) {
	st, owner := storeWithProviders(t, sessionProvidersJSON)
	c := newTestController(t, testConfig("sessions"), fake.NewClientset(), st)
	s := &store.Session{ID: "abc12345", OwnerID: owner, Model: "acme/big"}
	sp, err := c.loadProviders(t.Context(), s.Model)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.buildPod(s, sp)
	if err != nil {
		t.Fatal(err)
	}
	podJSON, _ := json.Marshal(pod)
	if strings.Contains(string(podJSON), "CANARY") {
		t.Fatalf("the pod spec holds a provider secret: %s", podJSON)
	}
	secret := c.buildSecret(s, "pw", sp, "")
	if string(secret.Data["provider.acme.apiKey"]) != keyCanary || string(secret.Data["provider.acme.header.X-Team"]) != headerCanary {
		t.Errorf("secret data keys %v", slices.Collect(maps.Keys(secret.Data)))
	}

	// The init container writes a config from its arguments alone: parse them as it does.
	var o sessioninit.Options
	fs := pflag.NewFlagSet("session-init", pflag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(pod.Spec.InitContainers[0].Args); err != nil {
		t.Fatal(err)
	}
	cfg, err := sessioninit.BuildConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"apiKey": "{file:/etc/cake-agents/providers/provider.acme.apiKey}"`,
		`"X-Team": "{file:/etc/cake-agents/providers/provider.acme.header.X-Team}"`,
		`"model": "acme/big"`,
		// The gateway configured beside them stays a provider, keyed by env as before.
		`"apiKey": "{env:LITELLM_API_KEY}"`,
	} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
	if strings.Contains(string(cfg), "CANARY") {
		t.Errorf("config holds a secret:\n%s", cfg)
	}

	// Only OpenCode mounts the keys, read-only, and only the provider keys.
	main, init := pod.Spec.Containers[0], pod.Spec.InitContainers[0]
	if !slices.ContainsFunc(main.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "provider-keys" && m.MountPath == ProviderKeysDir && m.ReadOnly
	}) || slices.ContainsFunc(init.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "provider-keys" }) {
		t.Errorf("mounts: main %v, init %v", main.VolumeMounts, init.VolumeMounts)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == "provider-keys" {
			if v.Secret == nil || v.Secret.SecretName != SecretName(s.ID) || len(v.Secret.Items) != 2 || slices.ContainsFunc(v.Secret.Items, func(i corev1.KeyToPath) bool { return i.Key == SecretKeyPassword }) {
				t.Errorf("provider-keys volume %+v", v.Secret)
			}
		}
	}

	// Without stored providers the pod is as before: no volume, the gateway flags.
	putProviders(t, st, `{}`)
	if sp, err = c.loadProviders(t.Context(), "m"); err != nil || sp != nil {
		t.Fatalf("no providers: %+v, %v", sp, err)
	}
	pod, _ = c.buildPod(s, sp)
	if slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "provider-keys" }) ||
		!slices.Contains(pod.Spec.InitContainers[0].Args, "--litellm-base-url=http://litellm:4000/v1") {
		t.Errorf("without providers: volumes %v, args %v", pod.Spec.Volumes, pod.Spec.InitContainers[0].Args)
	}
}

// A start after an admin changed the providers follows them: new values, removed keys gone.
func TestSecretFollowsProviders(t *testing.T) {
	st, owner := storeWithProviders(t, sessionProvidersJSON)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("sessions"), kube, st)
	s := &store.Session{ID: "abc12345", OwnerID: owner, Model: "acme/big"}
	ctx := t.Context()
	sp, _ := c.loadProviders(ctx, s.Model)
	if err := c.ensureSecret(ctx, s, sp, ""); err != nil {
		t.Fatal(err)
	}
	putProviders(t, st, `{"acme": {"options": {"apiKey": "sk-rotated"}, "models": {"big": {}}}}`)
	sp, _ = c.loadProviders(ctx, s.Model)
	if err := c.ensureSecret(ctx, s, sp, ""); err != nil {
		t.Fatal(err)
	}
	sec, err := kube.CoreV1().Secrets("sessions").Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["provider.acme.apiKey"]) != "sk-rotated" || sec.Data["provider.acme.header.X-Team"] != nil || len(sec.Data[SecretKeyPassword]) == 0 {
		t.Errorf("secret after the providers changed: %v", slices.Collect(maps.Keys(sec.Data)))
	}
}
