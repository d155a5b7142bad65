package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cakeai/cake-agents/agent/providers"
)

// ProviderKeysDir is where the OpenCode container finds the provider keys of the
// session's Secret, one file per key; the config references them as {file:...}.
const ProviderKeysDir = "/etc/cake-agents/providers"

// providerKeyPrefix starts every Secret key that holds a provider secret.
const providerKeyPrefix = "provider."

// sessionProviders is what a session gets of the admin-managed providers at its start:
// the provider JSON for the init container (no secret in it) and the Secret data its
// {file:} references point at. Nil: no provider is stored, and the session is
// configured as before (the LiteLLM gateway or the --provider-json override).
type sessionProviders struct {
	json  string
	files map[string][]byte
}

// loadProviders renders the current providers for a session using model.
func (c *Controller) loadProviders(ctx context.Context, model string) (*sessionProviders, error) {
	ps, err := c.st.ListProviders(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the model providers: %w", err)
	}
	set, err := providers.FromStore(ps)
	if err != nil {
		return nil, err
	}
	if len(set) == 0 {
		return nil, nil
	}
	js, files := set.ForSession(ProviderKeysDir)
	if c.cfg.LiteLLMBaseURL != "" && set[providers.LiteLLM] == nil {
		// The implicit gateway provider beside the stored ones, as sessioninit renders
		// it alone: its key stays the Secret's LITELLM_API_KEY, read from the env.
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			return nil, fmt.Errorf("render the model providers: %w", err)
		}
		// Beside stored providers only a "litellm/" model is the gateway's.
		gwModel := ""
		if strings.HasPrefix(model, providers.LiteLLM+"/") {
			gwModel = model
		}
		m[providers.LiteLLM] = providers.Gateway(c.cfg.LiteLLMBaseURL, gwModel, SecretKeyLiteLLM)
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("render the model providers: %w", err)
		}
		js = string(b)
	}
	return &sessionProviders{json: js, files: files}, nil
}

// keys returns the Secret keys of sp's files (none for nil).
func (sp *sessionProviders) keys() []string {
	if sp == nil {
		return nil
	}
	out := make([]string, 0, len(sp.files))
	for k := range sp.files {
		out = append(out, k)
	}
	return out
}
