package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// testProviders: an admin configures a provider whose model only answers its own secret
// key; a user's session picks it and gets the reply, so the key reached OpenCode — and
// the key is in no API answer, plugin output, pod spec or log (the leak scan runs after).
func (p *product) testProviders(t *testing.T) {
	key := p.secrets.canary("a model provider's API key")
	header := p.secrets.canary("a model provider's header value")
	model := fakemodel.New()
	model.RequireKey = key
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: model, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	// Only admins manage providers.
	if out, err := p.agentsErr(t, p.alice, "providers", "get"); err == nil || !strings.Contains(out, "managed by admins") {
		t.Fatalf("providers get as a user: %v\n%s", err, out)
	}
	providers := map[string]any{"acme": map[string]any{
		"npm": "@ai-sdk/openai-compatible", "name": "Acme",
		"options": map[string]any{"baseURL": "http://" + ln.Addr().String() + "/v1", "apiKey": key, "headers": map[string]string{"X-Acme-Team": header}},
		"models":  map[string]any{"fake-model": map[string]any{"name": "Acme Fake", "limit": map[string]any{"context": 128000, "output": 4096}}},
	}}
	b, _ := json.Marshal(providers)
	file := filepath.Join(t.TempDir(), "providers.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p.agents(t, p.admin, "providers", "set", "-f", file)
	got := p.agents(t, p.admin, "providers", "get")
	if strings.Count(got, apiv1.SecretPlaceholder) != 2 || strings.Contains(got, key) {
		t.Fatalf("providers get:\n%s", got)
	}
	// Written back as shown, the keys stay.
	if err := os.WriteFile(file, []byte(got), 0o600); err != nil {
		t.Fatal(err)
	}
	p.agents(t, p.admin, "providers", "set", "-f", file)

	if models := p.agents(t, p.alice, "models"); !strings.Contains(models, "acme/fake-model") || !strings.Contains(models, "Acme Fake") {
		t.Fatalf("models:\n%s", models)
	}
	out, err := p.agentsErr(t, p.alice, "session", "create", "--model", "acme/other", "-o", "name")
	if err == nil || !strings.Contains(out, `model: "acme/other" is not available; available models: acme/fake-model`) {
		t.Fatalf("create with an unknown model: %v\n%s", err, out)
	}

	prompt := "use the acme model"
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--model", "acme/fake-model", "--prompt", prompt, "--wait", "-o", "name"))
	p.waitReply(t, p.alice, id, prompt)
	if !model.Received(prompt) {
		t.Fatal("the provider's model never received the prompt")
	}
	if p.env.Model.Received(prompt) {
		t.Error("the prompt went to the gateway's model, not the provider's")
	}
	if n := model.Refused(); n != 0 {
		t.Errorf("the provider's model refused %d requests: a wrong or missing key was sent", n)
	}
	// The pod spec references the keys; it never holds them.
	pod, err := p.kube.CoreV1().Pods(p.ns).Get(context.Background(), "cake-session-"+id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(pod)
	if strings.Contains(string(spec), key) || strings.Contains(string(spec), header) {
		t.Errorf("the session pod spec holds a provider secret")
	}
	if !strings.Contains(string(spec), "provider-keys") {
		t.Errorf("the session pod mounts no provider keys: %s", spec)
	}
	p.agents(t, p.alice, "session", "delete", id)
}
