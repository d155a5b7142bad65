package v1

import (
	"encoding/json"
	"fmt"
	"time"
)

// SessionState is where a session is in its lifecycle:
// Pending → Starting → Running → Stopping → Stopped, Failed, Deleting → (gone).
type SessionState string

// Session states.
const (
	StatePending  SessionState = "Pending"
	StateStarting SessionState = "Starting"
	StateRunning  SessionState = "Running"
	StateStopping SessionState = "Stopping"
	StateStopped  SessionState = "Stopped"
	StateFailed   SessionState = "Failed"
	StateDeleting SessionState = "Deleting"
)

// AllStates lists every state in lifecycle order.
var AllStates = []SessionState{StatePending, StateStarting, StateRunning, StateStopping, StateStopped, StateFailed, StateDeleting}

// Active reports whether a session in this state should have a pod (and counts against
// the per-user limit of active sessions).
func (s SessionState) Active() bool {
	return s == StatePending || s == StateStarting || s == StateRunning
}

// Valid reports whether s is a known state.
func (s SessionState) Valid() bool {
	for _, v := range AllStates {
		if v == s {
			return true
		}
	}
	return false
}

// StartKind says how a session's pod came to be: StartKindWarm when the create claimed
// an already running pod of the warm pool, StartKindCold when the pod was created for it.
type StartKind string

// Start kinds.
const (
	StartKindCold StartKind = "cold"
	StartKindWarm StartKind = "warm"
)

// Duration is a time.Duration that travels as a Go duration string ("1h30m").
type Duration struct{ time.Duration }

// MarshalJSON encodes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + d.String() + `"`), nil // a duration's text needs no escaping
}

// UnmarshalJSON accepts a Go duration string ("90m", "1h30m").
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30m\" or \"2h\"")
	}
	if s == "" {
		d.Duration = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a value such as \"30m\" or \"2h\"", s)
	}
	d.Duration = v
	return nil
}

// Session is a coding-agent session as the API shows it.
type Session struct {
	ID          string       `json:"id"`
	Title       string       `json:"title,omitempty"`
	OwnerID     string       `json:"ownerId"`
	Owner       string       `json:"owner"` // the owner's email or user name
	Private     bool         `json:"private"`
	Repo        string       `json:"repo,omitempty"`
	Branch      string       `json:"branch,omitempty"`
	Prompt      string       `json:"prompt,omitempty"`
	Model       string       `json:"model,omitempty"`
	Persistent  bool         `json:"persistent"`
	IdleTimeout Duration     `json:"idleTimeout"`
	TTL         Duration     `json:"ttl"`
	State       SessionState `json:"state"`
	// Reason is a CamelCase machine-readable cause of the state (ImagePullBackOff,
	// IdleTimeout, StoppedByUser, ...); Message explains it to a person.
	Reason       string `json:"reason,omitempty"`
	Message      string `json:"message,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	// StartKind is "warm" when the create claimed a pod of the warm pool, "cold" when
	// a pod was created for the session.
	StartKind StartKind `json:"startKind,omitempty"`
	// ForkedFrom is the session this one was forked from (CreateSessionRequest.ForkOf).
	ForkedFrom string `json:"forkedFrom,omitempty"`

	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
	StartedAt *time.Time `json:"startedAt,omitempty"`
	StoppedAt *time.Time `json:"stoppedAt,omitempty"`
	// LastActivityAt and LastActivitySource say what last kept the session alive
	// ("attach", "proxy", "message", "create", ActivityAttached, ActivityOpenCodeBusy, ...).
	LastActivityAt     time.Time `json:"lastActivityAt"`
	LastActivitySource string    `json:"lastActivitySource,omitempty"`
	// IdleDeadline is when the idle timeout will stop the session, set while it is
	// Pending, Starting or Running (one still starting then stops once it runs);
	// ExpiresAt is when its TTL will delete it, in any state but Deleting. Each is nil
	// when that limit is off.
	IdleDeadline *time.Time `json:"idleDeadline,omitempty"`
	ExpiresAt    *time.Time `json:"expiresAt,omitempty"`
	// ModelSpend is what the session's LiteLLM keys have spent, in USD, when the agent
	// gives sessions keys of their own. Only GET of one session fills it (reading it asks
	// LiteLLM); nil there means LiteLLM could not be asked.
	ModelSpend *float64 `json:"modelSpend,omitempty"`
	// CurrentBranch is the branch the session's workspace was last seen on (Branch is
	// the one asked for at create), and PullRequestURL the pull request opened from it
	// on GitHub, if any. Only GET of one session fills them (looking asks the session's
	// OpenCode and GitHub while it runs); a stopped session shows what was last seen.
	CurrentBranch  string `json:"currentBranch,omitempty"`
	PullRequestURL string `json:"pullRequestURL,omitempty"`
	// ResourceVersion changes on every update; PATCH may send it for optimistic concurrency.
	ResourceVersion int64 `json:"resourceVersion"`
}

// CreateSessionRequest is the body of POST /api/v1/sessions.
type CreateSessionRequest struct {
	Title      string `json:"title,omitempty"`
	Repo       string `json:"repo,omitempty"`
	Branch     string `json:"branch,omitempty"`
	Prompt     string `json:"prompt,omitempty"`
	Private    *bool  `json:"private,omitempty"` // default true
	Model      string `json:"model,omitempty"`
	Persistent bool   `json:"persistent,omitempty"`
	// IdleTimeout and TTL default to the agent's configuration when absent; 0 asks for none
	// (never), which an admin maximum (sessions.maxIdleTimeout, maxTTL) may refuse.
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`
	TTL         *Duration `json:"ttl,omitempty"`
	// ForkOf starts the session from another one the caller can see: its repository,
	// branch, model and persistence unless given here, and its conversation so far,
	// which seeds the new session's first conversation.
	ForkOf string `json:"forkOf,omitempty"`
}

