package providers

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"
)

// SecretField reports whether a JSON object field of this name holds a credential. It is
// the one rule the agent uses wherever it must keep a provider key out of sight:
// sealing provider fields (Parse, ToStore, Redacted), refusing literal keys in the
// session's --provider-json (sessioninit) and redacting OpenCode's configuration
// answers (proxy). Names are compared without case, '_' and '-': a credential is named
// as one ("apiKey", "authorization", "token", "password") or ends like one
// ("sessionToken", "clientSecret", "secretAccessKey"); names that merely contain a
// word ("setCacheKey", "maxTokens", "tokenizer", "accessKeyId") are settings.
func SecretField(name string) bool {
	n := strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(name))
	switch n {
	case "key", "token", "secret", "password", "passwd", "authorization", "bearer", "cookie", "credential", "credentials":
		return true
	}
	for _, suffix := range []string{"apikey", "accesskey", "privatekey", "secretkey", "secret", "token", "password", "credential", "credentials"} {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}

// Where a secret value sits in a provider object: its field names from the provider
// down, e.g. ["models", "gpt-4.1", "headers", "X-Key"]. The store keeps each secret by
// the names joined with '.', where a name's own '~' and '.' are written "~0" and "~1"
// (model ids may hold dots); "options.apiKey" and "options.headers.NAME" read as before.

func pathString(path []string) string { return strings.Join(path, ".") }

func storeKey(path []string) string {
	esc := strings.NewReplacer("~", "~0", ".", "~1")
	out := make([]string, len(path))
	for i, p := range path {
		out[i] = esc.Replace(p)
	}
	return strings.Join(out, ".")
}

func parseStoreKey(k string) []string {
	unesc := strings.NewReplacer("~1", ".", "~0", "~")
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = unesc.Replace(p)
	}
	return parts
}

var (
	// secretKeyRe is what a Secret key may hold.
	secretKeyRe = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
	// nameRe is a field name spelt out in a Secret key: no '.', so that two paths
	// never share a key.
	nameRe = regexp.MustCompile(`^[-_a-zA-Z0-9]+$`)
)

// walkSecrets calls f for every secret value of provider obj, with its path and a
// setter; f may replace the value or (set(nil)) remove it. Secrets are options.apiKey,
// every value of a "headers" object (at any depth: the provider's options, a model's)
// and every string value of a field SecretField names, anywhere in the object.
func walkSecrets(obj map[string]any, f func(path []string, v any, set func(any))) {
	walkObject(obj, nil, false, f)
}

func walkObject(m map[string]any, path []string, headers bool, f func([]string, any, func(any))) {
	for _, k := range sortedKeys(m) {
		p := append(append([]string(nil), path...), k)
		v := m[k]
		if sub, ok := v.(map[string]any); ok {
			walkObject(sub, p, k == "headers" && !headers, f)
			continue
		}
		_, isString := v.(string)
		apiKey := len(p) == 2 && p[0] == "options" && p[1] == "apiKey"
		if headers || apiKey || (isString && SecretField(k)) {
			f(p, v, func(nv any) { setOrDelete(m, k, nv) })
		}
	}
}

// secretInList returns the path of a secret-named string field inside a list of v, if
// any: values in lists have no stable place to be sealed at.
func secretInList(v any, path []string, inList bool) []string {
	switch t := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(t) {
			p := append(append([]string(nil), path...), k)
			if _, isString := t[k].(string); isString && inList && SecretField(k) {
				return p
			}
			if found := secretInList(t[k], p, inList); found != nil {
				return found
			}
		}
	case []any:
		for i, e := range t {
			if found := secretInList(e, append(append([]string(nil), path...), "["+strconv.Itoa(i)+"]"), true); found != nil {
				return found
			}
		}
	}
	return nil
}

// SecretKey is the key of a provider secret in a session's Secret (and the file name
// under the mounted directory). Secret keys allow only [-._a-zA-Z0-9]: options.apiKey
// and options.headers.NAME (provider ids and header names are held to that alphabet)
// keep their names, other paths are spelt out when their names fit that alphabet
// without '.', and hashed when not.
func SecretKey(id string, path []string) string {
	switch {
	case len(path) == 2 && path[0] == "options" && path[1] == "apiKey":
		return "provider." + id + ".apiKey"
	case len(path) == 3 && path[0] == "options" && path[1] == "headers":
		return "provider." + id + ".header." + path[2]
	}
	spelt := true
	for _, name := range path {
		spelt = spelt && nameRe.MatchString(name)
	}
	if k := "provider." + id + "." + pathString(path); spelt && len(k) <= 200 {
		return k
	}
	sum := sha256.Sum256([]byte(storeKey(path)))
	return "provider." + id + ".secret-" + hex.EncodeToString(sum[:8])
}
