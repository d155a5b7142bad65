package sessioninit

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// gitRepo makes a local repository with a main and a feature branch.
func gitRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("add", ".")
	run("commit", "-q", "-m", "init")
	run("checkout", "-q", "-b", "feature")
	if err := os.WriteFile(filepath.Join(dir, "FEATURE"), []byte("yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("add", ".")
	run("commit", "-q", "-m", "feature")
	run("checkout", "-q", "main")
	return dir
}

func readConfig(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("config is not JSON: %v\n%s", err, b)
	}
	return m
}

func TestRunClonesBranchAndWritesConfig(t *testing.T) {
	repo := gitRepo(t)
	ws := filepath.Join(t.TempDir(), "workspace")
	cfgPath := filepath.Join(t.TempDir(), "etc", "opencode.json")
	var log bytes.Buffer
	err := Run(context.Background(), Options{
		Repo: "file://" + repo, Branch: "feature", Workspace: ws, ConfigPath: cfgPath,
		Model: "gpt-4o-mini", LiteLLMBaseURL: "http://litellm:4000/v1", AllowLocalRepo: true, Stderr: &log,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if _, err := os.Stat(filepath.Join(ws, "FEATURE")); err != nil {
		t.Errorf("branch feature not checked out: %v", err)
	}
	out, err := exec.Command("git", "-C", ws, "rev-list", "--count", "HEAD").Output()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("want a shallow clone (1 commit), got %q (%v)", out, err)
	}
	m := readConfig(t, cfgPath)
	if m["model"] != "litellm/gpt-4o-mini" || m["small_model"] != "litellm/gpt-4o-mini" {
		t.Errorf("model = %v / %v", m["model"], m["small_model"])
	}
	if m["autoupdate"] != false || m["share"] != "disabled" {
		t.Errorf("autoupdate/share = %v/%v", m["autoupdate"], m["share"])
	}
	if !reflect.DeepEqual(m["enabled_providers"], []any{"litellm"}) {
		t.Errorf("enabled_providers = %v", m["enabled_providers"])
	}
	p := m["provider"].(map[string]any)["litellm"].(map[string]any)
	opts := p["options"].(map[string]any)
	if opts["apiKey"] != "{env:LITELLM_API_KEY}" || opts["baseURL"] != "http://litellm:4000/v1" {
		t.Errorf("provider options = %v", opts)
	}
	limit := p["models"].(map[string]any)["gpt-4o-mini"].(map[string]any)["limit"].(map[string]any)
	// OpenCode's default max_tokens (32000) is refused by small models' gateways.
	if limit["output"] != float64(4096) {
		t.Errorf("limit.output = %v, want 4096", limit["output"])
	}
}

func TestRunSkipsExistingCheckout(t *testing.T) {
	repo := gitRepo(t)
	ws := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "opencode.json")
	o := Options{Repo: repo, Workspace: ws, ConfigPath: cfg, AllowLocalRepo: true}
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	// The user's work in a persistent workspace survives a restart.
	if err := os.WriteFile(filepath.Join(ws, "work.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "work.txt")); err != nil || string(b) != "mine" {
		t.Errorf("work lost: %q %v", b, err)
	}
	// OpenCode's state under StateDir stays out of git, listed once however often the
	// session starts.
	if err := os.MkdirAll(filepath.Join(ws, StateDir, "data", "opencode"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, StateDir, "data", "opencode", "db"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", ws, "status", "--porcelain").Output()
	if err != nil || strings.TrimSpace(string(out)) != "?? work.txt" {
		t.Errorf("git status = %q, %v; want only the user's file", out, err)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, ".git", "info", "exclude")); strings.Count(string(b), "/"+StateDir+"/") != 1 {
		t.Errorf("exclude file:\n%s", b)
	}
}

func TestRunErrorsNameTheProblem(t *testing.T) {
	repo := gitRepo(t)
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"missing branch", Options{Repo: repo, Branch: "nope", AllowLocalRepo: true}, `branch "nope" does not exist`},
		{"missing repo", Options{Repo: filepath.Join(repo, "absent"), AllowLocalRepo: true}, "check the repository URL"},
		{"local path refused", Options{Repo: repo}, "use an https:// or ssh:// URL"},
		{"file url refused", Options{Repo: "file://" + repo}, "use an https:// or ssh:// URL"},
		{"ext transport refused", Options{Repo: "ext::sh -c touch% /tmp/pwned"}, "invalid repository"},
		{"http refused", Options{Repo: "http://example.com/x.git"}, "use an https://"},
		{"option injection", Options{Repo: "--upload-pack=touch /tmp/x"}, "must not start with '-'"},
		// Refused here and, with the same rule, by the API before the session exists.
		{"option-like scp user", Options{Repo: "-x@github.com:org/repo"}, "must not start with '-'"},
		{"scp absolute path", Options{Repo: "git@github.com:/abs/repo"}, "ssh://git@github.com/abs/repo"},
		{"option-like ssh host", Options{Repo: "ssh://-oProxyCommand=x/org/repo"}, "the host must not start with '-'"},
		{"password in url", Options{Repo: "https://user:s3cret@example.com/org/repo.git"}, "contains a password"},
		{"bad branch", Options{Repo: repo, Branch: "--help", AllowLocalRepo: true}, "invalid branch"},
		{"literal key", Options{ProviderJSON: `{"p":{"options":{"apiKey":"sk-123"}}}`}, "literal value"},
		{"bad provider json", Options{ProviderJSON: `[1]`}, "not a JSON object"},
		{"bad base url", Options{LiteLLMBaseURL: "litellm:4000"}, "not an http(s) URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Workspace = t.TempDir()
			tc.o.ConfigPath = filepath.Join(t.TempDir(), "c.json")
			err := Run(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "sk-123") {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}
}

// TestCredentialsNeverReachGitOrTheLog: a URL with a password is refused before git runs
// (the API refuses it too), and the refusal does not repeat the password.
func TestCredentialsNeverReachGitOrTheLog(t *testing.T) {
	o := Options{Repo: "https://user:s3cret@127.0.0.1:1/org/repo.git", Workspace: t.TempDir(), ConfigPath: filepath.Join(t.TempDir(), "c.json")}
	var log bytes.Buffer
	o.Stderr = &log
	err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "contains a password") || strings.Contains(log.String(), "cloning") {
		t.Fatalf("want the URL refused before cloning: %v\n%s", err, log.String())
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(log.String(), "s3cret") {
		t.Errorf("password leaked: %v\n%s", err, log.String())
	}
}

func TestProviderJSON(t *testing.T) {
	b, err := BuildConfig(Options{
		ProviderJSON: `{"openai":{"options":{"apiKey":"{env:OPENAI_API_KEY}"}},"anthropic":{"options":{"apiKey":"{file:/keys/a}"}}}`,
		Model:        "m1",
	})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["model"] != "anthropic/m1" {
		t.Errorf("model = %v, want the first provider's", m["model"])
	}
	if !reflect.DeepEqual(m["enabled_providers"], []any{"anthropic", "openai"}) {
		t.Errorf("enabled_providers = %v", m["enabled_providers"])
	}
}

// TestProviderJSONSettingsAreNotKeys: OpenCode settings whose names contain a
// secret-sounding word are not literal keys (the same rule as the agent's providers).
func TestProviderJSONSettingsAreNotKeys(t *testing.T) {
	if _, err := BuildConfig(Options{ProviderJSON: `{"p":{"options":{"setCacheKey":true,"maxTokens":"4096","apiKey":"{file:/k}"},"models":{"m":{"options":{"maxTokens":"1024"}}}}}`}); err != nil {
		t.Errorf("settings refused: %v", err)
	}
	if _, err := BuildConfig(Options{ProviderJSON: `{"p":{"models":{"m":{"options":{"sessionToken":"tok-1"}}}}}`}); err == nil || !strings.Contains(err.Error(), "provider.p.models.m.options.sessionToken") {
		t.Errorf("a model's literal token: %v, want it refused by path", err)
	}
}

func TestArgsRoundTripThroughFlags(t *testing.T) {
	in := Options{Repo: "https://github.com/org/repo", Branch: "dev", Workspace: "/workspace", ConfigPath: "/etc/opencode/opencode.json",
		Model: "litellm/x", LiteLLMBaseURL: "http://l/v1", ProviderJSON: `{"a":{}}`,
		GitCredentials: "/etc/cake-agents/git/credentials", GHHosts: "/etc/cake-agents/git/gh-hosts.yml", KeyAtClaim: true}
	var out Options
	fs := pflag.NewFlagSet("session-init", pflag.ContinueOnError)
	out.BindFlags(fs)
	if err := fs.Parse(in.Args()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

// TestKeyAtClaimLeavesTheKeyOut: a warm pool pod's config names no LiteLLM key, since
// OpenCode prefers a configured reference (even to an unset variable) over the key the
// agent stores at claim; a session pod's names the environment variable.
func TestKeyAtClaimLeavesTheKeyOut(t *testing.T) {
	for _, atClaim := range []bool{false, true} {
		b, err := BuildConfig(Options{Model: "m", LiteLLMBaseURL: "http://litellm:4000/v1", KeyAtClaim: atClaim})
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Provider map[string]struct {
				Options map[string]any `json:"options"`
			} `json:"provider"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		opts := cfg.Provider["litellm"].Options
		key, has := opts["apiKey"]
		if atClaim && has {
			t.Errorf("key at claim: the config names a key %v", key)
		}
		if !atClaim && key != "{env:LITELLM_API_KEY}" {
			t.Errorf("the config's key is %v, want the environment reference", key)
		}
		if opts["baseURL"] != "http://litellm:4000/v1" {
			t.Errorf("key at claim %v: base URL %v", atClaim, opts["baseURL"])
		}
	}
}
