// Package providers is the admin-managed set of model providers: OpenCode's provider
// JSON ({"<id>": {"npm", "name", "options": {"baseURL", "apiKey", "headers"},
// "models": {...}}}) validated field by field, split into the part that is stored and
// shown in the clear and the secret values (options.apiKey, header values at any depth
// and any field SecretField names, a model's included) the store keeps encrypted, and rendered for a session as a config that references those
// values as files of the session's Secret, so no key is ever in a config file, a pod
// spec or an API answer.
package providers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Set is the providers by id; each is OpenCode's provider object with its secret
// values in place (in memory only).
type Set map[string]map[string]any

// Limits of what an admin may configure; MaxBodyBytes bounds the JSON of
// PUT /api/v1/providers.
const (
	MaxProviders = 50
	MaxModels    = 200
	MaxBodyBytes = 256 << 10
)

var (
	// Provider ids become Secret keys and config keys: keep them to a safe alphabet.
	idRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	// HTTP header names (RFC 9110 tokens, the common subset).
	headerRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,100}$`)
)

// Fields of a provider object OpenCode knows; anything else is a typo.
var providerFields = []string{"api", "blacklist", "env", "id", "models", "name", "npm", "options", "whitelist"}

// Parse decodes and validates an admin's provider JSON map. Errors name the field, as
// in "providers.acme.options.baseURL: must be an http(s) URL"; all of them are
// reported, one per line.
func Parse(body []byte) (Set, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("providers: not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("providers: unexpected data after the JSON object")
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return nil, errors.New(`providers: must be a JSON object of providers by id, e.g. {"acme": {"npm": "@ai-sdk/openai-compatible", ...}}`)
	}
	if len(top) > MaxProviders {
		return nil, fmt.Errorf("providers: %d providers is more than the maximum %d", len(top), MaxProviders)
	}
	set := Set{}
	var errs []string
	for _, id := range sortedKeys(top) {
		p := "providers." + id
		if !idRe.MatchString(id) {
			errs = append(errs, p+": the id must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit (at most 63)")
			continue
		}
		obj, ok := top[id].(map[string]any)
		if !ok {
			errs = append(errs, p+": must be an object")
			continue
		}
		errs = append(errs, checkProvider(p, obj)...)
		set[id] = obj
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return set, nil
}

func checkProvider(p string, obj map[string]any) []string {
	var errs []string
	add := func(field, msg string) { errs = append(errs, p+"."+field+": "+msg) }
	for _, k := range sortedKeys(obj) {
		if !slices.Contains(providerFields, k) {
			add(k, "unknown field (known: "+strings.Join(providerFields, ", ")+")")
		}
	}
	for _, k := range []string{"npm", "name", "api", "id"} {
		if v, ok := obj[k]; ok {
			if _, isStr := v.(string); !isStr {
				add(k, "must be a string")
			}
		}
	}
	if opts, ok := obj["options"]; ok {
		o, isObj := opts.(map[string]any)
		if !isObj {
			add("options", "must be an object")
		} else {
			errs = append(errs, checkOptions(p+".options", o)...)
		}
	}
	models, ok := obj["models"].(map[string]any)
	switch {
	case !ok:
		add("models", `must be an object of the models sessions may use, e.g. {"gpt-4o": {"name": "GPT-4o"}}`)
	case len(models) == 0:
		add("models", "must name at least one model")
	case len(models) > MaxModels:
		add("models", fmt.Sprintf("%d models is more than the maximum %d", len(models), MaxModels))
	default:
		for _, id := range sortedKeys(models) {
			mp := "models." + id
			if id == "" || len(id) > 200 || strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
				add(mp, "a model id must be 1 to 200 printable characters without spaces")
				continue
			}
			m, isObj := models[id].(map[string]any)
			if !isObj {
				add(mp, "must be an object")
				continue
			}
			if v, ok := m["name"]; ok {
				if _, isStr := v.(string); !isStr {
					add(mp+".name", "must be a string")
				}
			}
			if v, ok := m["limit"]; ok {
				lim, isObj := v.(map[string]any)
				if !isObj {
					add(mp+".limit", "must be an object with context and output token counts")
					continue
				}
				for _, k := range sortedKeys(lim) {
					n, isNum := lim[k].(json.Number)
					if i, err := n.Int64(); !isNum || err != nil || i < 0 {
						add(mp+".limit."+k, "must be a whole number of tokens")
					}
				}
			}
		}
	}
	// Every secret, wherever it is, is sealed like options.apiKey: it must be a value
	// the session's Secret can carry.
	walkSecrets(obj, func(path []string, v any, _ func(any)) {
		if msg := checkSecret(v); msg != "" {
			add(pathString(path), msg)
		}
	})
	if path := secretInList(obj, nil, false); path != nil {
		add(pathString(path), "a secret inside a list cannot be stored sealed: give it as a field of an object (e.g. options or headers)")
	}
	return errs
}

func checkOptions(p string, o map[string]any) []string {
	var errs []string
	add := func(field, msg string) { errs = append(errs, p+"."+field+": "+msg) }
	if v, ok := o["baseURL"]; ok {
		s, _ := v.(string)
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			add("baseURL", "must be an http(s) URL without credentials")
		}
	}
	if v, ok := o["headers"]; ok {
		h, isObj := v.(map[string]any)
		if !isObj {
			add("headers", "must be an object of header names and values")
		}
		for _, name := range sortedKeys(h) {
			if !headerRe.MatchString(name) {
				add("headers."+name, "not a header name (letters, digits and '-')")
			}
		}
	}
	return errs
}

// checkSecret: a secret value is written into a session's Secret and substituted by
// OpenCode into its JSON config text, so it must be a plain printable string.
func checkSecret(v any) string {
	s, ok := v.(string)
	switch {
	case !ok:
		return "must be a string"
	case s == "":
		return "must not be empty (leave the field out instead)"
	case s == apiv1.SecretPlaceholder:
		return ""
	case strings.HasPrefix(s, "{env:") || strings.HasPrefix(s, "{file:"):
		return "give the value itself: the agent stores it encrypted and hands it to sessions as a file"
	case strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' || r == '\\' }) >= 0:
		return "must be printable, without quotes or backslashes"
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func setOrDelete(m map[string]any, k string, v any) {
	if v == nil {
		delete(m, k)
		return
	}
	m[k] = v
}

// clone deep-copies a provider object through JSON (it holds JSON values only).
func clone(obj map[string]any) map[string]any {
	b, _ := json.Marshal(obj)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out map[string]any
	_ = dec.Decode(&out)
	return out
}

// KeepSecrets replaces every SecretPlaceholder in s by the value stored in old for the
// same provider and field; a placeholder with nothing stored is an error naming it.
func (s Set) KeepSecrets(old Set) error {
	var errs []string
	for _, id := range sortedKeys(s) {
		stored := map[string]any{}
		if o := old[id]; o != nil {
			walkSecrets(o, func(path []string, v any, _ func(any)) { stored[storeKey(path)] = v })
		}
		walkSecrets(s[id], func(path []string, v any, set func(any)) {
			if v != apiv1.SecretPlaceholder {
				return
			}
			if sv, ok := stored[storeKey(path)]; ok {
				set(sv)
				return
			}
			errs = append(errs, "providers."+id+"."+pathString(path)+": "+apiv1.SecretPlaceholder+" keeps the stored value, but none is stored: give the value")
		})
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// Redacted returns a copy of s with every secret value replaced by SecretPlaceholder.
func (s Set) Redacted() Set {
	out := Set{}
	for id, obj := range s {
		c := clone(obj)
		walkSecrets(c, func(_ []string, _ any, set func(any)) { set(apiv1.SecretPlaceholder) })
		out[id] = c
	}
	return out
}

// ToStore splits s into store rows: the config without secrets, and the secrets.
func (s Set) ToStore() []*store.Provider {
	var out []*store.Provider
	for _, id := range sortedKeys(s) {
		c := clone(s[id])
		secrets := map[string]string{}
		walkSecrets(c, func(path []string, v any, set func(any)) {
			secrets[storeKey(path)], _ = v.(string)
			set(nil)
		})
		b, _ := json.Marshal(c)
		out = append(out, &store.Provider{ID: id, Config: b, Secrets: secrets})
	}
	return out
}

// FromStore puts stored rows back together.
func FromStore(ps []*store.Provider) (Set, error) {
	out := Set{}
	for _, p := range ps {
		dec := json.NewDecoder(bytes.NewReader(p.Config))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil || obj == nil {
			return nil, fmt.Errorf("stored provider %q is not a JSON object: %v", p.ID, err)
		}
		for key, v := range p.Secrets {
			path := parseStoreKey(key)
			if slices.Contains(path, "") {
				return nil, fmt.Errorf("stored provider %q has a secret at an invalid path %q", p.ID, key)
			}
			m := obj
			for _, name := range path[:len(path)-1] {
				m = child(m, name)
			}
			m[path[len(path)-1]] = v
		}
		out[p.ID] = obj
	}
	return out, nil
}

func child(m map[string]any, k string) map[string]any {
	c, ok := m[k].(map[string]any)
	if !ok {
		c = map[string]any{}
		m[k] = c
	}
	return c
}

// ForSession renders s for a session whose provider secrets are files in dir: the
// provider JSON (every secret replaced by {file:dir/KEY}) and the Secret data (KEY →
// value). The JSON holds no secret value.
func (s Set) ForSession(dir string) (providerJSON string, files map[string][]byte) {
	files = map[string][]byte{}
	out := map[string]any{}
	for _, id := range sortedKeys(s) {
		c := clone(s[id])
		walkSecrets(c, func(path []string, v any, set func(any)) {
			key := SecretKey(id, path)
			sv, _ := v.(string)
			files[key] = []byte(sv)
			set("{file:" + dir + "/" + key + "}")
		})
		out[id] = c
	}
	b, _ := json.Marshal(out)
	return string(b), files
}

// Models lists the models of s as "provider/model", by provider then model id.
func (s Set) Models() []apiv1.Model {
	var out []apiv1.Model
	for _, id := range sortedKeys(s) {
		pname, _ := s[id]["name"].(string)
		models, _ := s[id]["models"].(map[string]any)
		for _, mid := range sortedKeys(models) {
			m, _ := models[mid].(map[string]any)
			name, _ := m["name"].(string)
			if name == "" {
				name = mid
			}
			out = append(out, apiv1.Model{ID: id + "/" + mid, Name: name, Provider: id, ProviderName: pname})
		}
	}
	return out
}
