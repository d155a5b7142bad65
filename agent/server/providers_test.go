package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

const providerCanary = "sk-CANARY-server-provider-key"

var acmeProviders = `{"acme": {"npm": "@ai-sdk/openai-compatible", "name": "Acme",
  "options": {"baseURL": "https://models.acme.test/v1", "apiKey": "` + providerCanary + `", "headers": {"X-Team": "hdr-CANARY"}},
  "models": {"big": {"name": "Acme Big"}, "small": {}}}}`

func newProvidersEnv(t *testing.T, d providers.Defaults) *env {
	return newEnvWith(t, nil, func(o *Options) { o.Providers = &d })
}

func TestProvidersAreAdminOnlyAndAudited(t *testing.T) {
	e := newProvidersEnv(t, providers.Defaults{})
	for _, m := range []string{"GET", "PUT"} {
		code, body := e.do("alice", m, "/api/v1/providers", acmeProviders)
		if code != http.StatusForbidden || errorOf(t, body).Code != apiv1.CodeForbidden {
			t.Errorf("%s as a user: %d %s", m, code, body)
		}
	}
	code, body := e.do("root", "PUT", "/api/v1/providers", acmeProviders)
	if code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{Target: "providers"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Items {
		got = append(got, ev.Action+" "+ev.Outcome)
		if strings.Contains(ev.Detail, "CANARY") {
			t.Errorf("audit detail holds a secret: %q", ev.Detail)
		}
	}
	if strings.Join(got, ",") != "providers.put success,providers.put denied,providers.get denied" {
		t.Errorf("audit: %v", got)
	}
}

func TestProvidersHideSecretsAndKeepThem(t *testing.T) {
	e := newProvidersEnv(t, providers.Defaults{})
	code, body := e.do("root", "PUT", "/api/v1/providers", acmeProviders)
	if code != http.StatusOK || strings.Contains(string(body), "CANARY") || strings.Count(string(body), apiv1.SecretPlaceholder) != 2 {
		t.Fatalf("put answer: %d %s", code, body)
	}
	code, body = e.do("root", "GET", "/api/v1/providers", nil)
	if code != http.StatusOK || strings.Contains(string(body), "CANARY") || !strings.Contains(string(body), `"apiKey":"%%SECRET%%"`) {
		t.Fatalf("get: %d %s", code, body)
	}
	// What GET showed, edited and written back, keeps the stored key.
	edited := strings.Replace(string(body), `"Acme Big"`, `"Acme Bigger"`, 1)
	if code, b := e.do("root", "PUT", "/api/v1/providers", edited); code != http.StatusOK {
		t.Fatalf("put back: %d %s", code, b)
	}
	ps, err := e.st.ListProviders(context.Background())
	if err != nil || len(ps) != 1 || ps[0].Secrets["options.apiKey"] != providerCanary || ps[0].Secrets["options.headers.X-Team"] != "hdr-CANARY" ||
		!strings.Contains(string(ps[0].Config), "Acme Bigger") {
		t.Fatalf("stored after put back: %+v, %v", ps, err)
	}

	// Errors name the field, and change nothing.
	code, body = e.do("root", "PUT", "/api/v1/providers", `{"acme": {"options": {"baseURL": "nope"}, "models": {"m": {}}}}`)
	if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "providers.acme.options.baseURL: must be an http(s) URL") {
		t.Errorf("bad baseURL: %d %s", code, body)
	}
	code, body = e.do("root", "PUT", "/api/v1/providers", `{"new": {"options": {"apiKey": "%%SECRET%%"}, "models": {"m": {}}}}`)
	if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "providers.new.options.apiKey: %%SECRET%% keeps the stored value, but none is stored") {
		t.Errorf("placeholder without a stored value: %d %s", code, body)
	}
	code, body = e.do("root", "PUT", "/api/v1/providers", `[1]`)
	if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "providers: must be a JSON object") {
		t.Errorf("not an object: %d %s", code, body)
	}
	// Past providers.MaxBodyBytes (below the API's own limit): 413 naming the limit.
	big := `{"acme": {"name": "` + strings.Repeat("x", providers.MaxBodyBytes) + `", "models": {"m": {}}}}`
	code, body = e.do("root", "PUT", "/api/v1/providers", big)
	if code != http.StatusRequestEntityTooLarge || errorOf(t, body).Code != apiv1.CodeTooLarge ||
		!strings.Contains(errorOf(t, body).Message, fmt.Sprint(providers.MaxBodyBytes)) {
		t.Errorf("providers larger than the limit: %d %.200s", code, body)
	}
	if ps, _ := e.st.ListProviders(context.Background()); len(ps) != 1 || ps[0].Secrets["options.apiKey"] != providerCanary {
		t.Errorf("a refused put changed the providers: %+v", ps)
	}
	// A refused put is audited with the audit package's outcome.
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{Target: "providers"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range page.Items {
		if ev.Outcome != audit.OutcomeSuccess && ev.Outcome != audit.OutcomeError && ev.Outcome != audit.OutcomeDenied {
			t.Errorf("audit outcome %q of %s is not one of audit's", ev.Outcome, ev.Action)
		}
	}
}

