package app

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// parseWith binds the options with env and parses args, returning the parse error (a bad
// flag value) or load's (a bad environment value or combination).
func parseWith(env map[string]string, args ...string) (*Config, error) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	load := BindFlags(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return load()
}

// The flags have their settings' types, which --help shows: --header-auth is a switch, the
// limits are quantities, the timeouts durations.
func TestFlagsAreTyped(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	BindFlags(fs, func(string) string { return "" })
	for flag, want := range map[string]string{
		"header-auth": "bool", "leader-election": "bool",
		"max-active-sessions": "int", "warm-pool-size": "int", "kube-api-qps": "int", "kube-api-burst": "int",
		"session-ttl": "duration", "session-idle-timeout": "duration", "token-max-ttl": "duration", "lease-duration": "duration",
		"session-cpu-request": "quantity", "session-memory-limit": "quantity", "session-storage-size": "quantity",
		"admin-groups": "strings", "trusted-proxy-cidrs": "strings",
		"litellm-session-budget": "usd", "litellm-user-budget": "usd", "litellm-key-duration": "duration",
		"namespace": "string", "database-url": "string",
		"github-app-id": "int", "github-app-installation-id": "int",
	} {
		f := fs.Lookup(flag)
		if f == nil {
			t.Errorf("--%s missing", flag)
			continue
		}
		if f.Value.Type() != want {
			t.Errorf("--%s is a %s, want %s", flag, f.Value.Type(), want)
		}
	}
	usage := fs.FlagUsages()
	for _, want := range []string{
		"      --header-auth                          trust identity headers",
		"      --session-ttl duration ",
		"      --max-active-sessions int ",
		"      --session-cpu-request quantity ",
		"(default 250m)",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("--help misses %q:\n%s", want, usage)
		}
	}
}

func TestTypedFlagsParse(t *testing.T) {
	cfg, err := parseWith(map[string]string{"AGENT_LEADER_ELECTION": "true", "AGENT_MAX_ACTIVE_SESSIONS": "7"},
		"--header-auth", "--session-ttl", "24h", "--leader-election=false", "--session-cpu-limit", "", "--admin-groups", " ops , ,admins")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.HeaderAuthEnabled || cfg.LeaderElection || cfg.MaxActiveSessions != 7 || cfg.SessionTTL != 24*time.Hour ||
		cfg.SessionCPULimit != "" || cfg.SessionCPURequest != "250m" || strings.Join(cfg.AdminGroups, "|") != "ops|admins" {
		t.Errorf("config: %+v", cfg)
	}
	// Budgets are dollar amounts; the chart renders them as numbers.
	cfg, err = parseWith(map[string]string{"LITELLM_SESSION_BUDGET": "2.50", "LITELLM_KEY_DURATION": "8h", "LITELLM_BUDGET_PERIOD": "720h"}, "--litellm-user-budget", "$25")
	if err != nil || cfg.LiteLLMSessionBudget != 2.5 || cfg.LiteLLMUserBudget != 25 || cfg.LiteLLMKeyDuration != 8*time.Hour ||
		cfg.LiteLLMUserBudgetPeriod != 720*time.Hour {
		t.Errorf("LiteLLM budgets: %v %+v", err, cfg)
	}
	// Profiles are served on loopback only; the Kubernetes client's rate limit is tunable.
	cfg, err = parseWith(map[string]string{"AGENT_DEBUG_ADDR": "127.0.0.1:6060", "AGENT_KUBE_API_QPS": "200"}, "--kube-api-burst", "500")
	if err != nil || cfg.DebugAddr != "127.0.0.1:6060" || cfg.KubeAPIQPS != 200 || cfg.KubeAPIBurst != 500 {
		t.Errorf("debug address and API rate: %v %+v", err, cfg)
	}
	for _, addr := range []string{"localhost:6060", "[::1]:6060"} {
		if _, err := parseWith(nil, "--debug-addr", addr); err != nil {
			t.Errorf("--debug-addr %s: %v", addr, err)
		}
	}
	// The defaults must be within the admin's maxima: a default of none under a maximum,
	// or beyond it, names both settings.
	for _, env := range []map[string]string{
		{"AGENT_SESSION_MAX_IDLE_TIMEOUT": "8h", "AGENT_SESSION_IDLE_TIMEOUT": "0"},
		{"AGENT_SESSION_MAX_IDLE_TIMEOUT": "8h", "AGENT_SESSION_IDLE_TIMEOUT": "9h"},
	} {
		if _, err := parseWith(env); err == nil || !strings.Contains(err.Error(), "--session-idle-timeout") || !strings.Contains(err.Error(), "--session-max-idle-timeout") {
			t.Errorf("%v: %v", env, err)
		}
	}
	if _, err := parseWith(map[string]string{"AGENT_SESSION_MAX_TTL": "48h"}); err == nil || !strings.Contains(err.Error(), "=0 (none) is beyond --session-max-ttl") {
		t.Errorf("TTL maximum with no default TTL: %v", err)
	}
	cfg, err = parseWith(map[string]string{"AGENT_SESSION_MAX_IDLE_TIMEOUT": "8h", "AGENT_SESSION_MAX_TTL": "48h", "AGENT_SESSION_TTL": "24h"})
	if err != nil || cfg.SessionMaxIdleTimeout != 8*time.Hour || cfg.SessionMaxTTL != 48*time.Hour {
		t.Errorf("maxima: %v %+v", err, cfg)
	}
	// "0" and empty durations mean none, as the chart renders them.
	cfg, err = parseWith(map[string]string{"AGENT_SESSION_IDLE_TIMEOUT": "0", "AGENT_SESSION_TTL": "0"})
	if err != nil || cfg.SessionIdleTimeout != 0 || cfg.SessionTTL != 0 {
		t.Errorf("zero durations: %v %+v", err, cfg)
	}
}

