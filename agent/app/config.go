// Package app wires the agent together: configuration from flags and environment,
// the logger, the Kubernetes client, the store, the session controller and the HTTP
// servers, and their lifecycle from start to graceful shutdown.
package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"

	"github.com/cakeai/cake-agents/agent/store/storeopen"
)

// Config is everything `agent serve` can be told. Each field is bound to one flag and
// one environment variable (see Options); the chart sets the environment variables,
// people running the agent by hand usually use flags. Flags win over the environment.
type Config struct {
	HTTPAddr    string
	HTTPSAddr   string
	TLSCertFile string
	TLSKeyFile  string
	// ServingCAConfigMap is the ConfigMap (in Namespace) where the agent publishes the CA
	// of its serving certificate so the plugin can verify it.
	ServingCAConfigMap string

	Kubeconfig string
	Namespace  string
	PodName    string
	Release    string
	// ChartVersion is the version of the Helm chart that installed the agent, reported by
	// GET /api/v1/version (kubectl agents version).
	ChartVersion string
	ExternalURL  string
	// SessionWebDomain, when set, serves each session's OpenCode web UI at
	// <id>.<SessionWebDomain> (see server.SessionWeb); the scheme is ExternalURL's.
	SessionWebDomain string

	DatabaseURL string
	AuthSecret  string

	LogFormat string
	LogLevel  string

	SessionNamespace    string
	DataPlaneImage      string
	DataPlaneInitImage  string
	ImagePullPolicy     string
	ImagePullSecrets    []string
	SessionCPURequest   string
	SessionCPULimit     string
	SessionMemRequest   string
	SessionMemLimit     string
	SessionNodeSelector map[string]string
	SessionTolerations  string // JSON array of corev1.Toleration
	SessionStorageClass string
	SessionStorageSize  string
	SessionCAConfigMap  string
	SessionCAKey        string
	SessionIdleTimeout  time.Duration
	SessionTTL          time.Duration
	// SessionMaxIdleTimeout and SessionMaxTTL bound what a create may ask for (0: no
	// bound); with one set, "never" (0) is refused.
	SessionMaxIdleTimeout time.Duration
	SessionMaxTTL         time.Duration
	// TranscriptRetention is how long a deleted session's transcript is kept (0: forever).
	TranscriptRetention time.Duration
	MaxActiveSessions   int
	WarmPoolSize        int
	ReconcileInterval   time.Duration
	// KubeAPIQPS and KubeAPIBurst are the client-side rate limit of the agent's Kubernetes
	// client (sessions.KubeQPS and KubeBurst when zero).
	KubeAPIQPS   int
	KubeAPIBurst int
	// DebugAddr serves Go's pprof profiles when set; only a loopback address is accepted.
	DebugAddr string

	HeaderAuthEnabled     bool
	HeaderAuthEmailHeader string
	HeaderAuthEmailClaim  string
	HeaderAuthUserHeader  string
	HeaderAuthJWTHeader   string
	HeaderAuthGroups      []string
	TrustedProxyCIDRs     []string
	JWKSURL               string
	JWTIssuer             string
	JWTAudiences          []string
	TokenAudiences        []string
	AdminGroups           []string
	TokenDefaultTTL       time.Duration
	TokenMaxTTL           time.Duration

	LeaderElection     bool
	LeaseName          string
	LeaseDuration      time.Duration
	LeaseRenewDeadline time.Duration
	LeaseRetryPeriod   time.Duration

	LiteLLMBaseURL string
	// LiteLLMAPIKey is LiteLLM's master key: the agent makes each session its own
	// virtual key with it and never hands it to a session.
	LiteLLMAPIKey        string
	LiteLLMSessionBudget float64
	LiteLLMUserBudget    float64
	// LiteLLMUserBudgetPeriod resets LiteLLMUserBudget every period (0: never).
	LiteLLMUserBudgetPeriod time.Duration
	LiteLLMKeyDuration      time.Duration
	DefaultModel            string
	ProviderJSON            string
	ProvidersFile           string

	// GitHubClientID is the OAuth app behind `kubectl agents github link`; GitHubURL
	// the GitHub web host its device flow runs on.
	GitHubClientID string
	GitHubURL      string
	// GitHubAPIURL is the REST API root (empty: derived from GitHubURL).
	GitHubAPIURL string
	// GitHubAppID (0: off) and GitHubAppPrivateKeyFile are the GitHub App whose
	// installation tokens sessions on GitHub repositories get when their owner linked no
	// account; GitHubAppInstallationID (0: looked up per repository) pins its installation.
	GitHubAppID             int
	GitHubAppPrivateKeyFile string
	GitHubAppInstallationID int

	// LinearEnabled serves POST /integrations/linear/webhook (needs the API key and the
	// webhook's signing secret); LinearAPIURL is its GraphQL endpoint; issues labelled
	// LinearLabel start sessions too.
	LinearEnabled       bool
	LinearAPIKey        string
	LinearWebhookSecret string
	LinearAPIURL        string
	LinearLabel         string
	SlackBotToken       string
	SlackSigningSecret  string
	// SlackEnabled serves POST /integrations/slack/events (needs the token and the
	// signing secret); SlackAPIURL is the Web API root the bot calls.
	SlackEnabled bool
	SlackAPIURL  string
}

