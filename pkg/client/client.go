// Package client is a typed HTTP client for the agent's API (/api/v1).
//
// It imports only the standard library and pkg/api/v1 so that anything may use it — the
// kubectl plugin, end-to-end tests, scripts — without pulling in the agent's cgo
// dependencies. How the bytes reach the agent (a port-forward, an ingress) and how the
// caller proves who it is (a kube bearer token or client certificate in the transport, a
// personal token) is the http.Client's business, so the same Client works in every mode.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Client calls the agent's API at a base URL. The zero value is not usable; use New.
type Client struct {
	base *url.URL
	http *http.Client
	// token, when set, is sent as "Authorization: Bearer <token>" (a personal access
	// token in --server mode). Kube identities travel in the http.Client's transport.
	token     string
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithToken makes the client send a personal access token on every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithUserAgent sets the User-Agent header, so the agent's logs and audit name the caller.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a Client for the agent at baseURL (scheme and host, optionally a path
// prefix when the agent sits behind an ingress under a sub-path). A nil httpClient
// means http.DefaultClient.
func New(baseURL string, httpClient *http.Client, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("invalid agent URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("invalid agent URL %q: want http(s)://host[:port][/prefix]", baseURL)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	c := &Client{base: u, http: httpClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the agent URL the client talks to.
func (c *Client) BaseURL() *url.URL { u := *c.base; return &u }

// HTTPClient returns the underlying http.Client (its transport carries the caller's
// credentials), for callers that stream arbitrary requests such as the attach proxy.
func (c *Client) HTTPClient() *http.Client { return c.http }

// Authorize adds the client's own credentials (the personal token, the User-Agent) to a
// request built outside this package, such as one relayed by the attach proxy.
func (c *Client) Authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.userAgent != "" && req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
}

// URL returns the absolute URL of an API path such as "/api/v1/sessions"; path is in
// escaped form (segments escaped with url.PathEscape).
func (c *Client) URL(path string, query url.Values) *url.URL {
	u := *c.base
	raw := strings.TrimSuffix(u.EscapedPath(), "/") + path
	if p, err := url.PathUnescape(raw); err == nil {
		u.Path, u.RawPath = p, raw
	} else {
		u.Path, u.RawPath = raw, ""
	}
	u.RawQuery = query.Encode()
	return &u
}

// StatusError is a non-2xx answer from the agent. It unwraps to the *apiv1.Error the
// agent sent (or one synthesised from the status when the body was not the error
// envelope), so errors.As(err, new(*apiv1.Error)) works as well.
type StatusError struct {
	StatusCode int
	Err        *apiv1.Error
}

func (e *StatusError) Error() string {
	msg := e.Err.Body.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("%s (HTTP %d %s)", msg, e.StatusCode, e.Err.Body.Code)
}

// Unwrap returns the agent's error envelope.
func (e *StatusError) Unwrap() error { return e.Err }

// StatusCode returns the HTTP status of err when it is (or wraps) a *StatusError, else 0.
func StatusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

// IsNotFound reports whether the agent answered 404.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// decodeError turns a non-2xx response into a *StatusError, keeping whatever the agent
// (or a proxy in front of it) said when the body is not the JSON error envelope.
func decodeError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	apiErr := &apiv1.Error{}
	if err := json.Unmarshal(body, apiErr); err != nil || apiErr.Body.Code == "" && apiErr.Body.Message == "" {
		apiErr = &apiv1.Error{Body: apiv1.ErrorBody{Code: codeForStatus(resp.StatusCode), Message: strings.TrimSpace(string(body))}}
		if len(apiErr.Body.Message) > 200 {
			apiErr.Body.Message = apiErr.Body.Message[:200] + "..."
		}
	}
	return &StatusError{StatusCode: resp.StatusCode, Err: apiErr}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return apiv1.CodeBadRequest
	case http.StatusUnauthorized:
		return apiv1.CodeUnauthorized
	case http.StatusForbidden:
		return apiv1.CodeForbidden
	case http.StatusNotFound:
		return apiv1.CodeNotFound
	case http.StatusConflict:
		return apiv1.CodeConflict
	case http.StatusRequestEntityTooLarge:
		return apiv1.CodeTooLarge
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return apiv1.CodeUnavailable
	case http.StatusMethodNotAllowed:
		return apiv1.CodeMethodNotAllowed
	}
	return apiv1.CodeInternal
}

// NewRequest builds a request to an API path with the client's credentials; in, when
// not nil, is sent as JSON.
func (c *Client) NewRequest(ctx context.Context, method, path string, query url.Values, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL(path, query).String(), body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	c.Authorize(req)
	return req, nil
}

