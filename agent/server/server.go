// Package server is the agent's HTTP surface: the v1 JSON API, health and readiness
// probes, Prometheus metrics, the OpenAPI document and the session proxy. Handlers are
// methods on Server, which holds every dependency; nothing here is global.
package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Sessions is the lifecycle controller as the API needs it (agent/sessions implements it).
type Sessions interface {
	// Create stores s, which carries only what the request set, filling in its id,
	// state, timestamps and the configured defaults (idle timeout, TTL, model), and
	// starts it; s is then the session as stored.
	Create(ctx context.Context, s *store.Session, maxActive int) error
	Stop(ctx context.Context, id, reason, message string) (*store.Session, error)
	Start(ctx context.Context, id string, maxActive int) (*store.Session, error)
	Delete(ctx context.Context, id string) error
	Touch(ctx context.Context, id, source string)
	Password(ctx context.Context, s *store.Session) (string, error)
	Ready(ctx context.Context) error
}

// Conversation talks to the OpenCode server inside a running session.
type Conversation interface {
	// Send delivers a prompt to the session's conversation.
	Send(ctx context.Context, s *store.Session, text string) error
	// Messages returns the conversation so far.
	Messages(ctx context.Context, s *store.Session) ([]apiv1.Message, error)
	// Events relays OpenCode's event stream as server-sent events until ctx ends. It
	// writes nothing before the stream to OpenCode is open.
	Events(ctx context.Context, s *store.Session, w http.ResponseWriter) error
	// Proxy forwards r (HTTP, SSE or WebSocket) to path rest of the session's OpenCode,
	// adding OpenCode's own credentials. It calls onActivity once the request goes to
	// the pod and again (throttled) while the caller keeps sending on a long-lived
	// stream; the server records that as the session's activity.
	Proxy(w http.ResponseWriter, r *http.Request, s *store.Session, rest string, onActivity func())
}

// Options configure a Server.
type Options struct {
	Store        store.Store
	Sessions     Sessions
	Conversation Conversation
	Authorizer   auth.Authorizer
	// Namespace is the agent's: RBAC on sessions.agents.cake.ai is checked there, so errors
	// name it when they say how to grant access.
	Namespace string
	// Authenticate puts the caller's identity into the request context or answers 401.
	Authenticate func(http.Handler) http.Handler
	Audit        *audit.Recorder
	Log          hclog.Logger
	Registry     *prometheus.Registry
	// Ready reports extra readiness checks (e.g. the store connection at start).
	Ready func(ctx context.Context) map[string]error

	MaxActiveSessions int
	// MaxIdleTimeout and MaxTTL are the admin's bounds on what a create may ask for (0:
	// none); with one set, asking for "never" (0) is refused.
	MaxIdleTimeout time.Duration
	MaxTTL         time.Duration
	// Providers is what the agent's configuration adds to the stored model providers
	// (the implicit LiteLLM gateway, the default model). Nil: a session's model is not
	// checked against the providers (tests of other concerns).
	Providers *providers.Defaults
	// DefaultTokenTTL is the lifetime of a token created without one (default
	// auth.DefaultTokenTTL); MaxTokenTTL the longest allowed (default
	// auth.DefaultTokenMax), also the lifetime of tokens stored without an expiry.
	DefaultTokenTTL time.Duration
	MaxTokenTTL     time.Duration
	// ExternalURL is the public URL of the agent, used in links.
	ExternalURL string
	// ChartVersion is the version of the chart that installed the agent (GET /api/v1/version).
	ChartVersion string
	// Version is the agent's version for the plugin's skew check; empty: this binary's
	// (version.Version). Tests set it.
	Version string
	// HeaderAuth is the header authenticator's state, reported by whoami.
	HeaderAuth apiv1.HeaderAuthState
	// HeaderAuthInfo describes the header authenticator's configuration (header names,
	// trusted networks, JWT checks), also reported by whoami.
	HeaderAuthInfo apiv1.HeaderAuthInfo
	// UI, when set, serves every path outside the API and the probes (the web UI,
	// agent/ui). It does its own authentication.
	UI http.Handler
	// GitHub, when set, brokers GitHub's OAuth device flow for /api/v1/github/link;
	// GitHubHost is the repository host the linked token is stored for (default
	// github.com; GitHub Enterprise's own host).
	GitHub     DeviceFlow
	GitHubHost string
	// Workspaces, when set, fills a session's current branch and pull request in GET of
	// one session.
	Workspaces Workspaces
	// Integrations are the chat and issue-tracker integrations GET /api/v1/integrations
	// reports (configured or not).
	Integrations []Integration
	// Webhooks are served outside the API, without its authentication (each delivery
	// carries its own signature), by pattern: "POST /integrations/slack/events".
	Webhooks map[string]http.Handler
	// SessionWeb, when set, serves sessions' own OpenCode web UI on hosts of their own
	// (see SessionWeb); nil leaves POST /api/v1/sessions/{id}/web answering how to
	// enable it.
	SessionWeb *SessionWeb
	// Now is the clock (tests replace it).
	Now func() time.Time
}

// Server serves the agent's HTTP API.
type Server struct {
	opts    Options
	log     hclog.Logger
	metrics *metrics
	handler http.Handler

	skewMu     sync.Mutex
	skewLogged map[string]bool // plugin versions outside the window, logged once each
}

// New builds the server and its routes.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.MaxTokenTTL <= 0 {
		o.MaxTokenTTL = auth.DefaultTokenMax
	}
	if o.DefaultTokenTTL <= 0 {
		o.DefaultTokenTTL = auth.DefaultTokenTTL
	}
	o.DefaultTokenTTL = min(o.DefaultTokenTTL, o.MaxTokenTTL)
	if o.GitHubHost == "" {
		o.GitHubHost = apiv1.GitHubHost
	}
	s := &Server{opts: o, log: o.Log.Named("http")}
	s.metrics = newMetrics(o.Registry)
	s.handler = s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// jsonMuxErrors answers the mux's own 404 and 405 in the API's JSON error shape.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &headerRecorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		if rec.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			httperr.Write(w, http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; allowed: "+rec.header.Get("Allow"))
			return
		}
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path+" (see /api/v1/openapi.json)")
	})
}

