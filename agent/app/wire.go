package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/conversation"
	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/linear"
	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/server"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/slack"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/storeopen"
	"github.com/cakeai/cake-agents/agent/tunnel"
	"github.com/cakeai/cake-agents/agent/ui"
	"github.com/cakeai/cake-agents/agent/vcs"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// authSecret returns the configured auth secret. Without one, a SQLite agent keeps a
// generated secret in a key file beside its database (same volume, separate file), so
// dev installs work out of the box; Postgres installs must configure one because
// replicas have to agree on it.
func authSecret(cfg *Config, log hclog.Logger) ([]byte, error) {
	if cfg.AuthSecret != "" {
		return []byte(cfg.AuthSecret), nil
	}
	t, err := storeopen.Parse(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	if t.Driver != storeopen.SQLite || t.Path == "" || t.Path == ":memory:" {
		if t.Driver == storeopen.SQLite {
			// An in-memory database dies with the process; so may its key.
			return randomSecret()
		}
		return nil, errors.New("no auth secret: set AGENT_AUTH_SECRET (the chart's betterAuth.secret) — every replica must share it to read encrypted credentials")
	}
	keyFile := t.Path + ".key"
	if b, err := os.ReadFile(keyFile); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	secret, err := randomSecret()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, append(secret, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("no auth secret configured and cannot keep a generated one in %s: set AGENT_AUTH_SECRET: %w", keyFile, err)
	}
	log.Warn("no auth secret configured: generated one beside the SQLite database; set AGENT_AUTH_SECRET for production", "file", keyFile)
	return secret, nil
}

func randomSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return []byte(hex.EncodeToString(b)), nil
}