// UpdateSessionRequest is the body of PATCH /api/v1/sessions/{id}; nil fields are unchanged.
type UpdateSessionRequest struct {
	Title       *string   `json:"title,omitempty"`
	Private     *bool     `json:"private,omitempty"`
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`
	TTL         *Duration `json:"ttl,omitempty"`
	// ResourceVersion, when set, must match or the update fails with 409 Conflict.
	ResourceVersion int64 `json:"resourceVersion,omitempty"`
}

// SessionList is a page of sessions. Continue is an opaque token for the next page,
// empty on the last one.
type SessionList struct {
	Items    []Session `json:"items"`
	Continue string    `json:"continue,omitempty"`
}

// SendMessageRequest is the body of POST /api/v1/sessions/{id}/messages.
type SendMessageRequest struct {
	Text string `json:"text"`
}

// Message is one message of a session's conversation, as GET
// /api/v1/sessions/{id}/messages returns it.
type Message struct {
	ID   string `json:"id"`
	Role string `json:"role"` // "user" or "assistant"
	// Text is the message's text parts, joined by newlines (an assistant turn that
	// failed: "error: " and the error).
	Text      string    `json:"text"`
	CreatedAt time.Time `json:"createdAt"`
	// Tools are the tool calls of an assistant message, in order.
	Tools []ToolCall `json:"tools,omitempty"`
	// Conversation is the OpenCode conversation the message belongs to: a session has
	// more than one when it was started again without a persistent volume.
	Conversation string `json:"conversation,omitempty"`
}

// ToolCall is one tool an assistant message ran (a shell command, a file edit, ...).
type ToolCall struct {
	Tool string `json:"tool"`
	// Status is OpenCode's: "pending", "running", "completed" or "error".
	Status string `json:"status"`
	// Title is OpenCode's one-line description of the call, when it has one.
	Title string `json:"title,omitempty"`
	// Input is the tool's arguments as OpenCode has them.
	Input json.RawMessage `json:"input,omitempty"`
	// Output is what the tool answered (the error for a failed call), cut to
	// MaxToolOutputBytes.
	Output string `json:"output,omitempty"`
}

// EventKeepAlive is how often the agent writes a comment on a session's event stream
// that is otherwise quiet, so a client can tell a quiet stream from a dead connection
// (a port-forward whose far end went away may never say so).
const EventKeepAlive = 10 * time.Second

// MaxToolOutputBytes bounds a ToolCall's recorded Output: a transcript keeps what a
// tool said, not every byte of a build log.
const MaxToolOutputBytes = 16 << 10

// Where a MessageList was read from.
const (
	// TranscriptLive: the session's OpenCode, now (and the agent's record of earlier
	// conversations of the session).
	TranscriptLive = "live"
	// TranscriptRecorded: the agent's record only (the session is not Running, or was
	// deleted, or its OpenCode did not answer).
	TranscriptRecorded = "recorded"
)

// MessageList is the conversation of a session, oldest first.
type MessageList struct {
	Items []Message `json:"items"`
	// Source says where it was read from: TranscriptLive or TranscriptRecorded.
	Source string `json:"source,omitempty"`
	// Deleted is when the session was deleted, for the transcript of a deleted session.
	Deleted *time.Time `json:"deleted,omitempty"`
}

// AttachInfo is the answer of POST /api/v1/sessions/{id}/attach: what a session's owner
// needs to reach OpenCode directly with a port-forward to the session pod. Only the owner
// receives it, since the password drives the session.
type AttachInfo struct {
	Password     string `json:"password"`
	PodName      string `json:"podName"`
	PodNamespace string `json:"podNamespace"`
}

// SessionWebResponse is the answer of POST /api/v1/sessions/{id}/web: a URL that opens
// the session's own OpenCode web UI in a browser, signed in as the caller, on the
// session's host (<id>.<the agent's session domain>). It works once, briefly: open it
// at once.
type SessionWebResponse struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// User is a person or service account known to the agent.
type User struct {
	ID          string    `json:"id"`
	Source      string    `json:"source"` // "header", "kubernetes", "token"
	Subject     string    `json:"subject"`
	Email       string    `json:"email,omitempty"`
	DisplayName string    `json:"displayName,omitempty"`
	Groups      []string  `json:"groups,omitempty"`
	Admin       bool      `json:"admin"`
	CreatedAt   time.Time `json:"createdAt"`
	LastSeenAt  time.Time `json:"lastSeenAt"`
}

// WhoAmI is the answer of GET /api/v1/whoami: who the agent thinks the caller is and
// what the caller may do.
type WhoAmI struct {
	User User `json:"user"`
	// Authenticator names the way the caller was recognised: "header", "kubernetes", "token".
	Authenticator string `json:"authenticator"`
	// Username and Groups are the identity used for SubjectAccessReview.
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
	// Permissions maps each verb on sessions.agents.cake.ai to whether it is allowed.
	Permissions map[string]bool `json:"permissions"`
	// HeaderAuth is the agent's header-authentication state (the same for every
	// caller), so a client such as `kubectl agents doctor` can tell why sign-ins through
	// the authenticating proxy fail. Empty from agents that predate it.
	HeaderAuth HeaderAuthState `json:"headerAuth,omitempty"`
	// HeaderAuthInfo is how the agent reads identity headers (the same for every
	// caller): `kubectl agents doctor` probes with these header names and judges the
	// trusted networks. Nil from agents that predate it.
	HeaderAuthInfo *HeaderAuthInfo `json:"headerAuthInfo,omitempty"`
}

// HeaderAuthInfo describes the agent's header-authentication configuration. It holds
// no secret: header names, networks and the JWT checks.
type HeaderAuthInfo struct {
	State HeaderAuthState `json:"state"`
	// EmailHeader, UserHeader and JWTHeader are the identity headers the agent reads
	// (canonical form; empty when not configured). With header auth disabled they are
	// still what the agent refuses.
	EmailHeader string `json:"emailHeader,omitempty"`
	UserHeader  string `json:"userHeader,omitempty"`
	JWTHeader   string `json:"jwtHeader,omitempty"`
	// TrustedProxyCIDRs are the networks identity headers are believed from.
	TrustedProxyCIDRs []string `json:"trustedProxyCIDRs,omitempty"`
	// JWTVerified: the JWT header is mandatory and checked against a JWKS, so a
	// forged header also needs a token signed by the identity provider.
	JWTVerified bool `json:"jwtVerified"`
	// JWTIssuer and JWTAudiences are required of a verified JWT when set.
	JWTIssuer    string   `json:"jwtIssuer,omitempty"`
	JWTAudiences []string `json:"jwtAudiences,omitempty"`
}

// HeaderAuthState says whether the agent believes the identity headers of an
// authenticating proxy.
type HeaderAuthState string

// Header-authentication states.
const (
	// HeaderAuthDisabled: header authentication is off; every request carrying identity
	// headers is refused.
	HeaderAuthDisabled HeaderAuthState = "Disabled"
	// HeaderAuthEnabled: identity headers are believed from the trusted proxy networks
	// and refused from anywhere else.
	HeaderAuthEnabled HeaderAuthState = "Enabled"
	// HeaderAuthNoTrustedProxy: header authentication is on but no trusted proxy network
	// is configured, so it is inert: every request carrying identity headers is refused
	// until headerAuth.trustedProxyCIDRs (agent flag --trusted-proxy-cidrs) is set.
	// Kubernetes identities and personal access tokens work as usual.
	HeaderAuthNoTrustedProxy HeaderAuthState = "NoTrustedProxy"
)

// Token is a personal access token. Token (the secret) is present only in the response
// that created it. Every token expires.
type Token struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// OwnerID and Owner (email, else user name) say whose it is.
	OwnerID    string     `json:"ownerId,omitempty"`
	Owner      string     `json:"owner,omitempty"`
	Token      string     `json:"token,omitempty"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  *time.Time `json:"expiresAt,omitempty"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
}

// CreateTokenRequest is the body of POST /api/v1/tokens.
type CreateTokenRequest struct {
	Name string `json:"name"`
	// ExpiresIn is the lifetime, at most the agent's maximum (a longer one is refused
	// with 400 naming it); zero or absent means the agent's default (30 days unless
	// configured). A token created with a token never outlives that token.
	ExpiresIn *Duration `json:"expiresIn,omitempty"`
}

// TokenList lists tokens (never their secrets): the caller's, or with ?user= an admin's
// view of another user's.
type TokenList struct {
	Items []Token `json:"items"`
}

// TokenRevocation is the answer of DELETE /api/v1/tokens?user=NAME, which revokes every
// token of the users NAME names (by id, Kubernetes user name or email: one person may be
// both a proxy user and a Kubernetes user).
type TokenRevocation struct {
	Users   []User `json:"users"`
	Revoked int    `json:"revoked"`
}

// CredentialKindToken is an HTTPS access token, sent to the git server as the password
// of HTTP basic authentication (GitHub, GitLab, Gitea and friends take it so).
const CredentialKindToken = "token"

// CredentialKindSSH is an SSH private key (a deploy key, say) with the host's public key
// from known_hosts: sessions on ssh:// and git@host:path repositories of the host use it.
// A host may have one credential of each kind.
const CredentialKindSSH = "ssh"

// Credential is a git credential a user linked, as listed: never its secret.
type Credential struct {
	// Host is the repository host it serves (with a port when the URL has one).
	Host string `json:"host"`
	Kind string `json:"kind"`
	// Username is the HTTP user name sent with a token; empty for an SSH key (the
	// repository URL names the login, as in git@host).
	Username string `json:"username"`
	// Fingerprint is an SSH key's SHA256 fingerprint, as ssh-keygen -l prints it.
	Fingerprint string `json:"fingerprint,omitempty"`
	// PublicKey is an SSH key's public half as an authorized_keys line: what to add at
	// the host as a deploy key. It is not secret.
	PublicKey string    `json:"publicKey,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// PutCredentialRequest is the body of PUT /api/v1/credentials/{host}: it stores, or
// replaces, the caller's credential of its kind for host.
type PutCredentialRequest struct {
	// Kind is CredentialKindToken (the default when empty) or CredentialKindSSH.
	Kind string `json:"kind,omitempty"`
	// Token is a token's secret; it is stored encrypted and never returned.
	Token string `json:"token,omitempty"`
	// Username is the HTTP user name sent with a token; empty means
	// DefaultCredentialUsername. An SSH key takes none.
	Username string `json:"username,omitempty"`
	// PrivateKey is an SSH key's private half, unencrypted, in OpenSSH or PEM format
	// (the contents of ~/.ssh/id_ed25519, not the .pub); it is stored encrypted and never
	// returned.
	PrivateKey string `json:"privateKey,omitempty"`
	// KnownHosts holds the host's public key as known_hosts lines (what `ssh-keyscan
	// HOST` prints); required with an SSH key, since a session's ssh accepts no host key
	// it was not given. Lines for other hosts are dropped.
	KnownHosts string `json:"knownHosts,omitempty"`
}

// DefaultCredentialUsername is sent with a token when none is given: GitHub ignores the
// user name of a token and most other servers accept any.
const DefaultCredentialUsername = "x-access-token"

// CredentialList lists the caller's credentials.
type CredentialList struct {
	Items []Credential `json:"items"`
}

// GitHubHost is the host a linked GitHub account's token is stored for.
const GitHubHost = "github.com"

// GitHubLink is the answer of POST /api/v1/github/link: the agent started GitHub's
// device flow; the user enters UserCode at VerificationURI, while the client polls
// POST /api/v1/github/link/{id} every Interval seconds until the status is final.
type GitHubLink struct {
	ID              string    `json:"id"`
	UserCode        string    `json:"userCode"`
	VerificationURI string    `json:"verificationUri"`
	ExpiresAt       time.Time `json:"expiresAt"`
	Interval        int       `json:"interval"`
}

// GitHub link statuses: pending (ask again after Interval seconds), and the final ones.
const (
	GitHubLinkPending = "pending"
	GitHubLinkLinked  = "linked"
	GitHubLinkDenied  = "denied"
	GitHubLinkExpired = "expired"
)

// GitHubLinkStatus is the answer of POST /api/v1/github/link/{id}.
type GitHubLinkStatus struct {
	Status string `json:"status"`
	// Interval is the polling interval in seconds from now on (GitHub may ask for less
	// frequent polls).
	Interval int    `json:"interval,omitempty"`
	Message  string `json:"message,omitempty"`
}

// AuditEvent records one state-changing call or denial.
type AuditEvent struct {
	ID        int64     `json:"id"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"` // user id, or the presented identity when unauthenticated
	Action    string    `json:"action"`
	Target    string    `json:"target,omitempty"`
	Outcome   string    `json:"outcome"` // "success", "denied", "error"
	Detail    string    `json:"detail,omitempty"`
	RequestID string    `json:"requestId,omitempty"`
}

// AuditList is a page of audit events, newest first.
type AuditList struct {
	Items    []AuditEvent `json:"items"`
	Continue string       `json:"continue,omitempty"`
}

// Readiness is the body of GET /readyz: each dependency and "ok" or the error.
type Readiness struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// VersionInfo is the body of GET /api/v1/version.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	// ChartVersion is the version of the Helm chart that installed the agent (empty when
	// it was not installed by the chart).
	ChartVersion string `json:"chartVersion,omitempty"`
	// SupportedClients is the range of plugin versions the agent supports ("0.2 to 0.4");
	// empty for a development build, which supports any.
	SupportedClients string `json:"supportedClients,omitempty"`
}