// Option describes one configuration setting: its flag, its environment variable, the
// kind of value it takes and its help. The chart test checks every env var the chart sets
// is listed here and parses.
type Option struct {
	Flag    string
	Env     string
	Kind    Kind
	Usage   string
	Default string
	Secret  bool // never logged or printed
}

// Options returns every setting, in the order `agent serve --help` shows them.
func Options() []Option {
	return []Option{
		{Flag: "http-addr", Env: "AGENT_HTTP_ADDR", Default: ":8080", Usage: "address of the plain-HTTP listener (web UI and API behind the authenticating proxy / ingress)"},
		{Flag: "https-addr", Env: "AGENT_HTTPS_ADDR", Default: ":8443", Usage: "address of the TLS listener the plugin reaches by port-forward (client certificates accepted); empty disables it"},
		{Flag: "tls-cert-file", Env: "AGENT_TLS_CERT_FILE", Usage: "serving certificate (PEM); generated at start when empty"},
		{Flag: "tls-key-file", Env: "AGENT_TLS_KEY_FILE", Usage: "serving key (PEM) for --tls-cert-file"},
		{Flag: "serving-ca-configmap", Env: "AGENT_SERVING_CA_CONFIGMAP", Default: "cake-agents-serving-ca", Usage: "ConfigMap in --namespace where the serving CA is published for the plugin (empty: don't publish)"},
		{Flag: "kubeconfig", Env: "KUBECONFIG", Usage: "kubeconfig to use outside a cluster; in-cluster config when empty and running in a pod"},
		{Flag: "namespace", Env: "AGENT_NAMESPACE", Default: "cake-agents", Usage: "namespace the agent runs in (Lease, serving-CA ConfigMap)"},
		{Flag: "pod-name", Env: "AGENT_POD_NAME", Usage: "this replica's pod name (leader-election identity; hostname when empty)"},
		{Flag: "release", Env: "AGENT_RELEASE", Default: "cake-agents", Usage: "Helm release name, set as app.kubernetes.io/instance on session objects"},
		{Flag: "chart-version", Env: "AGENT_CHART_VERSION", Usage: "version of the Helm chart that installed the agent, reported by its version endpoint (the chart sets it)"},
		{Flag: "external-url", Env: "AGENT_EXTERNAL_URL", Usage: "public URL of the web UI/API (e.g. https://agents.example.com), used in links"},
		{Flag: "session-web-domain", Env: "AGENT_SESSION_WEB_DOMAIN", Usage: "serve each session's own OpenCode web UI at <session id>.<this domain> (e.g. agents.example.com, with wildcard DNS and certificate routed to the agent; a port may follow for local use); empty: not served"},
		{Flag: "database-url", Env: "DATABASE_URL", Default: "sqlite:///data/agents.db", Secret: true, Usage: "sqlite:///path/to.db or postgres://user:pass@host/db; when unset or empty and PG* variables are set, pgx builds the connection from them"},
		{Flag: "auth-secret", Env: "AGENT_AUTH_SECRET", Secret: true, Usage: "secret for cookie signing and credential encryption at rest (required with Postgres; generated and stored when empty with SQLite)"},
		{Flag: "log-format", Env: "AGENT_LOG_FORMAT", Default: "text", Usage: "log format: text or json"},
		{Flag: "log-level", Env: "AGENT_LOG_LEVEL", Default: "info", Usage: "log level: trace, debug, info, warn, error"},
		{Flag: "session-namespace", Env: "AGENT_SESSION_NAMESPACE", Usage: "namespace for session pods (default: --namespace)"},
		{Flag: "data-plane-image", Env: "AGENT_DATA_PLANE_IMAGE", Default: "cake-agents/data-plane:latest", Usage: "image of the session container (OpenCode)"},
		{Flag: "data-plane-init-image", Env: "AGENT_DATA_PLANE_INIT_IMAGE", Default: "cake-agents/data-plane-init:latest", Usage: "image of the session init container (workspace preparation)"},
		{Flag: "image-pull-policy", Env: "AGENT_IMAGE_PULL_POLICY", Default: "IfNotPresent", Usage: "pull policy of session images: Always, IfNotPresent or Never"},
		{Flag: "image-pull-secrets", Kind: KindList, Env: "AGENT_IMAGE_PULL_SECRETS", Usage: "comma-separated image pull Secrets for session pods"},
		{Flag: "session-cpu-request", Kind: KindQuantity, Env: "AGENT_SESSION_CPU_REQUEST", Default: "250m", Usage: "CPU request of the session container"},
		{Flag: "session-cpu-limit", Kind: KindQuantity, Env: "AGENT_SESSION_CPU_LIMIT", Default: "2", Usage: "CPU limit of the session container (empty: none)"},
		{Flag: "session-memory-request", Kind: KindQuantity, Env: "AGENT_SESSION_MEMORY_REQUEST", Default: "512Mi", Usage: "memory request of the session container"},
		{Flag: "session-memory-limit", Kind: KindQuantity, Env: "AGENT_SESSION_MEMORY_LIMIT", Default: "2Gi", Usage: "memory limit of the session container (empty: none)"},
		{Flag: "session-node-selector", Env: "AGENT_SESSION_NODE_SELECTOR", Usage: "node selector for session pods as key=value,key=value"},
		{Flag: "session-tolerations", Env: "AGENT_SESSION_TOLERATIONS", Usage: "tolerations for session pods as a JSON array of Kubernetes tolerations"},
		{Flag: "session-storage-class", Env: "AGENT_SESSION_STORAGE_CLASS", Usage: "storage class of persistent session workspaces (empty: cluster default)"},
		{Flag: "session-storage-size", Kind: KindQuantity, Env: "AGENT_SESSION_STORAGE_SIZE", Default: "10Gi", Usage: "size of persistent session workspaces"},
		{Flag: "session-ca-configmap", Env: "AGENT_SESSION_CA_CONFIGMAP", Usage: "ConfigMap in the session namespace with the complete PEM bundle of CAs sessions trust (public roots included: it replaces the image's for git); empty: the image's roots"},
		{Flag: "session-ca-key", Env: "AGENT_SESSION_CA_KEY", Default: "ca-certificates.crt", Usage: "key of --session-ca-configmap holding the PEM bundle"},
		{Flag: "session-idle-timeout", Kind: KindDuration, Env: "AGENT_SESSION_IDLE_TIMEOUT", Default: "1h", Usage: "stop a session after this long without activity (0 disables)"},
		{Flag: "session-ttl", Kind: KindDuration, Env: "AGENT_SESSION_TTL", Default: "0", Usage: "delete a session this long after creation (0 disables)"},
		{Flag: "session-max-idle-timeout", Kind: KindDuration, Env: "AGENT_SESSION_MAX_IDLE_TIMEOUT", Default: "0", Usage: "longest idle timeout a session may ask for; when set, asking for none (0) is refused (0: no maximum)"},
		{Flag: "session-max-ttl", Kind: KindDuration, Env: "AGENT_SESSION_MAX_TTL", Default: "0", Usage: "longest time to live a session may ask for; when set, asking for none (0) is refused (0: no maximum)"},
		{Flag: "transcript-retention", Kind: KindDuration, Env: "AGENT_TRANSCRIPT_RETENTION", Default: "720h", Usage: "how long the recorded conversation of a deleted session stays readable with kubectl agents session logs before it is removed (0: kept forever)"},
		{Flag: "warm-pool-size", Kind: KindInt, Env: "AGENT_WARM_POOL_SIZE", Default: "0", Usage: "session pods kept started ahead of creates (of the current pod template); a create claims one instead of waiting for a pod (0: off, and the pool's pods are deleted)"},
		{Flag: "max-active-sessions", Kind: KindInt, Env: "AGENT_MAX_ACTIVE_SESSIONS", Default: "5", Usage: "active sessions allowed per user (0: unlimited)"},
		{Flag: "kube-api-qps", Kind: KindInt, Env: "AGENT_KUBE_API_QPS", Default: "0", Usage: "requests per second the agent sends the Kubernetes API at most, bursts aside (0: 200); each cold session start is two (its Secret and Pod)"},
		{Flag: "kube-api-burst", Kind: KindInt, Env: "AGENT_KUBE_API_BURST", Default: "0", Usage: "burst of requests allowed above --kube-api-qps (0: twice the QPS, 400 by default)"},
		{Flag: "debug-addr", Env: "AGENT_DEBUG_ADDR", Usage: "loopback address (such as 127.0.0.1:6060) serving Go's pprof profiles under /debug/pprof/, for kubectl port-forward; empty disables it"},
		{Flag: "reconcile-interval", Kind: KindDuration, Env: "AGENT_RECONCILE_INTERVAL", Default: "30s", Usage: "how often every session is reconciled in full (watches handle the rest)"},
		{Flag: "header-auth", Kind: KindBool, Env: "AGENT_HEADER_AUTH_ENABLED", Default: "false", Usage: "trust identity headers set by an authenticating proxy (only from --trusted-proxy-cidrs)"},
		{Flag: "header-auth-email-header", Env: "AGENT_HEADER_AUTH_EMAIL_HEADER", Default: "x-auth-request-email", Usage: "header carrying the user's email"},
		{Flag: "header-auth-email-claim", Env: "AGENT_HEADER_AUTH_EMAIL_CLAIM", Default: "email", Usage: "JWT claim carrying the email, when the JWT header is used"},
		{Flag: "header-auth-user-header", Env: "AGENT_HEADER_AUTH_USER_HEADER", Default: "x-auth-request-user", Usage: "header carrying the user name"},
		{Flag: "header-auth-jwt-header", Env: "AGENT_HEADER_AUTH_JWT_HEADER", Default: "x-auth-request-access-token", Usage: "header carrying the proxy's JWT"},
		{Flag: "header-auth-groups", Kind: KindList, Env: "AGENT_HEADER_AUTH_GROUPS", Default: "cake-agents:users", Usage: "comma-separated groups given to header-authenticated users for SubjectAccessReview"},
		{Flag: "trusted-proxy-cidrs", Kind: KindList, Env: "AGENT_TRUSTED_PROXY_CIDRS", Usage: "comma-separated CIDRs of the authenticating proxy; identity headers from anywhere else are rejected. Loopback is never trusted unless listed: behind an Istio sidecar list its 127.0.0.6/32 and ::6/128 (the chart does with istio.enabled), never 127.0.0.1, where port-forwards arrive. With --header-auth and none set, header auth is inert: every request carrying identity headers is refused"},
		{Flag: "jwks-url", Env: "AGENT_JWKS_URL", Usage: "verify the proxy JWT's signature against this JWKS (https:// URL or file path); without it the proxy is the trust boundary"},
		{Flag: "header-auth-jwt-issuer", Env: "AGENT_HEADER_AUTH_JWT_ISSUER", Usage: "with --jwks-url, the proxy JWT's iss claim must equal this (e.g. https://accounts.example.com)"},
		{Flag: "header-auth-jwt-audience", Kind: KindList, Env: "AGENT_HEADER_AUTH_JWT_AUDIENCE", Usage: "with --jwks-url, the proxy JWT's aud claim must name one of these (comma-separated; e.g. the proxy's OAuth client id). Without it, a token the identity provider issued for another application is accepted too"},
		{Flag: "token-audiences", Kind: KindList, Env: "AGENT_TOKEN_AUDIENCES", Usage: "comma-separated audiences for TokenReview (empty: the API server's default)"},
		{Flag: "token-default-ttl", Kind: KindDuration, Env: "AGENT_TOKEN_DEFAULT_TTL", Default: "720h", Usage: "lifetime of a personal access token created without one (every token expires)"},
		{Flag: "token-max-ttl", Kind: KindDuration, Env: "AGENT_TOKEN_MAX_TTL", Default: "2160h", Usage: "longest lifetime a personal access token may ask for (longer is refused with 400); tokens stored without an expiry expire this long after creation"},
		{Flag: "admin-groups", Kind: KindList, Env: "AGENT_ADMIN_GROUPS", Default: "system:masters", Usage: "comma-separated groups whose members are agent admins in addition to RBAC's sessions verb \"*\""},
		{Flag: "leader-election", Kind: KindBool, Env: "AGENT_LEADER_ELECTION", Default: "false", Usage: "elect one reconciling replica with a Lease (needed when replicas > 1)"},
		{Flag: "lease-name", Env: "AGENT_LEASE_NAME", Default: "cake-agents-reconciler", Usage: "name of the leader-election Lease in --namespace"},
		{Flag: "lease-duration", Kind: KindDuration, Env: "AGENT_LEASE_DURATION", Default: "15s", Usage: "how long the other replicas wait after the leader's last renewal before taking over (a crashed leader is replaced this long after it died)"},
		{Flag: "lease-renew-deadline", Kind: KindDuration, Env: "AGENT_LEASE_RENEW_DEADLINE", Default: "10s", Usage: "how long the leader keeps trying to renew before it stops reconciling (shorter than --lease-duration)"},
		{Flag: "lease-retry-period", Kind: KindDuration, Env: "AGENT_LEASE_RETRY_PERIOD", Default: "2s", Usage: "how often replicas try to acquire or renew the Lease"},
		{Flag: "litellm-base-url", Env: "LITELLM_BASE_URL", Usage: "OpenAI-compatible gateway URL for sessions (e.g. http://litellm:4000/v1)"},
		{Flag: "litellm-api-key", Env: "LITELLM_API_KEY", Secret: true, Usage: "LiteLLM master key: the agent makes each session its own virtual key with it (POST /key/generate; deleted when the session stops or goes) and never gives it to a session. Empty: sessions get no key"},
		{Flag: "litellm-session-budget", Kind: KindUSD, Env: "LITELLM_SESSION_BUDGET", Default: "0", Usage: "max_budget in USD of each session's LiteLLM key (0: none)"},
		{Flag: "litellm-user-budget", Kind: KindUSD, Env: "LITELLM_USER_BUDGET", Default: "0", Usage: "max_budget in USD of each session owner as a LiteLLM user, shared by all their sessions' keys (0: none)"},
		{Flag: "litellm-budget-period", Kind: KindDuration, Env: "LITELLM_BUDGET_PERIOD", Default: "0", Usage: "period after which LiteLLM resets a session owner's spend, making --litellm-user-budget a budget per period (LiteLLM's budget_duration; e.g. 720h for 30 days; 0: never, the budget is for all time)"},
		{Flag: "litellm-key-duration", Kind: KindDuration, Env: "LITELLM_KEY_DURATION", Default: "0", Usage: "longest life of a session's LiteLLM key (0: the session's TTL, else none); keys are deleted when sessions stop anyway"},
		{Flag: "default-model", Env: "AGENT_DEFAULT_MODEL", Default: "gpt-4o-mini", Usage: "model used when a session names none"},
		{Flag: "provider-json", Env: "AGENT_PROVIDER_JSON", Usage: "OpenCode provider configuration (JSON) overriding the LiteLLM one; keys by {env:NAME} reference only"},
		{Flag: "github-client-id", Env: "AGENT_GITHUB_CLIENT_ID", Usage: "client id of the GitHub OAuth app (device flow enabled) users link their GitHub account with; empty: linking is off"},
		{Flag: "github-url", Env: "AGENT_GITHUB_URL", Default: "https://github.com", Usage: "GitHub web host of the device flow (GitHub Enterprise: its URL); linked tokens are stored for its host"},
		{Flag: "github-api-url", Env: "AGENT_GITHUB_API_URL", Usage: "GitHub REST API root (empty: https://api.github.com for github.com, else --github-url followed by /api/v3, as on GitHub Enterprise Server)"},
		{Flag: "github-app-id", Kind: KindInt, Env: "AGENT_GITHUB_APP_ID", Default: "0", Usage: "id of a GitHub App installed on your organisation: sessions on repositories of --github-url's host whose owner linked no GitHub account get a one-hour installation token limited to the session's repository, replaced before it expires (0: off)"},
		{Flag: "github-app-private-key-file", Env: "AGENT_GITHUB_APP_PRIVATE_KEY_FILE", Usage: "the GitHub App's private key (the PEM file GitHub generated), needed with --github-app-id"},
		{Flag: "github-app-installation-id", Kind: KindInt, Env: "AGENT_GITHUB_APP_INSTALLATION_ID", Default: "0", Usage: "the GitHub App installation tokens come from (0: the installation on the session repository's owner, looked up per session)"},
		{Flag: "providers-file", Env: "AGENT_PROVIDERS_FILE", Usage: "file of model providers (OpenCode's provider JSON, keys inline) imported at start when none are stored; admins manage them with GET/PUT /api/v1/providers afterwards"},
		{Flag: "linear-enabled", Kind: KindBool, Env: "AGENT_LINEAR_ENABLED", Default: "false", Usage: "serve Linear's webhook at POST /integrations/linear/webhook: an issue assigned to the API key's user (or labelled --linear-label) starts a session, its answers are commented on the issue, comments mentioning the agent are prompts (needs --linear-api-key and --linear-webhook-secret)"},
		{Flag: "linear-api-key", Env: "LINEAR_API_KEY", Secret: true, Usage: "Linear API key of the user issues are assigned to, who comments the answers"},
		{Flag: "linear-webhook-secret", Env: "LINEAR_WEBHOOK_SECRET", Secret: true, Usage: "signing secret of the Linear webhook sending to /integrations/linear/webhook"},
		{Flag: "linear-api-url", Env: "LINEAR_API_URL", Default: "https://api.linear.app/graphql", Usage: "Linear's GraphQL endpoint"},
		{Flag: "linear-label", Env: "LINEAR_LABEL", Usage: "name of a Linear label that starts a session on the issue it is added to (empty: only assignment does)"},
		{Flag: "slack-bot-token", Env: "SLACK_BOT_TOKEN", Secret: true, Usage: "Slack bot token (xoxb-...; scopes app_mentions:read, chat:write, im:history, users:read, users:read.email, and channels:history for replies in threads)"},
		{Flag: "slack-signing-secret", Env: "SLACK_SIGNING_SECRET", Secret: true, Usage: "Slack app's signing secret: verifies the requests Slack sends to /integrations/slack/events"},
		{Flag: "slack-enabled", Kind: KindBool, Env: "AGENT_SLACK_ENABLED", Default: "false", Usage: "serve Slack's Events API at POST /integrations/slack/events: a mention of the bot starts a session, replies in its thread are prompts, answers are posted there (needs --slack-bot-token and --slack-signing-secret)"},
		{Flag: "slack-api-url", Env: "AGENT_SLACK_API_URL", Default: "https://slack.com/api", Usage: "root of Slack's Web API the bot calls"},
	}
}