// openStoreWithRetry opens the database, retrying while it is unreachable;
// onRetry reports the reason so /readyz can show it.
// The keyring, from the auth secret, also seals what the agent hands browsers
// (server.SessionWeb's tickets and cookies).
func openStoreWithRetry(ctx context.Context, cfg *Config, log hclog.Logger, onRetry func(error)) (store.Store, *keyring.Keyring, error) {
	secret, err := authSecret(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	kr, err := keyring.New(secret)
	if err != nil {
		return nil, nil, fmt.Errorf("auth secret: %w", err)
	}
	st, err := storeopen.WaitOpen(ctx, storeopen.Options{URL: cfg.DatabaseURL, Keyring: kr, Logger: log.Named("store")},
		storeopen.Backoff{OnRetry: func(err error, _ time.Duration) { onRetry(err) }})
	return st, kr, err
}

// components is the wired agent: the HTTP handler and what runs in the background.
type components struct {
	handler http.Handler
	run     func(ctx context.Context) error
}

func sessionsConfig(cfg *Config, reg prometheus.Registerer) (sessions.Config, error) {
	var tolerations []corev1.Toleration
	if cfg.SessionTolerations != "" {
		if err := json.Unmarshal([]byte(cfg.SessionTolerations), &tolerations); err != nil {
			return sessions.Config{}, fmt.Errorf("--session-tolerations: %w", err)
		}
	}
	identity := cfg.PodName
	if identity == "" {
		identity, _ = os.Hostname()
	}
	// Sessions get keys of their own only when there is a gateway to use them with.
	var gateway *litellm.Client
	if cfg.LiteLLMBaseURL != "" && cfg.LiteLLMAPIKey != "" {
		var err error
		if gateway, err = litellm.New(cfg.LiteLLMBaseURL, cfg.LiteLLMAPIKey, nil); err != nil {
			return sessions.Config{}, fmt.Errorf("--litellm-base-url: %w", err)
		}
	}
	app, err := githubApp(cfg)
	if err != nil {
		return sessions.Config{}, err
	}
	scfg := sessions.Config{
		Namespace:               cfg.SessionNamespace,
		Release:                 cfg.Release,
		DataPlaneImage:          cfg.DataPlaneImage,
		DataPlaneInitImage:      cfg.DataPlaneInitImage,
		ImagePullPolicy:         cfg.ImagePullPolicy,
		ImagePullSecrets:        cfg.ImagePullSecrets,
		CPURequest:              cfg.SessionCPURequest,
		CPULimit:                cfg.SessionCPULimit,
		MemoryRequest:           cfg.SessionMemRequest,
		MemoryLimit:             cfg.SessionMemLimit,
		NodeSelector:            cfg.SessionNodeSelector,
		Tolerations:             tolerations,
		StorageClass:            cfg.SessionStorageClass,
		StorageSize:             cfg.SessionStorageSize,
		CABundleConfigMap:       cfg.SessionCAConfigMap,
		CABundleKey:             cfg.SessionCAKey,
		DefaultIdleTimeout:      cfg.SessionIdleTimeout,
		DefaultTTL:              cfg.SessionTTL,
		ReconcileInterval:       cfg.ReconcileInterval,
		WarmPoolSize:            cfg.WarmPoolSize,
		LiteLLMBaseURL:          cfg.LiteLLMBaseURL,
		LiteLLM:                 gateway,
		LiteLLMSessionBudget:    cfg.LiteLLMSessionBudget,
		LiteLLMUserBudget:       cfg.LiteLLMUserBudget,
		LiteLLMUserBudgetPeriod: cfg.LiteLLMUserBudgetPeriod,
		LiteLLMKeyDuration:      cfg.LiteLLMKeyDuration,
		DefaultModel:            cfg.DefaultModel,
		ProviderJSON:            cfg.ProviderJSON,
		LeaderElection:          cfg.LeaderElection,
		LeaseNamespace:          cfg.Namespace,
		LeaseName:               cfg.LeaseName,
		LeaseDuration:           cfg.LeaseDuration,
		RenewDeadline:           cfg.LeaseRenewDeadline,
		RetryPeriod:             cfg.LeaseRetryPeriod,
		Identity:                identity,
		Registerer:              reg,
	}
	scfg.GitHubHost = githubHost(cfg)
	if app != nil {
		scfg.GitHubApp = app
	}
	return scfg, nil
}

// githubApp is the GitHub App whose installation tokens sessions get; nil without one.
// Its private key is read now, so a wrong file stops the agent at start rather than
// failing every session.
func githubApp(cfg *Config) (*github.App, error) {
	if cfg.GitHubAppID == 0 {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.GitHubAppPrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--github-app-private-key-file: %w", err)
	}
	key, err := github.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("--github-app-private-key-file %s: %w", cfg.GitHubAppPrivateKeyFile, err)
	}
	return &github.App{APIURL: githubAPIURL(cfg), ID: int64(cfg.GitHubAppID), Key: key, InstallationID: int64(cfg.GitHubAppInstallationID),
		HTTP: &http.Client{Timeout: 30 * time.Second}}, nil
}

// providersSeededSetting marks in the store that the providers file was imported (or
// providers were stored before): from then on admins own the providers, and no restart
// imports the file again, not even after an admin removed them all.
const providersSeededSetting = "providers.seeded"

// seedProviders imports the providers of file (the chart's providers values or Secret)
// once. A missing file (the chart mounts its Secret optionally) is logged and skipped,
// so the agent starts and a later start imports it; a file that does not validate
// stops the start with the field named.
func seedProviders(ctx context.Context, st store.Store, file string, log hclog.Logger) error {
	if file == "" {
		return nil
	}
	if at, err := st.GetSetting(ctx, providersSeededSetting); err == nil {
		log.Info("model providers were imported before; admins manage them now, not importing the providers file", "file", file, "imported", at)
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read the model providers' seed marker: %w", err)
	}
	stored, err := st.ListProviders(ctx)
	if err != nil {
		return fmt.Errorf("read the model providers: %w", err)
	}
	if len(stored) > 0 {
		// Stored before the marker existed (or a crash before it was written).
		log.Info("model providers are stored; not importing the providers file", "file", file, "stored", len(stored))
		return markSeeded(ctx, st)
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		log.Warn("the providers file is missing (check the chart's providers.existingSecret and its key); starting without importing it", "file", file)
		return nil
	}
	if err != nil {
		return fmt.Errorf("--providers-file: %w", err)
	}
	set, err := providers.Parse(b)
	if err == nil {
		// A placeholder has nothing to keep here.
		err = set.KeepSecrets(providers.Set{})
	}
	if err != nil {
		return fmt.Errorf("--providers-file %s: %w", file, err)
	}
	if len(set) > 0 {
		if err := st.ReplaceProviders(ctx, set.ToStore()); err != nil {
			return fmt.Errorf("import the model providers: %w", err)
		}
	}
	log.Info("imported model providers", "file", file, "providers", len(set))
	return markSeeded(ctx, st)
}