// Error is the body of every error response: {"error":{"code":"...","message":"..."}}.
type Error struct {
	Body ErrorBody `json:"error"`
}

// ErrorBody carries a stable machine code and a message for people.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements error so clients can return the agent's error as is.
func (e *Error) Error() string { return e.Body.Message }

// Stable error codes.
const (
	CodeBadRequest       = "BadRequest"
	CodeUnauthorized     = "Unauthorized"
	CodeForbidden        = "Forbidden"
	CodeNotFound         = "NotFound"
	CodeConflict         = "Conflict"
	CodeQuotaExceeded    = "QuotaExceeded"
	CodeTooLarge         = "RequestTooLarge"
	CodeUnavailable      = "Unavailable"
	CodeInternal         = "Internal"
	CodeMethodNotAllowed = "MethodNotAllowed"
	CodeNotRunning       = "SessionNotRunning"
)

// Limits enforced by the agent on requests.
const (
	MaxPromptBytes = 64 << 10
	MaxTitleLen    = 200
	MaxBodyBytes   = 1 << 20
)

// SecretPlaceholder stands for a stored secret value (a provider's options.apiKey or a
// header value) in GET /api/v1/providers; sent back in a PUT it keeps the stored value.
const SecretPlaceholder = "%%SECRET%%"