// headerRecorder captures the status and headers of the mux's built-in error answers.
type headerRecorder struct {
	header http.Header
	code   int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(code int)        { h.code = code }

// route is one API route: the pattern, the handler, and its OpenAPI summary.
type route struct {
	pattern string
	summary string
	h       http.HandlerFunc
}

func (s *Server) apiRoutes() []route {
	return []route{
		{"GET /api/v1/version", "Agent version", s.getVersion},
		{"GET /api/v1/whoami", "The caller's identity and permissions", s.whoami},
		{"POST /api/v1/sessions", "Create a session", s.createSession},
		{"GET /api/v1/sessions", "List sessions (paginated: limit, continue; filters: owner, state, all)", s.listSessions},
		{"GET /api/v1/sessions/{id}", "Get a session", s.getSession},
		{"PATCH /api/v1/sessions/{id}", "Update a session's title, visibility or limits", s.patchSession},
		{"DELETE /api/v1/sessions/{id}", "Delete a session and everything it created", s.deleteSession},
		{"POST /api/v1/sessions/{id}/stop", "Stop a session (keeps a persistent workspace)", s.stopSession},
		{"POST /api/v1/sessions/{id}/start", "Start a stopped session", s.startSession},
		{"GET /api/v1/sessions/{id}/events", "OpenCode's event stream (server-sent events)", s.sessionEvents},
		{"POST /api/v1/sessions/{id}/messages", "Send a prompt to the session", s.sendMessage},
		{"GET /api/v1/sessions/{id}/logs", "The conversation so far, live while the session runs, recorded after (also of a deleted session, until its retention ends)", s.sessionLogs},
		{"POST /api/v1/sessions/{id}/attach", "Credentials for a direct attach (owner only)", s.attachSession},
		{"/api/v1/sessions/{id}/proxy/{rest...}", "Proxy to the session's OpenCode server (HTTP, SSE, WebSocket)", s.proxySession},
		{"POST /api/v1/sessions/{id}/web", "A single-use, short-lived URL opening the session's own OpenCode web UI on its host, signed in as the caller", s.mintSessionWeb},
		{"POST /api/v1/tokens", "Create a personal access token (shown once)", s.createToken},
		{"GET /api/v1/tokens", "List the caller's tokens (admins: ?user=NAME for another user's)", s.listTokens},
		{"DELETE /api/v1/tokens", "Revoke every token of a user (?user=NAME: id, Kubernetes user name or email; admins, or anyone with user=me)", s.revokeUserTokens},
		{"DELETE /api/v1/tokens/{id}", "Revoke one of the caller's tokens", s.deleteToken},
		{"GET /api/v1/credentials", "List the caller's git credentials (never their secrets)", s.listCredentials},
		{"PUT /api/v1/credentials/{host}", "Store or replace the caller's git credential (an access token, or an SSH key with the host key) for a repository host", s.putCredential},
		{"DELETE /api/v1/credentials/{host}", "Remove the caller's git credentials for a host (both kinds, or ?kind=token|ssh)", s.deleteCredential},
		{"POST /api/v1/github/link", "Start linking the caller's GitHub account (OAuth device flow)", s.startGitHubLink},
		{"POST /api/v1/github/link/{id}", "Ask whether the GitHub link was authorized (stores the token as the github.com credential)", s.pollGitHubLink},
		{"GET /api/v1/audit", "Audit log (admins)", s.listAudit},
		{"GET /api/v1/providers", "Model providers, OpenCode's provider JSON with secret values as %%SECRET%% (admins)", s.getProviders},
		{"PUT /api/v1/providers", "Replace the model providers; %%SECRET%% keeps a stored value (admins)", s.putProviders},
		{"GET /api/v1/models", "Models a session may use, as provider/model", s.listModels},
		{"GET /api/v1/integrations", "Chat and issue-tracker integrations: configured, reachable", s.listIntegrations},
		{"GET /api/v1/integrations/slack/channels/{id}", "A Slack channel's default repository (admins)", s.getSlackChannel},
		{"PUT /api/v1/integrations/slack/channels/{id}", "Set a Slack channel's default repository; an empty repo removes it (admins)", s.putSlackChannel},
		{"GET /api/v1/integrations/linear/teams/{key}", "The repository sessions of a Linear team's issues start on (admins)", s.getLinearTeam},
		{"PUT /api/v1/integrations/linear/teams/{key}", "Set the repository sessions of a Linear team's issues start on; an empty repo removes it (admins)", s.putLinearTeam},
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/v1/openapi.json", s.openAPI)
	for pattern, h := range s.opts.Webhooks {
		mux.Handle(pattern, s.instrument(pattern, h))
	}

	api := http.NewServeMux()
	for _, rt := range s.apiRoutes() {
		api.Handle(rt.pattern, s.instrument(rt.pattern, rt.h))
	}
	var apiHandler http.Handler = jsonMuxErrors(api)
	if s.opts.Authenticate != nil {
		apiHandler = s.opts.Authenticate(apiHandler)
	}
	mux.Handle("/api/", apiHandler)
	if s.opts.UI != nil {
		mux.Handle("/", s.opts.UI)
	}
	// A session's host is the session's OpenCode on every path: it is matched first.
	return audit.RequestIDMiddleware(recoverer(s.log, s.versionSkew(s.sessionWebHosts(mux))))
}