// TestProvidersSealModelSecrets: a model's headers and options.apiKey are stored
// sealed and answered as %%SECRET%%, like the provider's own.
func TestProvidersSealModelSecrets(t *testing.T) {
	e := newProvidersEnv(t, providers.Defaults{})
	in := `{"acme": {"options": {"baseURL": "https://models.acme.test/v1"},
	  "models": {"big": {"headers": {"X-Model": "hdr-CANARY-model"}, "options": {"apiKey": "sk-CANARY-model", "setCacheKey": true}}}}}`
	code, body := e.do("root", "PUT", "/api/v1/providers", in)
	if code != http.StatusOK || strings.Contains(string(body), "CANARY") {
		t.Fatalf("put: %d %s", code, body)
	}
	code, body = e.do("root", "GET", "/api/v1/providers", nil)
	if code != http.StatusOK || strings.Contains(string(body), "CANARY") || strings.Count(string(body), apiv1.SecretPlaceholder) != 2 ||
		!strings.Contains(string(body), `"setCacheKey":true`) {
		t.Fatalf("get: %d %s", code, body)
	}
	ps, _ := e.st.ListProviders(context.Background())
	if len(ps) != 1 || strings.Contains(string(ps[0].Config), "CANARY") || ps[0].Secrets["models.big.options.apiKey"] != "sk-CANARY-model" {
		t.Errorf("stored: %+v", ps)
	}
}

func TestModelsAndCreateFollowTheProviders(t *testing.T) {
	e := newProvidersEnv(t, providers.Defaults{DefaultModel: "gpt-4o-mini"})
	// Nothing configured: create is refused with what an admin must do.
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Title: "t"})
	if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "no model provider is configured: an admin must add one") {
		t.Fatalf("create without providers: %d %s", code, body)
	}
	code, body = e.do("alice", "GET", "/api/v1/models", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"items":[]`) {
		t.Errorf("models without providers: %d %s", code, body)
	}

	if code, body := e.do("root", "PUT", "/api/v1/providers", acmeProviders); code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	code, body = e.do("alice", "GET", "/api/v1/models", nil)
	var list apiv1.ModelList
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Items) != 2 ||
		list.Items[0] != (apiv1.Model{ID: "acme/big", Name: "Acme Big", Provider: "acme", ProviderName: "Acme", Default: true}) {
		t.Fatalf("models: %d %s", code, body)
	}
	if strings.Contains(string(body), "CANARY") {
		t.Errorf("models answer holds a secret: %s", body)
	}

	if s := e.create("alice", apiv1.CreateSessionRequest{Title: "t", Model: "acme/small"}); s.Model != "acme/small" {
		t.Errorf("model %q", s.Model)
	}
	if s := e.create("alice", apiv1.CreateSessionRequest{Title: "t"}); s.Model != "acme/big" {
		t.Errorf("default model %q; want the first of the providers'", s.Model)
	}
	code, body = e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Title: "t", Model: "acme/huge"})
	if code != http.StatusBadRequest || errorOf(t, body).Message != `model: "acme/huge" is not available; available models: acme/big, acme/small` {
		t.Errorf("unknown model: %d %s", code, body)
	}
}

// The gateway configured by LITELLM_BASE_URL is a provider without any stored one.
func TestImplicitLiteLLMProvider(t *testing.T) {
	e := newProvidersEnv(t, providers.Defaults{LiteLLMBaseURL: "http://litellm:4000/v1", DefaultModel: "gpt-4o-mini"})
	if s := e.create("alice", apiv1.CreateSessionRequest{Title: "t", Model: "litellm/gpt-4o"}); s.Model != "litellm/gpt-4o" {
		t.Errorf("model %q", s.Model)
	}
	_, body := e.do("alice", "GET", "/api/v1/models", nil)
	if !strings.Contains(string(body), `"id":"litellm/gpt-4o-mini"`) || !strings.Contains(string(body), `"anyModel":true`) {
		t.Errorf("models: %s", body)
	}
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Title: "t", Model: "acme/big"})
	if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "available models: litellm/<any model of the gateway>") {
		t.Errorf("unknown provider: %d %s", code, body)
	}
}

func TestOpenAPIListsProviderRoutes(t *testing.T) {
	e := newEnv(t, nil)
	_, body := e.do("alice", "GET", "/api/v1/openapi.json", nil)
	for _, want := range []string{`"/api/v1/providers"`, `"/api/v1/models"`, `"put"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("openapi lacks %s", want)
		}
	}
}
