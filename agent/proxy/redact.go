package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cakeai/cake-agents/agent/providers"
)

// OpenCode answers these routes with its resolved configuration, provider API keys in
// plain text (DESIGN §8.2); an "/api" prefix serves the same. A session's user must not
// learn a key the platform shares between sessions, so the proxy redacts them.
var configRoutes = map[string]bool{
	"/config":           true,
	"/config/providers": true,
	"/provider":         true,
	"/global/config":    true,
}

// maxRedactBytes bounds a configuration answer the proxy buffers to redact.
const maxRedactBytes = 16 << 20

// Redacted replaces every secret value in a redacted answer.
const Redacted = "[redacted by cake-agents]"

func isConfigRoute(path string) bool {
	p := strings.TrimSuffix(path, "/")
	p = strings.TrimPrefix(p, "/api")
	return configRoutes[p]
}

func redactValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if _, isString := val.(string); isString && providers.SecretField(k) {
				t[k] = Redacted
				continue
			}
			if k == "headers" {
				// Custom provider headers usually carry credentials.
				if hm, ok := val.(map[string]any); ok {
					for hk := range hm {
						hm[hk] = Redacted
					}
					continue
				}
			}
			t[k] = redactValue(val)
		}
	case []any:
		for i := range t {
			t[i] = redactValue(t[i])
		}
	}
	return v
}

var errUnredactable = errors.New("the session's OpenCode answered its configuration in a form the agent cannot redact")

// redactResponse rewrites a configuration answer with its secrets replaced. Anything it
// cannot parse is refused rather than passed on.
func redactResponse(resp *http.Response) error {
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return nil
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		resp.Body.Close()
		return fmt.Errorf("%w (content encoding %q)", errUnredactable, ce)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRedactBytes+1))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read configuration answer: %w", err)
	}
	if len(body) > maxRedactBytes {
		return fmt.Errorf("%w (larger than %d bytes)", errUnredactable, maxRedactBytes)
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("%w: %v", errUnredactable, err)
	}
	out, err := json.Marshal(redactValue(v))
	if err != nil {
		return fmt.Errorf("%w: %v", errUnredactable, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	resp.Header.Del("Etag")
	return nil
}