// EnvVars lists every environment variable the agent reads for its configuration,
// plus the PG* variables pgx reads when DATABASE_URL is empty.
func EnvVars() []string {
	var out []string
	for _, o := range Options() {
		out = append(out, o.Env)
	}
	out = append(out, "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS")
	sort.Strings(out)
	return out
}

// BindFlags registers every option on fs as a flag of its kind, its default the option's
// or, when set, its environment variable's, and returns a function that, after parsing,
// fills and validates a Config. Flags win over the environment. A bad value in the
// environment is reported by that function (unless the flag replaced it), naming the
// variable and the flag; a bad flag value fails the parse, naming both too.
func BindFlags(fs *pflag.FlagSet, getenv func(string) string) func() (*Config, error) {
	vals := map[string]*value{}
	envErrs := map[string]string{} // by flag
	for _, o := range Options() {
		v := &value{opt: o}
		if err := v.set(o.Default); err != nil {
			panic(fmt.Sprintf("option %s: default %q: %v", o.Flag, o.Default, err))
		}
		shown := o.Default
		if env, ok := lookup(getenv, o.Env); ok {
			if err := v.set(env); err != nil {
				envErrs[o.Flag] = fmt.Sprintf("$%s=%q (--%s): %v", o.Env, env, o.Flag, err)
			} else {
				shown = env
			}
		} else if o.Env == storeopen.EnvURL && pgEnvSet(getenv) {
			// PG* variables without a URL (the chart's existingSecretEnv, whose Secret may
			// hold no URL) mean Postgres from them, never the SQLite default.
			v.text, shown = "", ""
		}
		if o.Secret && shown != "" {
			shown = "(from env)"
		}
		f := fs.VarPF(v, o.Flag, "", fmt.Sprintf("%s [$%s]", o.Usage, o.Env))
		f.DefValue = shown
		if o.Kind == KindBool {
			f.NoOptDefVal = "true"
		}
		vals[o.Flag] = v
	}
	return func() (*Config, error) {
		var errs []string
		for _, o := range Options() {
			// A flag given on the command line replaced the bad value.
			if e, bad := envErrs[o.Flag]; bad && !fs.Changed(o.Flag) {
				errs = append(errs, e)
			}
		}
		return parse(vals, errs)
	}
}