func markSeeded(ctx context.Context, st store.Store) error {
	if err := st.PutSetting(ctx, providersSeededSetting, time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("record that the model providers were imported: %w", err)
	}
	return nil
}

// wire builds every component on top of an open store.
func wire(ctx context.Context, cfg *Config, restCfg *rest.Config, kube kubernetes.Interface, st store.Store, kr *keyring.Keyring, reg *prometheus.Registry, log hclog.Logger) (*components, error) {
	scfg, err := sessionsConfig(cfg, reg)
	if err != nil {
		return nil, err
	}
	if err := seedProviders(ctx, st, cfg.ProvidersFile, log); err != nil {
		return nil, err
	}
	// Events get a client of their own, so its own rate limiter (see
	// sessions.Config.EventClient).
	if scfg.EventClient, err = kubernetes.NewForConfig(restCfg); err != nil {
		return nil, fmt.Errorf("kubernetes client for events: %w", err)
	}
	ctrl, err := sessions.New(scfg, kube, st, log.Named("sessions"))
	if err != nil {
		return nil, err
	}
	pool, err := tunnel.NewPool(restCfg, log.Named("tunnel"))
	if err != nil {
		return nil, err
	}
	var strip []string
	for _, h := range []string{cfg.HeaderAuthEmailHeader, cfg.HeaderAuthUserHeader, cfg.HeaderAuthJWTHeader} {
		if h != "" {
			strip = append(strip, h)
		}
	}
	conv := conversation.New(pool, ctrl, st, log.Named("conversation"), strip...)
	// The Linear integration needs the authorizer and the audit recorder built below;
	// the ready hook reads it only once sessions run, after wire returned.
	var lin *linear.Service
	// Every session's conversation is recorded in the store as it happens (by the
	// leader), and once more before its pod goes, so it can be read after a stop or a
	// delete; a session started again without its OpenCode state resumes from it.
	recorder := conversation.NewRecorder(conv, st, log.Named("transcript"))
	ctrl.AddLeaderTask(recorder.Run)
	ctrl.SetBeforePodDelete(recorder.Final)
	ctrl.SetReadyHook(func(ctx context.Context, s *store.Session) {
		conv.ResumeConversation(ctx, s)
		conv.DeliverInitialPrompt(ctx, s)
		if lin != nil {
			// An issue's session (started again, too) has its answers commented there:
			// the follower in lin.Run looks at it from now on.
			lin.Follow(s.ID)
		}
	})
	// Running means OpenCode answers through the same tunnel every client uses, so
	// `session create --wait` then `attach` works even where a pod is Ready before its
	// server listens.
	ctrl.SetHealthCheck(conv.Healthy)
	ctrl.SetWorkCheck(conv.Working)
	// A warm pool pod's OpenCode gets the session's own LiteLLM key at claim.
	ctrl.SetKeyDelivery(conv.SetModelKey)
	// ... and its repository, cloned through OpenCode's terminal API.
	ctrl.SetWorkspacePrep(conv.PrepareWorkspace)

	rec := audit.NewRecorder(st, log.Named("audit"))
	// The header authenticator is always first. With header auth disabled it refuses
	// every request carrying identity headers (401) rather than serving it under some
	// other identity: a forged header never goes unnoticed.
	header, err := auth.NewHeaderAuthenticator(auth.HeaderConfig{
		EmailHeader:       cfg.HeaderAuthEmailHeader,
		UserHeader:        cfg.HeaderAuthUserHeader,
		JWTHeader:         cfg.HeaderAuthJWTHeader,
		EmailClaim:        cfg.HeaderAuthEmailClaim,
		TrustedProxyCIDRs: cfg.TrustedProxyCIDRs,
		Groups:            cfg.HeaderAuthGroups,
		JWKS:              cfg.JWKSURL,
		Issuer:            cfg.JWTIssuer,
		Audiences:         cfg.JWTAudiences,
		Disabled:          !cfg.HeaderAuthEnabled,
	})
	if err != nil {
		return nil, err
	}
	if cfg.HeaderAuthEnabled && cfg.JWKSURL != "" && len(cfg.JWTAudiences) == 0 {
		// Many identity providers sign tokens for every application with one key set.
		log.Warn("the proxy's JWT is verified without an audience check: a token the identity provider issued for another application is accepted too",
			"set", "headerAuth.jwt.audience (agent flag --header-auth-jwt-audience)")
	}
	if header.State() == apiv1.HeaderAuthNoTrustedProxy {
		// Starting matters more than the proxy: kubeconfig and token users keep working,
		// and proxy users get a 401 naming the setting (see auth.NewHeaderAuthenticator).
		log.Warn("header auth is inert until trusted proxy networks are set: requests carrying identity headers are refused",
			"set", auth.TrustedProxySetting)
	}
	authenticators := []auth.Authenticator{header}
	kubeAuth := auth.NewKubernetesAuthenticator(auth.KubernetesConfig{Client: kube, Audiences: cfg.TokenAudiences, Log: log.Named("auth")})
	authz := auth.NewSARAuthorizer(auth.SARConfig{Client: kube, Namespace: cfg.Namespace, AdminGroups: cfg.AdminGroups, Log: log.Named("auth")})
	lin = linearService(cfg, st, ctrl, conv, authz, rec, log)
	// A token works only while its owner may still use sessions (see auth.TokenAuthenticator).
	tokens := auth.NewTokenAuthenticator(st, log.Named("auth"), auth.WithMaxTokenTTL(cfg.TokenMaxTTL), auth.WithOwnerAccess(authz))
	// The web UI's sign-in cookie carries a personal access token; it is tried last.
	authenticators = append(authenticators, kubeAuth, tokens, ui.NewCookieAuthenticator(tokens, cfg.ExternalURL))

	anonymous := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cake_agents_unauthenticated_requests_total",
		Help: "Requests refused (401) because they carried no credentials; they are not audited one by one.",
	})
	if reg != nil {
		if err := reg.Register(anonymous); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	authn := auth.NewMiddleware(authenticators, st, rec, log.Named("auth"),
		auth.WithAdminResolver(authz), auth.WithAnonymousCounter(anonymous),
		auth.WithHeaderCSRF(func(r *http.Request) error { return ui.CheckCSRF(r, cfg.ExternalURL) }))
	slackClient := &slack.Client{APIURL: cfg.SlackAPIURL, Token: cfg.SlackBotToken, HTTP: &http.Client{Timeout: 15 * time.Second}}
	var slackEvents *slack.Handler
	webhooks := map[string]http.Handler{}
	if cfg.SlackEnabled {
		slackEvents = slack.New(slack.Options{
			SigningSecret: cfg.SlackSigningSecret, Client: slackClient, Store: st, Sessions: ctrl, Conversation: conv,
			Authorizer: authz, Audit: rec, ExternalURL: cfg.ExternalURL, MaxActiveSessions: cfg.MaxActiveSessions,
			RepoHosts: []string{githubHost(cfg)}, Log: log.Named("slack"),
		})
		webhooks["POST /integrations/slack/events"] = slackEvents
	}
	integrations := []server.Integration{
		&slack.Status{Enabled: cfg.SlackEnabled, Configured: cfg.SlackBotToken != "" && cfg.SlackSigningSecret != "", Client: slackClient},
		linearOff(cfg),
	}
	if lin != nil {
		integrations[1] = lin
		webhooks["POST /integrations/linear/webhook"] = lin
	}
	srv := server.New(server.Options{
		Store:        st,
		Sessions:     ctrl,
		Conversation: conv,
		Authorizer:   authz,
		Namespace:    cfg.Namespace,
		Authenticate: authn.Wrap,
		UI: ui.New(ui.Options{Authenticate: authn.WrapWith, Tokens: tokens, Log: log.Named("ui"), ExternalURL: cfg.ExternalURL,
			SessionWeb: cfg.SessionWebDomain != ""}),
		SessionWeb:        sessionWeb(cfg, kr, authenticators, st, rec, authz, anonymous, log),
		Audit:             rec,
		Log:               log,
		Registry:          reg,
		MaxActiveSessions: cfg.MaxActiveSessions,
		MaxIdleTimeout:    cfg.SessionMaxIdleTimeout,
		MaxTTL:            cfg.SessionMaxTTL,
		Providers:         &providers.Defaults{LiteLLMBaseURL: cfg.LiteLLMBaseURL, ProviderJSON: cfg.ProviderJSON, DefaultModel: cfg.DefaultModel},
		DefaultTokenTTL:   cfg.TokenDefaultTTL,
		MaxTokenTTL:       cfg.TokenMaxTTL,
		ChartVersion:      cfg.ChartVersion,
		ExternalURL:       cfg.ExternalURL,
		HeaderAuth:        header.State(),
		HeaderAuthInfo:    header.Info(),
		GitHub:            githubFlow(cfg),
		GitHubHost:        githubHost(cfg),
		Integrations:      integrations,
		Webhooks:          webhooks,
		Workspaces: &vcs.Watcher{Branches: conv, Tokens: ctrl, Store: st, GitHubHost: githubHost(cfg), APIURL: githubAPIURL(cfg),
			HTTP: &http.Client{Timeout: 10 * time.Second}},
	})
	// Decisions also go to Kubernetes Events in the agent's namespace, regarding its pod
	// (started last: nothing below can fail and leave the broadcaster running).
	stopEvents := func() {}
	if cfg.PodName != "" {
		var sink func(audit.Event)
		sink, stopEvents = audit.KubeEvents(ctx, kube, cfg.Namespace, cfg.PodName, log.Named("audit"))
		rec.SetSink(sink)
	}
	run := func(ctx context.Context) error {
		defer pool.Close()
		defer stopEvents()
		if lin != nil {
			// The workers acting on deliveries and the follower commenting sessions'
			// answers and ends on their issues.
			go func() {
				if err := lin.Run(ctx); err != nil && ctx.Err() == nil {
					log.Error("linear integration stopped", "error", err)
				}
			}()
		}
		go func() {
			// Without the client CA only certificate logins fail; tokens still work, so
			// this is worth a loud log line, not a crash loop.
			if err := kubeAuth.Start(ctx); err != nil && ctx.Err() == nil {
				log.Error("client certificate authentication unavailable", "error", err)
			}
		}()
		// Delivery ids of Slack and Linear, to recognise a retry.
		go pruneHourly(ctx, log.Named("integrations"), "integration events", func(ctx context.Context) (int, error) {
			return st.PruneEvents(ctx, time.Now().Add(-IntegrationEventRetention))
		})
		if cfg.TranscriptRetention > 0 {
			go pruneHourly(ctx, log.Named("transcripts"), "transcripts of deleted sessions", func(ctx context.Context) (int, error) {
				return st.PruneTranscripts(ctx, time.Now().Add(-cfg.TranscriptRetention))
			})
		}
		if slackEvents != nil {
			go func() {
				if err := slackEvents.Run(ctx); err != nil && ctx.Err() == nil {
					log.Error("slack integration stopped", "error", err)
				}
			}()
		}
		return ctrl.Run(ctx)
	}
	return &components{handler: srv, run: run}, nil
}