// Model is one model sessions may use (GET /api/v1/models).
type Model struct {
	// ID is "provider/model", the value of CreateSessionRequest.Model.
	ID string `json:"id"`
	// Name is the model's display name (its id when the provider names none).
	Name string `json:"name"`
	// Provider is the provider's id; ProviderName its display name.
	Provider     string `json:"provider"`
	ProviderName string `json:"providerName,omitempty"`
	// Default marks the model a session gets when it names none.
	Default bool `json:"default,omitempty"`
	// AnyModel marks a gateway provider (LiteLLM) whose models are not listed: any
	// "provider/NAME" is passed to it.
	AnyModel bool `json:"anyModel,omitempty"`
}

// ModelList is the answer of GET /api/v1/models.
type ModelList struct {
	Items []Model `json:"items"`
}

// SlackChannel is a Slack channel's settings: the repository a session started by a
// mention there uses when the message names none (GET|PUT
// /api/v1/integrations/slack/channels/{id}; admins).
type SlackChannel struct {
	// Channel is Slack's channel id (C0123ABCD), not its name.
	Channel string `json:"channel"`
	// Repo is the default repository ("" : none).
	Repo string `json:"repo"`
}

// Integration is the state of one chat or issue-tracker integration (Slack, Linear), as
// GET /api/v1/integrations reports it and `kubectl agents doctor` shows it.
type Integration struct {
	// Name is the integration's name: "slack", "linear".
	Name string `json:"name"`
	// Enabled: the agent serves it (enabled in values and configured).
	Enabled bool `json:"enabled"`
	// Configured: its credentials are set (they may be set while it is not enabled).
	Configured bool `json:"configured"`
	// Reachable: the service answered the agent with its credentials just now.
	Reachable bool `json:"reachable"`
	// Detail says who the agent is there (e.g. the bot and workspace), what failed, or
	// what to set to turn it on.
	Detail string `json:"detail,omitempty"`
	// Warning is a setting missing for the integration to work fully, and how to set it.
	Warning string `json:"warning,omitempty"`
}