// pgEnvSet reports whether any PG* variable pgx reads is set.
func pgEnvSet(getenv func(string) string) bool {
	for _, k := range storeopen.PGEnv {
		if _, ok := lookup(getenv, k); ok {
			return true
		}
	}
	return false
}

func lookup(getenv func(string) string, key string) (string, bool) {
	if getenv == nil {
		getenv = os.Getenv
	}
	v := getenv(key)
	return v, v != ""
}

func parse(v map[string]*value, errs []string) (*Config, error) {
	get := func(k string) string { return v[k].text }
	dur := func(k string) time.Duration { return v[k].d }
	boolean := func(k string) bool { return v[k].b }
	integer := func(k string) int { return v[k].n }
	strs := func(k string) []string { return v[k].list }
	// name is how a setting is named in errors: its flag and its environment variable.
	name := func(k string) string { return "--" + k + " [$" + v[k].opt.Env + "]" }
	c := &Config{
		HTTPAddr:                get("http-addr"),
		HTTPSAddr:               get("https-addr"),
		TLSCertFile:             get("tls-cert-file"),
		TLSKeyFile:              get("tls-key-file"),
		ServingCAConfigMap:      get("serving-ca-configmap"),
		Kubeconfig:              get("kubeconfig"),
		Namespace:               get("namespace"),
		PodName:                 get("pod-name"),
		Release:                 get("release"),
		ChartVersion:            get("chart-version"),
		ExternalURL:             get("external-url"),
		SessionWebDomain:        strings.ToLower(strings.TrimSuffix(get("session-web-domain"), ".")),
		DatabaseURL:             get("database-url"),
		AuthSecret:              get("auth-secret"),
		LogFormat:               get("log-format"),
		LogLevel:                get("log-level"),
		SessionNamespace:        get("session-namespace"),
		DataPlaneImage:          get("data-plane-image"),
		DataPlaneInitImage:      get("data-plane-init-image"),
		ImagePullPolicy:         get("image-pull-policy"),
		ImagePullSecrets:        strs("image-pull-secrets"),
		SessionCPURequest:       get("session-cpu-request"),
		SessionCPULimit:         get("session-cpu-limit"),
		SessionMemRequest:       get("session-memory-request"),
		SessionMemLimit:         get("session-memory-limit"),
		SessionTolerations:      get("session-tolerations"),
		SessionStorageClass:     get("session-storage-class"),
		SessionStorageSize:      get("session-storage-size"),
		SessionCAConfigMap:      get("session-ca-configmap"),
		SessionCAKey:            get("session-ca-key"),
		SessionIdleTimeout:      dur("session-idle-timeout"),
		SessionTTL:              dur("session-ttl"),
		SessionMaxIdleTimeout:   dur("session-max-idle-timeout"),
		SessionMaxTTL:           dur("session-max-ttl"),
		TranscriptRetention:     dur("transcript-retention"),
		MaxActiveSessions:       integer("max-active-sessions"),
		WarmPoolSize:            integer("warm-pool-size"),
		ReconcileInterval:       dur("reconcile-interval"),
		KubeAPIQPS:              integer("kube-api-qps"),
		KubeAPIBurst:            integer("kube-api-burst"),
		DebugAddr:               get("debug-addr"),
		HeaderAuthEnabled:       boolean("header-auth"),
		HeaderAuthEmailHeader:   get("header-auth-email-header"),
		HeaderAuthEmailClaim:    get("header-auth-email-claim"),
		HeaderAuthUserHeader:    get("header-auth-user-header"),
		HeaderAuthJWTHeader:     get("header-auth-jwt-header"),
		HeaderAuthGroups:        strs("header-auth-groups"),
		TrustedProxyCIDRs:       strs("trusted-proxy-cidrs"),
		JWKSURL:                 get("jwks-url"),
		JWTIssuer:               get("header-auth-jwt-issuer"),
		JWTAudiences:            strs("header-auth-jwt-audience"),
		TokenAudiences:          strs("token-audiences"),
		AdminGroups:             strs("admin-groups"),
		TokenDefaultTTL:         dur("token-default-ttl"),
		TokenMaxTTL:             dur("token-max-ttl"),
		LeaderElection:          boolean("leader-election"),
		LeaseName:               get("lease-name"),
		LeaseDuration:           dur("lease-duration"),
		LeaseRenewDeadline:      dur("lease-renew-deadline"),
		LeaseRetryPeriod:        dur("lease-retry-period"),
		LiteLLMBaseURL:          get("litellm-base-url"),
		LiteLLMAPIKey:           get("litellm-api-key"),
		LiteLLMSessionBudget:    v["litellm-session-budget"].usd,
		LiteLLMUserBudget:       v["litellm-user-budget"].usd,
		LiteLLMUserBudgetPeriod: dur("litellm-budget-period"),
		LiteLLMKeyDuration:      dur("litellm-key-duration"),
		DefaultModel:            get("default-model"),
		ProviderJSON:            get("provider-json"),
		GitHubClientID:          get("github-client-id"),
		GitHubURL:               get("github-url"),
		GitHubAPIURL:            get("github-api-url"),
		GitHubAppID:             integer("github-app-id"),
		GitHubAppPrivateKeyFile: get("github-app-private-key-file"),
		GitHubAppInstallationID: integer("github-app-installation-id"),
		ProvidersFile:           get("providers-file"),
		LinearEnabled:           boolean("linear-enabled"),
		LinearAPIKey:            get("linear-api-key"),
		LinearWebhookSecret:     get("linear-webhook-secret"),
		LinearAPIURL:            get("linear-api-url"),
		LinearLabel:             get("linear-label"),
		SlackBotToken:           get("slack-bot-token"),
		SlackSigningSecret:      get("slack-signing-secret"),
		SlackEnabled:            boolean("slack-enabled"),
		SlackAPIURL:             get("slack-api-url"),
	}
	if c.SlackEnabled && (c.SlackBotToken == "" || c.SlackSigningSecret == "") {
		errs = append(errs, fmt.Sprintf("%s needs %s and %s (the chart's slack.secret)", name("slack-enabled"), name("slack-bot-token"), name("slack-signing-secret")))
	}
	if u, err := url.Parse(c.SlackAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Sprintf("%s: %q is not a URL such as https://slack.com/api", name("slack-api-url"), c.SlackAPIURL))
	}
	if c.LinearEnabled && (c.LinearAPIKey == "" || c.LinearWebhookSecret == "") {
		errs = append(errs, fmt.Sprintf("%s needs %s and %s (the chart's linear.secret: apiKey and webhookSecret)", name("linear-enabled"), name("linear-api-key"), name("linear-webhook-secret")))
	}
	if u, err := url.Parse(c.LinearAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Sprintf("%s: %q is not a URL such as https://api.linear.app/graphql", name("linear-api-url"), c.LinearAPIURL))
	}
	if c.SessionNamespace == "" {
		c.SessionNamespace = c.Namespace
	}
	if d := c.SessionWebDomain; d != "" {
		host := d
		if h, _, err := net.SplitHostPort(d); err == nil {
			host = h
		}
		if strings.ContainsAny(host, "/:*@ ") || !strings.Contains(host, ".") && host != "localhost" || strings.HasPrefix(host, ".") {
			errs = append(errs, fmt.Sprintf("%s=%q: want a DNS name whose subdomains reach the agent, such as agents.example.com (no scheme, no wildcard)", name("session-web-domain"), d))
		}
		if c.ExternalURL == "" {
			errs = append(errs, fmt.Sprintf("%s needs %s: session hosts use its scheme, and their pages link back to the web UI", name("session-web-domain"), name("external-url")))
		}
	}
	if u, err := url.Parse(c.GitHubURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		errs = append(errs, fmt.Sprintf("%s: %q is not a GitHub web URL such as https://github.com", name("github-url"), c.GitHubURL))
	}
	if c.GitHubAPIURL != "" {
		if u, err := url.Parse(c.GitHubAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Sprintf("%s: %q is not a URL such as https://api.github.com", name("github-api-url"), c.GitHubAPIURL))
		}
	}
	if (c.GitHubAppID != 0) != (c.GitHubAppPrivateKeyFile != "") {
		errs = append(errs, fmt.Sprintf("%s and %s must be set together: a GitHub App signs its requests with its private key", name("github-app-id"), name("github-app-private-key-file")))
	}
	if c.GitHubAppInstallationID != 0 && c.GitHubAppID == 0 {
		errs = append(errs, fmt.Sprintf("%s needs %s", name("github-app-installation-id"), name("github-app-id")))
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 30 * time.Second
	}
	// The defaults are what a create gets without asking: they must be within the maxima.
	for _, lim := range []struct {
		def, max         time.Duration
		defFlag, maxFlag string
	}{
		{c.SessionIdleTimeout, c.SessionMaxIdleTimeout, "session-idle-timeout", "session-max-idle-timeout"},
		{c.SessionTTL, c.SessionMaxTTL, "session-ttl", "session-max-ttl"},
	} {
		if lim.max > 0 && (lim.def == 0 || lim.def > lim.max) {
			def := lim.def.String()
			if lim.def == 0 {
				def = "0 (none)"
			}
			errs = append(errs, fmt.Sprintf("%s=%s is beyond %s=%s: set a default within the maximum (chart values sessions.idleTimeout/ttl and sessions.maxIdleTimeout/maxTTL)",
				name(lim.defFlag), def, name(lim.maxFlag), lim.max))
		}
	}
	if c.DebugAddr != "" {
		// Profiles show memory and goroutine stacks: never on an address others can reach.
		host, _, err := net.SplitHostPort(c.DebugAddr)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			errs = append(errs, fmt.Sprintf("%s=%q: want a loopback address such as 127.0.0.1:6060 (profiles are reached with kubectl port-forward, never exposed)", name("debug-addr"), c.DebugAddr))
		}
	}
	if ns := get("session-node-selector"); ns != "" {
		c.SessionNodeSelector = map[string]string{}
		for _, kv := range list(ns) {
			k, val, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				errs = append(errs, fmt.Sprintf("%s: %q is not key=value", name("session-node-selector"), kv))
				continue
			}
			c.SessionNodeSelector[k] = val
		}
	}
	if c.SessionTolerations != "" {
		var tolerations []map[string]any
		if err := json.Unmarshal([]byte(c.SessionTolerations), &tolerations); err != nil {
			errs = append(errs, fmt.Sprintf("%s: want a JSON array of tolerations: %v", name("session-tolerations"), err))
		}
	}
	for _, cidr := range c.TrustedProxyCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %q is not a CIDR such as 10.0.0.0/8", name("trusted-proxy-cidrs"), cidr))
		}
	}
	if c.JWKSURL == "" && (c.JWTIssuer != "" || len(c.JWTAudiences) > 0) {
		errs = append(errs, "--header-auth-jwt-issuer and --header-auth-jwt-audience need --jwks-url: the claims of an unverified JWT prove nothing")
	}
	switch {
	case c.TokenDefaultTTL < time.Minute || c.TokenMaxTTL < time.Minute:
		errs = append(errs, fmt.Sprintf("--token-default-ttl=%s and --token-max-ttl=%s must be at least 1m: every personal access token expires", c.TokenDefaultTTL, c.TokenMaxTTL))
	case c.TokenDefaultTTL > c.TokenMaxTTL:
		errs = append(errs, fmt.Sprintf("--token-default-ttl=%s is longer than --token-max-ttl=%s", c.TokenDefaultTTL, c.TokenMaxTTL))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Sprintf("%s=%q: want text or json", name("log-format"), c.LogFormat))
	}
	if hclog.LevelFromString(c.LogLevel) == hclog.NoLevel {
		errs = append(errs, fmt.Sprintf("%s=%q: want trace, debug, info, warn or error", name("log-level"), c.LogLevel))
	}
	switch c.ImagePullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		errs = append(errs, fmt.Sprintf("%s=%q: want Always, IfNotPresent or Never", name("image-pull-policy"), c.ImagePullPolicy))
	}
	if c.SessionCAConfigMap != "" && c.SessionCAKey == "" {
		errs = append(errs, "--session-ca-key is empty: name the key of --session-ca-configmap that holds the PEM bundle")
	}
	if c.HTTPAddr == "" && c.HTTPSAddr == "" {
		errs = append(errs, "--http-addr and --https-addr are both empty: set at least one")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, "--tls-cert-file and --tls-key-file must be set together")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