// sessionWeb serves sessions' OpenCode web UI on their own hosts, when configured. Its
// authentication is the API's, except that a browser behind the authenticating proxy is
// checked with the session host's own Origin rule (OpenCode's UI sends no CSRF header).
func sessionWeb(cfg *Config, kr *keyring.Keyring, authenticators []auth.Authenticator, st store.Store, rec *audit.Recorder,
	authz *auth.SARAuthorizer, anonymous prometheus.Counter, log hclog.Logger) *server.SessionWeb {
	if cfg.SessionWebDomain == "" {
		return nil
	}
	scheme := "https"
	if u, err := url.Parse(cfg.ExternalURL); err == nil && u.Scheme == "http" {
		scheme = "http"
	}
	sw := &server.SessionWeb{Domain: cfg.SessionWebDomain, Scheme: scheme, Sealer: kr, Workspace: sessions.WorkspaceDir}
	authn := auth.NewMiddleware(authenticators, st, rec, log.Named("auth"),
		auth.WithAdminResolver(authz), auth.WithAnonymousCounter(anonymous), auth.WithHeaderCSRF(sw.CheckOrigin))
	sw.Authenticate = authn.WrapWith
	return sw
}

// linearService is the Linear integration; nil when it is not enabled (parse made
// sure an enabled one has its API key and webhook secret).
func linearService(cfg *Config, st store.Store, ctrl *sessions.Controller, conv *conversation.Relay, authz auth.Authorizer, rec *audit.Recorder, log hclog.Logger) *linear.Service {
	if !cfg.LinearEnabled {
		return nil
	}
	return linear.NewService(linear.Options{
		Client:            linear.New(cfg.LinearAPIURL, cfg.LinearAPIKey, nil),
		Store:             st,
		Sessions:          ctrl,
		Conversation:      conv,
		WebhookSecret:     cfg.LinearWebhookSecret,
		Authorizer:        authz,
		Audit:             rec,
		Label:             cfg.LinearLabel,
		ExternalURL:       cfg.ExternalURL,
		MaxActiveSessions: cfg.MaxActiveSessions,
		Log:               log.Named("linear"),
	})
}

