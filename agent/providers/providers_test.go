package providers

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

const acme = `{"acme": {"npm": "@ai-sdk/openai-compatible", "name": "Acme",
  "options": {"baseURL": "https://models.acme.test/v1", "apiKey": "sk-acme-1", "headers": {"X-Team": "team-secret"}, "timeout": 30},
  "models": {"big": {"name": "Acme Big", "limit": {"context": 128000, "output": 4096}}, "small": {}}}}`

func TestParseReportsTheField(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`[]`, "providers: must be a JSON object"},
		{`{"acme": {"models": {"m": {}}, "options": {"baseURL": "ftp://x"}}}`, "providers.acme.options.baseURL: must be an http(s) URL"},
		{`{"acme": {"models": {"m": {}}, "options": {"baseURL": "https://u:p@x"}}}`, "providers.acme.options.baseURL: must be an http(s) URL without credentials"},
		{`{"Acme": {"models": {"m": {}}}}`, "providers.Acme: the id must be lowercase"},
		{`{"acme": {"models": {}}}`, "providers.acme.models: must name at least one model"},
		{`{"acme": {}}`, "providers.acme.models: must be an object"},
		{`{"acme": {"modles": {}, "models": {"m": {}}}}`, "providers.acme.modles: unknown field"},
		{`{"acme": {"npm": 3, "models": {"m": {}}}}`, "providers.acme.npm: must be a string"},
		{`{"acme": {"models": {"m": {"limit": {"output": -1}}}}}`, "providers.acme.models.m.limit.output: must be a whole number"},
		{`{"acme": {"models": {"m": {}}, "options": {"apiKey": "{env:HOME}"}}}`, "providers.acme.options.apiKey: give the value itself"},
		{`{"acme": {"models": {"m": {}}, "options": {"apiKey": "a\"b"}}}`, "providers.acme.options.apiKey: must be printable"},
		{`{"acme": {"models": {"m": {}}, "options": {"headers": {"X Y": "v"}}}}`, "providers.acme.options.headers.X Y: not a header name"},
		{`{"acme": {"models": {"m": {}}, "options": {"accessToken": "{env:TOKEN}"}}}`, "providers.acme.options.accessToken: give the value itself"},
		{`{"acme": {"models": {"m": {"headers": {"X-Key": 3}}}}}`, "providers.acme.models.m.headers.X-Key: must be a string"},
		{`{"acme": {"models": {"m": {}}, "options": {"extra": [{"token": "v"}]}}}`, "providers.acme.options.extra.[0].token: a secret inside a list"},
		{`{"acme": {"models": {"a b": {}}}}`, "providers.acme.models.a b: a model id must be"},
	} {
		_, err := Parse([]byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v; want an error containing %q", tc.body, err, tc.want)
		}
	}
	// Every error at once, not only the first.
	_, err := Parse([]byte(`{"a": {"models": {}}, "b": {"options": {"baseURL": "x"}, "models": {"m": {}}}}`))
	if err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("two bad providers: %v; want two lines", err)
	}
	if _, err := Parse([]byte(acme)); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsAreSplitRedactedAndKept(t *testing.T) {
	set, err := Parse([]byte(acme))
	if err != nil {
		t.Fatal(err)
	}
	rows := set.ToStore()
	if len(rows) != 1 || strings.Contains(string(rows[0].Config), "sk-acme-1") || strings.Contains(string(rows[0].Config), "team-secret") {
		t.Fatalf("stored config holds a secret: %s", rows[0].Config)
	}
	if rows[0].Secrets["options.apiKey"] != "sk-acme-1" || rows[0].Secrets["options.headers.X-Team"] != "team-secret" {
		t.Errorf("secrets %v", rows[0].Secrets)
	}
	back, err := FromStore(rows)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(back)
	b, _ := json.Marshal(set)
	if string(a) != string(b) {
		t.Errorf("round trip through the store:\n%s\nwant\n%s", a, b)
	}

	red, _ := json.Marshal(set.Redacted())
	if strings.Contains(string(red), "sk-acme-1") || strings.Contains(string(red), "team-secret") ||
		strings.Count(string(red), apiv1.SecretPlaceholder) != 2 || !strings.Contains(string(red), `"timeout":30`) {
		t.Errorf("redacted: %s", red)
	}
	if set["acme"]["options"].(map[string]any)["apiKey"] != "sk-acme-1" {
		t.Error("Redacted changed the set itself")
	}

	// The redacted JSON written back keeps the stored values; a new value replaces one.
	edited, err := Parse([]byte(strings.Replace(string(red), `"X-Team":"%%SECRET%%"`, `"X-Team":"new-team"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := edited.KeepSecrets(back); err != nil {
		t.Fatal(err)
	}
	h := edited["acme"]["options"].(map[string]any)
	if h["apiKey"] != "sk-acme-1" || h["headers"].(map[string]any)["X-Team"] != "new-team" {
		t.Errorf("after KeepSecrets: %v", h)
	}
	// A placeholder for a provider with nothing stored is refused, naming the field.
	other, _ := Parse([]byte(`{"other": {"models": {"m": {}}, "options": {"apiKey": "%%SECRET%%"}}}`))
	if err := other.KeepSecrets(back); err == nil || !strings.Contains(err.Error(), "providers.other.options.apiKey: %%SECRET%% keeps the stored value, but none is stored") {
		t.Errorf("placeholder without a stored value: %v", err)
	}
}

func TestForSessionReferencesFiles(t *testing.T) {
	set, _ := Parse([]byte(acme))
	js, files := set.ForSession("/etc/keys")
	if strings.Contains(js, "sk-acme-1") || strings.Contains(js, "team-secret") {
		t.Fatalf("session provider JSON holds a secret: %s", js)
	}
	for _, want := range []string{`"apiKey":"{file:/etc/keys/provider.acme.apiKey}"`, `"X-Team":"{file:/etc/keys/provider.acme.header.X-Team}"`, `"baseURL":"https://models.acme.test/v1"`} {
		if !strings.Contains(js, want) {
			t.Errorf("session provider JSON lacks %s: %s", want, js)
		}
	}
	if string(files["provider.acme.apiKey"]) != "sk-acme-1" || string(files["provider.acme.header.X-Team"]) != "team-secret" || len(files) != 2 {
		t.Errorf("files %q", files)
	}
}

func TestCatalogResolve(t *testing.T) {
	set, _ := Parse([]byte(acme))
	none := &Catalog{}
	if _, err := none.Resolve("acme/big"); !errors.Is(err, ErrNoProviders) {
		t.Errorf("no providers: %v", err)
	}
	// The gateway alone behaves as before: any name, and "" for the configured default.
	gw := &Catalog{Defaults: Defaults{LiteLLMBaseURL: "http://gw/v1", DefaultModel: "gpt-4o-mini"}}
	for in, want := range map[string]string{"": "", "m": "m", "litellm/m": "litellm/m"} {
		if got, err := gw.Resolve(in); err != nil || got != want {
			t.Errorf("gateway Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := gw.Resolve("acme/big"); err == nil || !strings.Contains(err.Error(), "litellm/<any model of the gateway>") {
		t.Errorf("gateway, unknown provider: %v", err)
	}
	c := &Catalog{Stored: set, Defaults: Defaults{DefaultModel: "gpt-4o-mini"}}
	for in, want := range map[string]string{"": "acme/big", "acme/small": "acme/small", "small": "acme/small"} {
		if got, err := c.Resolve(in); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := c.Resolve("acme/huge")
	if err == nil || err.Error() != `model: "acme/huge" is not available; available models: acme/big, acme/small` {
		t.Errorf("unknown model: %v", err)
	}
	c.Defaults.DefaultModel = "acme/small"
	if got, _ := c.Resolve(""); got != "acme/small" {
		t.Errorf("default model %q", got)
	}
	ms := c.Models()
	if len(ms) != 2 || ms[0] != (apiv1.Model{ID: "acme/big", Name: "Acme Big", Provider: "acme", ProviderName: "Acme"}) || !ms[1].Default {
		t.Errorf("Models = %+v", ms)
	}
	// Both: stored providers and the gateway.
	c.Defaults.LiteLLMBaseURL = "http://gw/v1"
	if got, err := c.Resolve("litellm/anything"); err != nil || got != "litellm/anything" {
		t.Errorf("gateway model beside stored providers: %q, %v", got, err)
	}
	if ms := c.Models(); len(ms) != 3 || ms[2].Provider != "litellm" || !ms[2].AnyModel {
		t.Errorf("Models with the gateway = %+v", ms)
	}
}

// Real OpenCode options that merely contain a secret-sounding word are settings, not
// secrets: they pass Parse and stay in the clear.
func TestParseKeepsSettingsThatSoundSecret(t *testing.T) {
	body := `{"acme": {"options": {"setCacheKey": true, "maxTokens": "4096", "tokenizer": "cl100k", "accessKeyId": "AKIA-id"},
	  "models": {"m": {"options": {"maxTokens": "1024", "promptCacheKey": "k1"}}}}}`
	set, err := Parse([]byte(body))
	if err != nil {
		t.Fatalf("Parse refused OpenCode settings: %v", err)
	}
	rows := set.ToStore()
	if len(rows[0].Secrets) != 0 {
		t.Errorf("settings sealed as secrets: %v", rows[0].Secrets)
	}
	for _, f := range []string{"setCacheKey", "maxTokens", "tokenizer", "accessKeyId", "temperature", "promptCacheKey"} {
		if SecretField(f) {
			t.Errorf("SecretField(%q) = true, want a setting", f)
		}
	}
	for _, f := range []string{"apiKey", "api_key", "x-api-key", "token", "accessToken", "sessionToken", "clientSecret", "secretAccessKey", "password", "Authorization", "privateKey"} {
		if !SecretField(f) {
			t.Errorf("SecretField(%q) = false, want a credential", f)
		}
	}
}

// Secrets anywhere in a provider (a model's headers and options, other secret-named
// options) are sealed like options.apiKey: stored apart, redacted, kept by the
// placeholder and handed to sessions as files, never in the JSON.
func TestSecretsAnywhereAreSealed(t *testing.T) {
	body := `{"acme": {"options": {"apiKey": "sk-top", "sessionToken": "tok-opt"},
	  "models": {"gpt-4.1": {"headers": {"X-Model-Key": "hdr-model"}, "options": {"apiKey": "sk-model", "maxTokens": "1024"}}}}}`
	set, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"sk-top", "tok-opt", "hdr-model", "sk-model"}
	rows := set.ToStore()
	for _, v := range secrets {
		if strings.Contains(string(rows[0].Config), v) {
			t.Errorf("stored config holds %s: %s", v, rows[0].Config)
		}
	}
	if rows[0].Secrets["models.gpt-4~11.headers.X-Model-Key"] != "hdr-model" || rows[0].Secrets["models.gpt-4~11.options.apiKey"] != "sk-model" ||
		rows[0].Secrets["options.sessionToken"] != "tok-opt" || len(rows[0].Secrets) != 4 {
		t.Errorf("stored secrets %v", rows[0].Secrets)
	}
	back, err := FromStore(rows)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(back)
	b, _ := json.Marshal(set)
	if string(a) != string(b) {
		t.Errorf("round trip through the store:\n%s\nwant\n%s", a, b)
	}
	red, _ := json.Marshal(set.Redacted())
	for _, v := range secrets {
		if strings.Contains(string(red), v) {
			t.Errorf("redacted holds %s: %s", v, red)
		}
	}
	if strings.Count(string(red), apiv1.SecretPlaceholder) != 4 || !strings.Contains(string(red), `"maxTokens":"1024"`) {
		t.Errorf("redacted: %s", red)
	}
	again, err := Parse(red)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.KeepSecrets(back); err != nil {
		t.Fatal(err)
	}
	c, _ := json.Marshal(again)
	if string(c) != string(b) {
		t.Errorf("placeholders kept:\n%s\nwant\n%s", c, b)
	}
	js, files := set.ForSession("/etc/keys")
	for _, v := range secrets {
		if strings.Contains(js, v) {
			t.Errorf("session JSON holds %s: %s", v, js)
		}
	}
	if len(files) != 4 || string(files["provider.acme.options.sessionToken"]) != "tok-opt" {
		t.Errorf("files %q", files)
	}
	for key, v := range files {
		if !strings.Contains(js, `{file:/etc/keys/`+key+`}`) || !secretKeyRe.MatchString(key) {
			t.Errorf("file %s (%s) is not referenced by the session JSON as a valid Secret key: %s", key, v, js)
		}
	}
}
