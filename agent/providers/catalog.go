package providers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// LiteLLM is the id of the provider that exists implicitly when the agent is given a
// LiteLLM (OpenAI-compatible gateway) base URL; the gateway decides which models exist,
// so any model name is passed to it.
const LiteLLM = "litellm"

// Output and context limits the gateway provider gives its model: OpenCode sends
// max_tokens 32000 unless a model's output limit is set, which most gateways reject for
// small models.
const (
	gatewayContextLimit = 128000
	gatewayOutputLimit  = 4096
)

// Gateway is the provider object of the LiteLLM gateway (id LiteLLM) for a session using
// model ("litellm/NAME" or a bare NAME; "" names none): OpenAI-compatible at baseURL,
// its key read from the environment variable keyEnv ("": no key in the config; OpenCode
// then takes the one stored by PUT /auth/litellm, as a warm pool pod's is). The session's config builder
// (sessioninit) and the agent (beside stored providers) both render it with this.
func Gateway(baseURL, model, keyEnv string) map[string]any {
	models := map[string]any{}
	if name := strings.TrimPrefix(model, LiteLLM+"/"); name != "" {
		models[name] = map[string]any{"name": name, "limit": map[string]any{"context": gatewayContextLimit, "output": gatewayOutputLimit}}
	}
	options := map[string]any{"baseURL": baseURL}
	if keyEnv != "" {
		options["apiKey"] = "{env:" + keyEnv + "}"
	}
	return map[string]any{
		"npm":     "@ai-sdk/openai-compatible",
		"name":    "LiteLLM",
		"options": options,
		"models":  models,
	}
}

// Defaults is what the agent's configuration adds to the stored providers.
type Defaults struct {
	// LiteLLMBaseURL, when set, makes the implicit LiteLLM provider exist (unless an
	// admin stored one with the same id).
	LiteLLMBaseURL string
	// ProviderJSON is the legacy --provider-json override: when set, sessions without
	// stored providers use it and models are not checked.
	ProviderJSON string
	// DefaultModel is the model of a session that names none.
	DefaultModel string
}

// ErrNoProviders: no provider is configured at all, so no session could reach a model.
var ErrNoProviders = errors.New("no model provider is configured: an admin must add one (`kubectl agents providers set -f providers.json`, the web UI's Settings › Providers, or the chart's providers value)")

// Catalog is the providers sessions may use right now.
type Catalog struct {
	Stored   Set
	Defaults Defaults
}

// Load reads the stored providers.
func Load(ctx context.Context, st store.Store, d Defaults) (*Catalog, error) {
	ps, err := st.ListProviders(ctx)
	if err != nil {
		return nil, err
	}
	set, err := FromStore(ps)
	if err != nil {
		return nil, err
	}
	return &Catalog{Stored: set, Defaults: d}, nil
}

// implicitLiteLLM reports whether the gateway provider exists without being stored.
func (c *Catalog) implicitLiteLLM() bool {
	return c.Defaults.LiteLLMBaseURL != "" && c.Stored[LiteLLM] == nil
}

// legacy reports whether sessions use the --provider-json override (no stored providers).
func (c *Catalog) legacy() bool { return len(c.Stored) == 0 && c.Defaults.ProviderJSON != "" }

// Models lists what a user may pick: every stored provider's models, then the LiteLLM
// gateway (one entry for the default model, marked AnyModel).
func (c *Catalog) Models() []apiv1.Model {
	out := c.Stored.Models()
	if c.implicitLiteLLM() {
		name := strings.TrimPrefix(c.Defaults.DefaultModel, LiteLLM+"/")
		if name == "" {
			name = "gpt-4o-mini"
		}
		out = append(out, apiv1.Model{ID: LiteLLM + "/" + name, Name: name, Provider: LiteLLM, ProviderName: "LiteLLM", AnyModel: true,
			// Without stored providers the configured default goes to the gateway.
			Default: len(c.Stored) == 0})
	}
	if def, ok := c.resolve(""); ok {
		for i := range out {
			if out[i].ID == def || (out[i].Provider == LiteLLM && LiteLLM+"/"+def == out[i].ID) {
				out[i].Default = true
			}
		}
	}
	return out
}

// Resolve checks the model a session asks for ("" for the default) and returns the one
// to store. Without stored providers it keeps today's behaviour (the gateway or the
// override takes any model name, and "" stays "" for the configured default); with
// them, the model must be one of theirs (or the gateway's), and "" becomes the
// default model when it is theirs, else their first model.
func (c *Catalog) Resolve(model string) (string, error) {
	if len(c.Stored) == 0 && !c.implicitLiteLLM() && !c.legacy() {
		return "", ErrNoProviders
	}
	if m, ok := c.resolve(model); ok {
		return m, nil
	}
	var ids []string
	for _, m := range c.Models() {
		id := m.ID
		if m.AnyModel {
			id = m.Provider + "/<any model of the gateway>"
		}
		ids = append(ids, id)
	}
	return "", fmt.Errorf("model: %q is not available; available models: %s", model, strings.Join(ids, ", "))
}

func (c *Catalog) resolve(model string) (string, bool) {
	if len(c.Stored) == 0 {
		if c.legacy() || model == "" || !strings.Contains(model, "/") || strings.HasPrefix(model, LiteLLM+"/") {
			return model, c.legacy() || c.implicitLiteLLM()
		}
		return "", false
	}
	if model == "" {
		if def := c.Defaults.DefaultModel; def != "" {
			if m, ok := c.resolve(def); ok {
				return m, true
			}
		}
		return c.Stored.Models()[0].ID, true
	}
	provider, name, ok := strings.Cut(model, "/")
	if !ok {
		// A bare name: the gateway's, or the one stored provider that has it.
		if c.implicitLiteLLM() {
			return LiteLLM + "/" + model, true
		}
		var found []string
		for _, m := range c.Stored.Models() {
			if strings.TrimPrefix(m.ID, m.Provider+"/") == model {
				found = append(found, m.ID)
			}
		}
		if len(found) == 1 {
			return found[0], true
		}
		return "", false
	}
	if provider == LiteLLM && c.implicitLiteLLM() && name != "" {
		return model, true
	}
	if p := c.Stored[provider]; p != nil {
		if models, _ := p["models"].(map[string]any); models[name] != nil {
			return model, true
		}
	}
	return "", false
}