// A bad value is refused at start naming the flag and the environment variable, whether it
// came from one or the other.
func TestBadValuesNameTheFlagAndTheEnvVar(t *testing.T) {
	for _, tc := range []struct {
		flag, env, value, want string
	}{
		{"header-auth", "AGENT_HEADER_AUTH_ENABLED", "maybe", "want true or false"},
		{"max-active-sessions", "AGENT_MAX_ACTIVE_SESSIONS", "-1", "want a whole number >= 0"},
		{"max-active-sessions", "AGENT_MAX_ACTIVE_SESSIONS", "five", "want a whole number >= 0"},
		{"warm-pool-size", "AGENT_WARM_POOL_SIZE", "-2", "want a whole number >= 0"},
		{"kube-api-qps", "AGENT_KUBE_API_QPS", "-5", "want a whole number >= 0"},
		{"debug-addr", "AGENT_DEBUG_ADDR", ":6060", "want a loopback address"},
		{"debug-addr", "AGENT_DEBUG_ADDR", "0.0.0.0:6060", "want a loopback address"},
		{"debug-addr", "AGENT_DEBUG_ADDR", "10.0.0.1:6060", "want a loopback address"},
		{"session-ttl", "AGENT_SESSION_TTL", "forever", "want a duration such as 30m or 2h"},
		{"lease-duration", "AGENT_LEASE_DURATION", "-15s", "want a duration such as 30m or 2h"},
		{"session-cpu-request", "AGENT_SESSION_CPU_REQUEST", "lots", "want a quantity such as 500m, 2 or 2Gi"},
		{"session-storage-size", "AGENT_SESSION_STORAGE_SIZE", "10GB", "want a quantity such as 500m, 2 or 2Gi"},
		{"log-level", "AGENT_LOG_LEVEL", "loud", "want trace, debug, info, warn or error"},
		{"log-format", "AGENT_LOG_FORMAT", "xml", "want text or json"},
		{"image-pull-policy", "AGENT_IMAGE_PULL_POLICY", "Sometimes", "want Always, IfNotPresent or Never"},
		{"trusted-proxy-cidrs", "AGENT_TRUSTED_PROXY_CIDRS", "10.0.0.1", "is not a CIDR"},
		{"litellm-session-budget", "LITELLM_SESSION_BUDGET", "-1", "want an amount of US dollars >= 0"},
		{"litellm-user-budget", "LITELLM_USER_BUDGET", "ten", "want an amount of US dollars >= 0"},
	} {
		_, envErr := parseWith(map[string]string{tc.env: tc.value})
		_, flagErr := parseWith(nil, "--"+tc.flag+"="+tc.value)
		for from, err := range map[string]error{"env": envErr, "flag": flagErr} {
			if err == nil {
				t.Errorf("%s %s=%q accepted", from, tc.flag, tc.value)
				continue
			}
			for _, want := range []string{"--" + tc.flag, "$" + tc.env, tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s %s=%q: error does not say %q:\n%v", from, tc.flag, tc.value, want, err)
				}
			}
		}
	}
}

// Flags win over the environment, also over a bad value there.
func TestFlagReplacesABadEnvValue(t *testing.T) {
	cfg, err := parseWith(map[string]string{"AGENT_SESSION_TTL": "forever", "AGENT_HEADER_AUTH_ENABLED": "true"},
		"--session-ttl", "2h", "--header-auth=false")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SessionTTL != 2*time.Hour || cfg.HeaderAuthEnabled {
		t.Errorf("config: %+v", cfg)
	}
}

// `agent serve` refuses a bad flag before it starts anything.
func TestServeRefusesABadFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	root := NewRootCommand(&out, &errOut)
	root.SetArgs([]string{"serve", "--header-auth=maybe"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), `"--header-auth"`) || !strings.Contains(err.Error(), "$AGENT_HEADER_AUTH_ENABLED") {
		t.Errorf("err = %v", err)
	}
}

// The GitHub App settings: typed, and refused when they cannot work (an id without the
// key it signs with, an installation without an App, an API URL that is not one).
func TestGitHubAppSettings(t *testing.T) {
	cfg, err := parseWith(map[string]string{"AGENT_GITHUB_APP_ID": "42", "AGENT_GITHUB_APP_PRIVATE_KEY_FILE": "/etc/github-app/private-key.pem"},
		"--github-app-installation-id", "1001", "--github-api-url", "https://ghe.example.com/api/v3")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GitHubAppID != 42 || cfg.GitHubAppPrivateKeyFile != "/etc/github-app/private-key.pem" || cfg.GitHubAppInstallationID != 1001 || cfg.GitHubAPIURL != "https://ghe.example.com/api/v3" {
		t.Errorf("config: %+v", cfg)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AGENT_GITHUB_APP_ID": "42"}, "must be set together"},
		{map[string]string{"AGENT_GITHUB_APP_PRIVATE_KEY_FILE": "/k.pem"}, "must be set together"},
		{map[string]string{"AGENT_GITHUB_APP_INSTALLATION_ID": "7"}, "--github-app-installation-id [$AGENT_GITHUB_APP_INSTALLATION_ID] needs --github-app-id"},
		{map[string]string{"AGENT_GITHUB_APP_ID": "app"}, "want a whole number >= 0"},
		{map[string]string{"AGENT_GITHUB_API_URL": "api.github.com"}, "is not a URL such as https://api.github.com"},
	} {
		if _, err := parseWith(tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.env, err, tc.want)
		}
	}
}