// linearOff is the Linear integration's state when it is not enabled: what to set.
func linearOff(cfg *Config) server.Integration {
	st := apiv1.Integration{Name: linear.Source, Configured: cfg.LinearAPIKey != "" && cfg.LinearWebhookSecret != ""}
	if st.Configured {
		st.Detail = "configured but not enabled: set linear.enabled=true in the chart's values"
	} else {
		st.Detail = "off: set linear.enabled and linear.secret (apiKey, webhookSecret) in the chart's values"
	}
	return notEnabled{st}
}

// notEnabled is an integration the agent does not serve: its state is fixed.
type notEnabled struct{ status apiv1.Integration }

func (n notEnabled) Name() string                            { return n.status.Name }
func (n notEnabled) Check(context.Context) apiv1.Integration { return n.status }

// githubFlow is the device flow `kubectl agents github link` uses; nil (linking off)
// without a client id.
func githubFlow(cfg *Config) server.DeviceFlow {
	if cfg.GitHubClientID == "" {
		return nil
	}
	return &github.DeviceFlow{BaseURL: cfg.GitHubURL, ClientID: cfg.GitHubClientID, Scope: "repo", HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// githubHost is the repository host a linked GitHub token serves: the host of --github-url.
func githubHost(cfg *Config) string {
	u, err := url.Parse(cfg.GitHubURL)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

// githubAPIURL is GitHub's REST API root: --github-api-url, else derived from --github-url.
func githubAPIURL(cfg *Config) string {
	if cfg.GitHubAPIURL != "" {
		return cfg.GitHubAPIURL
	}
	return github.APIURL(cfg.GitHubURL)
}

// IntegrationEventRetention is how long the ids of Slack and Linear deliveries are
// kept to recognise a retry: both retry for at most a few hours.
const IntegrationEventRetention = 24 * time.Hour

// pruneHourly runs prune at start and hourly until ctx ends, logging what it removed
// (what names it). Every replica does it: the deletes are idempotent and cheap.
func pruneHourly(ctx context.Context, log hclog.Logger, what string, prune func(ctx context.Context) (int, error)) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := prune(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("prune "+what+" failed", "error", err)
		case n > 0:
			log.Info(what+" pruned", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