// IntegrationList is the answer of GET /api/v1/integrations.
type IntegrationList struct {
	Items []Integration `json:"items"`
}

// LinearTeam is a Linear team's setting (PUT /api/v1/integrations/linear/teams/{key}):
// the repository sessions started from the team's issues work on.
type LinearTeam struct {
	// Key is the team's key, the prefix of its issue identifiers ("ENG").
	Key string `json:"key,omitempty"`
	// Repo is the repository URL, as a session's repo (https:// or SSH).
	Repo string `json:"repo"`
}

// Activity sources that are not a client's request (see Session.LastActivitySource).
const (
	// ActivityAttached: a client held a connection to the session's OpenCode open (an
	// attached TUI), however quiet.
	ActivityAttached = "attached"
	// ActivityOpenCodeBusy: at the idle deadline the session's OpenCode was working (a
	// model answering, a tool running), so the idle timer started again.
	ActivityOpenCodeBusy = "opencode-busy"
	// ActivityReady: the session became Running (its OpenCode answering). The idle timer
	// counts from there, so a slow start does not use up the idle timeout.
	ActivityReady = "ready"
	// ActivityPromptPending: at the idle deadline the agent had not yet delivered the
	// session's initial prompt, so the work it asked for has not begun.
	ActivityPromptPending = "prompt-pending"
)