// Do sends req and decodes a 2xx JSON answer into out (when out is not nil). Any other
// status becomes a *StatusError.
func (c *Client) Do(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

func (c *Client) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	req, err := c.NewRequest(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	return c.Do(req, out)
}

func sessionPath(id string, rest ...string) string {
	p := "/api/v1/sessions/" + url.PathEscape(id)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Healthz calls GET /healthz: the agent process is alive.
func (c *Client) Healthz(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Readyz calls GET /readyz. A not-ready agent answers 503 with the same body, so the
// Readiness is returned whenever it could be decoded, together with the error.
func (c *Client) Readyz(ctx context.Context) (*apiv1.Readiness, error) {
	req, err := c.NewRequest(ctx, http.MethodGet, "/readyz", nil, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /readyz: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read /readyz: %w", err)
	}
	var r apiv1.Readiness
	if jerr := json.Unmarshal(body, &r); jerr == nil && r.Checks != nil {
		if resp.StatusCode != http.StatusOK {
			return &r, &StatusError{StatusCode: resp.StatusCode, Err: &apiv1.Error{Body: apiv1.ErrorBody{Code: apiv1.CodeUnavailable, Message: "agent not ready"}}}
		}
		return &r, nil
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil, decodeError(resp)
	}
	return nil, fmt.Errorf("decode answer of GET /readyz: unexpected body %q", truncate(string(body), 100))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Version calls GET /api/v1/version.
func (c *Client) Version(ctx context.Context) (*apiv1.VersionInfo, error) {
	var v apiv1.VersionInfo
	return &v, c.call(ctx, http.MethodGet, "/api/v1/version", nil, nil, &v)
}

// WhoAmI calls GET /api/v1/whoami.
func (c *Client) WhoAmI(ctx context.Context) (*apiv1.WhoAmI, error) {
	var w apiv1.WhoAmI
	return &w, c.call(ctx, http.MethodGet, "/api/v1/whoami", nil, nil, &w)
}

// ListOptions filter GET /api/v1/sessions.
type ListOptions struct {
	// Limit is the page size (0: the agent's default); Continue the token of the
	// previous page.
	Limit    int
	Continue string
	// State keeps only sessions in that state.
	State apiv1.SessionState
	// Owner is "me" or a user id; empty means what the agent shows by default (the
	// caller's own sessions and shared ones).
	Owner string
	// AllUsers asks for every user's sessions (admins only).
	AllUsers bool
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Continue != "" {
		q.Set("continue", o.Continue)
	}
	if o.State != "" {
		q.Set("state", string(o.State))
	}
	if o.Owner != "" {
		q.Set("owner", o.Owner)
	}
	if o.AllUsers {
		q.Set("all", "true")
	}
	return q
}

// ListSessions returns one page of sessions.
func (c *Client) ListSessions(ctx context.Context, opts ListOptions) (*apiv1.SessionList, error) {
	var l apiv1.SessionList
	return &l, c.call(ctx, http.MethodGet, "/api/v1/sessions", opts.query(), nil, &l)
}

// ListAllSessions follows continue tokens and returns every matching session.
func (c *Client) ListAllSessions(ctx context.Context, opts ListOptions) ([]apiv1.Session, error) {
	var all []apiv1.Session
	seen := map[string]bool{}
	for {
		page, err := c.ListSessions(ctx, opts)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Continue == "" {
			return all, nil
		}
		// A buggy server that repeats a token would otherwise loop forever.
		if seen[page.Continue] {
			return nil, fmt.Errorf("list sessions: the agent repeated continue token %q", page.Continue)
		}
		seen[page.Continue] = true
		opts.Continue = page.Continue
	}
}

// CreateSession calls POST /api/v1/sessions.
func (c *Client) CreateSession(ctx context.Context, in apiv1.CreateSessionRequest) (*apiv1.Session, error) {
	var s apiv1.Session
	return &s, c.call(ctx, http.MethodPost, "/api/v1/sessions", nil, in, &s)
}

// GetSession calls GET /api/v1/sessions/{id}.
func (c *Client) GetSession(ctx context.Context, id string) (*apiv1.Session, error) {
	var s apiv1.Session
	return &s, c.call(ctx, http.MethodGet, sessionPath(id), nil, nil, &s)
}

// UpdateSession calls PATCH /api/v1/sessions/{id}.
func (c *Client) UpdateSession(ctx context.Context, id string, in apiv1.UpdateSessionRequest) (*apiv1.Session, error) {
	var s apiv1.Session
	return &s, c.call(ctx, http.MethodPatch, sessionPath(id), nil, in, &s)
}

// DeleteSession calls DELETE /api/v1/sessions/{id}; the session comes back in state
// Deleting while the agent removes its pod.
func (c *Client) DeleteSession(ctx context.Context, id string) (*apiv1.Session, error) {
	var s apiv1.Session
	return &s, c.call(ctx, http.MethodDelete, sessionPath(id), nil, nil, &s)
}

// StopSession calls POST /api/v1/sessions/{id}/stop.
func (c *Client) StopSession(ctx context.Context, id string) (*apiv1.Session, error) {
	var s apiv1.Session
	return &s, c.call(ctx, http.MethodPost, sessionPath(id, "stop"), nil, nil, &s)
}

// SessionWeb calls POST /api/v1/sessions/{id}/web: a single-use, short-lived URL that
// opens the session's own OpenCode web UI on its host, signed in as the caller.
func (c *Client) SessionWeb(ctx context.Context, id string) (*apiv1.SessionWebResponse, error) {
	var out apiv1.SessionWebResponse
	return &out, c.call(ctx, http.MethodPost, sessionPath(id, "web"), nil, nil, &out)
}

// StartSession calls POST /api/v1/sessions/{id}/start.
func (c *Client) StartSession(ctx context.Context, id string) (*apiv1.Session, error) {
	var s apiv1.Session
	return &s, c.call(ctx, http.MethodPost, sessionPath(id, "start"), nil, nil, &s)
}

// SendMessage calls POST /api/v1/sessions/{id}/messages; the agent accepts the prompt
// (202) and OpenCode works on it asynchronously.
func (c *Client) SendMessage(ctx context.Context, id, text string) error {
	return c.call(ctx, http.MethodPost, sessionPath(id, "messages"), nil, apiv1.SendMessageRequest{Text: text}, nil)
}

// Messages calls GET /api/v1/sessions/{id}/logs: the conversation so far (the recorded
// transcript of a session that is stopped or deleted).
func (c *Client) Messages(ctx context.Context, id string) (*apiv1.MessageList, error) {
	var l apiv1.MessageList
	return &l, c.call(ctx, http.MethodGet, sessionPath(id, "logs"), nil, nil, &l)
}

// Attach calls POST /api/v1/sessions/{id}/attach (owner only): what the owner needs to
// reach OpenCode directly with a port-forward to the session pod.
func (c *Client) Attach(ctx context.Context, id string) (*apiv1.AttachInfo, error) {
	var a apiv1.AttachInfo
	return &a, c.call(ctx, http.MethodPost, sessionPath(id, "attach"), nil, nil, &a)
}

// ProxyPath is the API path that relays to OpenCode inside the session, with rest
// ("/", "/event", ...) appended.
func ProxyPath(id, rest string) string {
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	return sessionPath(id, "proxy") + rest
}

// CreateToken calls POST /api/v1/tokens; the answer is the only place the secret appears.
func (c *Client) CreateToken(ctx context.Context, in apiv1.CreateTokenRequest) (*apiv1.Token, error) {
	var t apiv1.Token
	return &t, c.call(ctx, http.MethodPost, "/api/v1/tokens", nil, in, &t)
}

// ListTokens calls GET /api/v1/tokens: the caller's tokens, or with user set (an id,
// Kubernetes user name or email) that user's, which only admins may see.
func (c *Client) ListTokens(ctx context.Context, user string) (*apiv1.TokenList, error) {
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	var l apiv1.TokenList
	return &l, c.call(ctx, http.MethodGet, "/api/v1/tokens", q, nil, &l)
}

// RevokeUserTokens calls DELETE /api/v1/tokens?user=USER: every token of the users USER
// names is revoked (admins; anyone for "me").
func (c *Client) RevokeUserTokens(ctx context.Context, user string) (*apiv1.TokenRevocation, error) {
	var r apiv1.TokenRevocation
	return &r, c.call(ctx, http.MethodDelete, "/api/v1/tokens", url.Values{"user": {user}}, nil, &r)
}

// DeleteToken calls DELETE /api/v1/tokens/{id}.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}

// AuditQuery selects audit events: Actor and Target match exactly (empty: any); Limit
// is the page size (0: the agent's default); Continue is the last page's token.
type AuditQuery struct {
	Actor, Target string
	Limit         int
	Continue      string
}

// Audit calls GET /api/v1/audit (admins only): a page of events, newest first.
func (c *Client) Audit(ctx context.Context, aq AuditQuery) (*apiv1.AuditList, error) {
	q := url.Values{}
	if aq.Limit > 0 {
		q.Set("limit", strconv.Itoa(aq.Limit))
	}
	for k, v := range map[string]string{"continue": aq.Continue, "actor": aq.Actor, "target": aq.Target} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var l apiv1.AuditList
	return &l, c.call(ctx, http.MethodGet, "/api/v1/audit", q, nil, &l)
}

// PutCredential calls PUT /api/v1/credentials/{host}: it stores or replaces the caller's
// git access token for host. The answer never holds the token.
func (c *Client) PutCredential(ctx context.Context, host string, in apiv1.PutCredentialRequest) (*apiv1.Credential, error) {
	var out apiv1.Credential
	return &out, c.call(ctx, http.MethodPut, "/api/v1/credentials/"+url.PathEscape(host), nil, in, &out)
}

// ListCredentials calls GET /api/v1/credentials: the caller's git credentials, without
// their secrets.
func (c *Client) ListCredentials(ctx context.Context) (*apiv1.CredentialList, error) {
	var l apiv1.CredentialList
	return &l, c.call(ctx, http.MethodGet, "/api/v1/credentials", nil, nil, &l)
}

// DeleteCredential calls DELETE /api/v1/credentials/{host}: it removes the caller's
// credential of kind for host, or both kinds when kind is empty.
func (c *Client) DeleteCredential(ctx context.Context, host, kind string) error {
	var q url.Values
	if kind != "" {
		q = url.Values{"kind": {kind}}
	}
	return c.call(ctx, http.MethodDelete, "/api/v1/credentials/"+url.PathEscape(host), q, nil, nil)
}

// StartGitHubLink calls POST /api/v1/github/link: the agent starts GitHub's device flow
// and answers the code the user enters at GitHub.
func (c *Client) StartGitHubLink(ctx context.Context) (*apiv1.GitHubLink, error) {
	var l apiv1.GitHubLink
	return &l, c.call(ctx, http.MethodPost, "/api/v1/github/link", nil, nil, &l)
}

// PollGitHubLink calls POST /api/v1/github/link/{id}: whether the user entered the code.
func (c *Client) PollGitHubLink(ctx context.Context, id string) (*apiv1.GitHubLinkStatus, error) {
	var st apiv1.GitHubLinkStatus
	return &st, c.call(ctx, http.MethodPost, "/api/v1/github/link/"+url.PathEscape(id), nil, nil, &st)
}

// Models calls GET /api/v1/models: the models a session may use.
func (c *Client) Models(ctx context.Context) (*apiv1.ModelList, error) {
	var l apiv1.ModelList
	return &l, c.call(ctx, http.MethodGet, "/api/v1/models", nil, nil, &l)
}

// Providers calls GET /api/v1/providers (admins): OpenCode's provider JSON with every
// secret value as apiv1.SecretPlaceholder.
func (c *Client) Providers(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, c.call(ctx, http.MethodGet, "/api/v1/providers", nil, nil, &raw)
}

// PutProviders calls PUT /api/v1/providers (admins) with the provider JSON and returns
// the stored providers as GET shows them.
func (c *Client) PutProviders(ctx context.Context, providers json.RawMessage) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, c.call(ctx, http.MethodPut, "/api/v1/providers", nil, providers, &raw)
}

// Integrations calls GET /api/v1/integrations: whether Slack and Linear are configured
// and reachable from the agent.
func (c *Client) Integrations(ctx context.Context) (*apiv1.IntegrationList, error) {
	var l apiv1.IntegrationList
	return &l, c.call(ctx, http.MethodGet, "/api/v1/integrations", nil, nil, &l)
}

// SlackChannel calls GET /api/v1/integrations/slack/channels/{channel}: the channel's
// default repository ("" when it has none; admins only).
func (c *Client) SlackChannel(ctx context.Context, channel string) (*apiv1.SlackChannel, error) {
	var out apiv1.SlackChannel
	return &out, c.call(ctx, http.MethodGet, "/api/v1/integrations/slack/channels/"+url.PathEscape(channel), nil, nil, &out)
}

// LinearTeam calls GET /api/v1/integrations/linear/teams/{key}: the repository sessions of
// the team's issues start on (a NotFound error when it has none; admins only).
func (c *Client) LinearTeam(ctx context.Context, key string) (*apiv1.LinearTeam, error) {
	var out apiv1.LinearTeam
	return &out, c.call(ctx, http.MethodGet, "/api/v1/integrations/linear/teams/"+url.PathEscape(key), nil, nil, &out)
}

// SetLinearTeam calls PUT /api/v1/integrations/linear/teams/{key}: the repository
// sessions of the team's issues start on ("" removes it; admins only).
func (c *Client) SetLinearTeam(ctx context.Context, key, repo string) (*apiv1.LinearTeam, error) {
	var out apiv1.LinearTeam
	return &out, c.call(ctx, http.MethodPut, "/api/v1/integrations/linear/teams/"+url.PathEscape(key), nil, apiv1.LinearTeam{Repo: repo}, &out)
}

// SetSlackChannel calls PUT /api/v1/integrations/slack/channels/{channel}: the
// repository sessions started in that Slack channel use when the message names none
// ("" removes it; admins only).
func (c *Client) SetSlackChannel(ctx context.Context, channel, repo string) (*apiv1.SlackChannel, error) {
	var out apiv1.SlackChannel
	return &out, c.call(ctx, http.MethodPut, "/api/v1/integrations/slack/channels/"+url.PathEscape(channel), nil, apiv1.SlackChannel{Repo: repo}, &out)
}
