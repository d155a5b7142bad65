// Package opencode is a small client for the HTTP API that `opencode serve` exposes in
// every session pod: just what the agent needs to deliver prompts, read a session's
// conversation and relay its events. It takes an *http.Client so it runs over any
// transport, in particular a port-forward tunnel (tunnel.Pool.Transport), since a
// session's OpenCode listens on the pod's loopback only.
//
// The shapes here were checked against opencode-ai 1.18.33 (see DESIGN §8.2): every route
// needs Basic auth, messages come as {info, parts} pairs, and /event is a Server-Sent
// Events stream of {id, type, properties} objects.
package opencode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Port is the port OpenCode serves on inside a session pod.
const Port = 4096

// Username is OpenCode's Basic-auth user unless OPENCODE_SERVER_USERNAME says otherwise.
const Username = "opencode"

// LocalBaseURL is the base URL to use with a transport that ignores the URL's host (a
// tunnel): it is what OpenCode sees as its own address inside the pod.
const LocalBaseURL = "http://127.0.0.1:4096"

// maxResponseBytes bounds the JSON bodies the client reads; a long conversation is
// a few MiB at most.
const maxResponseBytes = 64 << 20

// Client talks to one OpenCode server. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	username string
	password string
	hc       *http.Client
}

// New returns a client for the OpenCode server at baseURL ("http://127.0.0.1:4096")
// that authenticates with password. A nil hc means http.DefaultClient.
func New(baseURL, password string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("opencode: invalid base URL %q: use a URL such as %q", baseURL, LocalBaseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, username: Username, password: password, hc: hc}, nil
}

// NewForTransport returns a client whose requests go through rt (typically
// tunnel.Pool.Transport for a session pod) to OpenCode's port.
func NewForTransport(rt http.RoundTripper, password string) *Client {
	c, err := New(LocalBaseURL, password, &http.Client{Transport: rt})
	if err != nil {
		panic(err) // LocalBaseURL is a valid constant
	}
	return c
}

// Error is a non-2xx answer from OpenCode.
type Error struct {
	Method     string
	Path       string
	StatusCode int
	Body       string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("opencode: %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.StatusCode == http.StatusUnauthorized {
		return msg + ": the session's OpenCode password does not match its Secret"
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// IsNotFound reports whether err is OpenCode answering 404 (for example an unknown
// session id).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("opencode: encode %s %s body: %w", method, path, err)
		}
		r = bytes.NewReader(b)
	}
	u := *c.base
	p, q, _ := strings.Cut(path, "?")
	u.Path += p
	u.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, fmt.Errorf("opencode: build %s %s: %w", method, path, err)
	}
	req.SetBasicAuth(c.username, c.password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do sends the request and decodes a JSON answer into out (unless out is nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("opencode: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if err := checkStatus(resp, method, path); err != nil {
		return err
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("opencode: decode %s %s: %w", method, path, err)
	}
	return nil
}

func checkStatus(resp *http.Response, method, path string) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return &Error{Method: method, Path: path, StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(b))}
}

// Branch returns the branch checked out in OpenCode's working directory: "" when HEAD
// is detached or there is no checkout. It reads .git/HEAD through GET /file/content
// rather than asking GET /vcs: in opencode-ai 1.18.33 /vcs keeps answering the branch
// it saw at start after a later `git checkout -b` (measured), and checking out a branch
// of its own is exactly what the agent in a session does before it pushes.
func (c *Client) Branch(ctx context.Context) (string, error) {
	var f struct {
		Type    string `json:"type"`
		Content string `json:"content"`
	}
	if err := c.do(ctx, http.MethodGet, "/file/content?path="+url.QueryEscape(".git/HEAD"), nil, &f); err != nil {
		if IsNotFound(err) {
			return "", nil
		}
		return "", err
	}
	ref, ok := strings.CutPrefix(strings.TrimSpace(f.Content), "ref: refs/heads/")
	if !ok {
		return "", nil // detached, or not a checkout
	}
	return ref, nil
}

// Health is the answer of GET /global/health.
type Health struct {
	Healthy bool   `json:"healthy"`
	Version string `json:"version"`
}

// ProbeTimeout bounds one health probe of WaitHealthy.
const ProbeTimeout = 5 * time.Second

// Health asks OpenCode whether it is up (and checks the password: health needs auth too).
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	if err := c.do(ctx, http.MethodGet, "/global/health", nil, &h); err != nil {
		return nil, err
	}
	if !h.Healthy {
		return &h, fmt.Errorf("opencode: server %s reports itself unhealthy", h.Version)
	}
	return &h, nil
}

// SetAPIKey stores key as the API key of provider (PUT /auth/{provider}), as `opencode
// auth login` would. OpenCode reads stored keys when it first loads its providers, so
// this counts only before the first prompt, and only for a provider whose configured
// options carry no apiKey of their own (an {env:...} reference, even to an unset
// variable, takes precedence).
func (c *Client) SetAPIKey(ctx context.Context, provider, key string) error {
	body := map[string]string{"type": "api", "key": key}
	return c.do(ctx, http.MethodPut, "/auth/"+url.PathEscape(provider), body, nil)
}

// WaitHealthy polls Health every interval until it succeeds or ctx ends. A 401 ends the
// wait at once: retrying a wrong password cannot help. Each probe has its own deadline
// (ProbeTimeout): a probe sent while the pod's port is not yet listening can stall inside a
// port-forward, and must not eat the whole wait.
func (c *Client) WaitHealthy(ctx context.Context, interval time.Duration) (*Health, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
		h, err := c.Health(pctx)
		cancel()
		if err == nil {
			return h, nil
		}
		var e *Error
		if errors.As(err, &e) && e.StatusCode == http.StatusUnauthorized {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("opencode: not healthy before %w: last error: %w", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Session is an OpenCode conversation (what OpenCode calls a session; one agent session
// pod may hold several).
type Session struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	Directory string `json:"directory"`
	Version   string `json:"version"`
	Time      struct {
		Created int64 `json:"created"` // Unix milliseconds
		Updated int64 `json:"updated"`
	} `json:"time"`
}

// CreatedAt returns when the session was created.
func (s *Session) CreatedAt() time.Time { return time.UnixMilli(s.Time.Created) }

// CreateSession creates a conversation. An empty title lets OpenCode name it from the
// first prompt (it asks the model).
func (c *Client) CreateSession(ctx context.Context, title string) (*Session, error) {
	body := map[string]string{}
	if title != "" {
		body["title"] = title
	}
	var s Session
	if err := c.do(ctx, http.MethodPost, "/session", body, &s); err != nil {
		return nil, err
	}
	if s.ID == "" {
		return nil, errors.New("opencode: POST /session returned no session id")
	}
	return &s, nil
}

// Sessions lists the conversations, as OpenCode orders them.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	var ss []Session
	if err := c.do(ctx, http.MethodGet, "/session", nil, &ss); err != nil {
		return nil, err
	}
	return ss, nil
}

// textPart is the body part OpenCode takes for a prompt.
type textPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// PromptAsync sends text as the next user message of the conversation and returns once
// OpenCode accepted it (204); the model's answer arrives in Messages and Events.
func (c *Client) PromptAsync(ctx context.Context, sessionID, text string) error {
	if sessionID == "" {
		return errors.New("opencode: a session id is required to send a prompt")
	}
	body := map[string]any{"parts": []textPart{{Type: "text", Text: text}}}
	return c.do(ctx, http.MethodPost, "/session/"+url.PathEscape(sessionID)+"/prompt_async", body, nil)
}

// AddContext adds text to the conversation as a user message the model does not answer
// now (OpenCode's noReply), returning once it is stored: the model reads it with the
// next prompt. It is how a conversation started afresh is given what came before.
func (c *Client) AddContext(ctx context.Context, sessionID, text string) error {
	if sessionID == "" {
		return errors.New("opencode: a session id is required to add context")
	}
	body := map[string]any{"noReply": true, "parts": []textPart{{Type: "text", Text: text}}}
	return c.do(ctx, http.MethodPost, "/session/"+url.PathEscape(sessionID)+"/message", body, nil)
}

// GetSession returns the conversation with the given id (an *Error with StatusCode 404
// when OpenCode does not know it, see IsNotFound).
func (c *Client) GetSession(ctx context.Context, sessionID string) (*Session, error) {
	if sessionID == "" {
		return nil, errors.New("opencode: a session id is required")
	}
	var s Session
	if err := c.do(ctx, http.MethodGet, "/session/"+url.PathEscape(sessionID), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Abort stops the model's current turn in the conversation.
func (c *Client) Abort(ctx context.Context, sessionID string) error {
	return c.do(ctx, http.MethodPost, "/session/"+url.PathEscape(sessionID)+"/abort", nil, nil)
}

// SessionStatus is the state of one conversation in GET /session/status.
type SessionStatus struct {
	// Type is "busy" while the model works, "retry" while OpenCode retries the model.
	Type string `json:"type"`
}

// Status returns the conversations that are not idle, keyed by session id; an empty
// map means every conversation is idle.
func (c *Client) Status(ctx context.Context) (map[string]SessionStatus, error) {
	st := map[string]SessionStatus{}
	if err := c.do(ctx, http.MethodGet, "/session/status", nil, &st); err != nil {
		return nil, err
	}
	return st, nil
}

// wireMessage is one element of GET /session/{id}/message.
type wireMessage struct {
	Info struct {
		ID   string `json:"id"`
		Role string `json:"role"`
		Time struct {
			Created int64 `json:"created"`
		} `json:"time"`
		Error *struct {
			Name string `json:"name"`
			Data struct {
				Message string `json:"message"`
			} `json:"data"`
		} `json:"error"`
	} `json:"info"`
	Parts []struct {
		Type      string `json:"type"`
		Text      string `json:"text"`
		Synthetic bool   `json:"synthetic"`
		Ignored   bool   `json:"ignored"`
		// Tool parts: the tool and its state.
		Tool  string `json:"tool"`
		State struct {
			Status string          `json:"status"`
			Title  string          `json:"title"`
			Input  json.RawMessage `json:"input"`
			Output string          `json:"output"`
			Error  string          `json:"error"`
		} `json:"state"`
	} `json:"parts"`
}

// Messages returns the conversation: each message's role, the concatenation of its
// text parts and its tool calls (reasoning and step markers are left out; text OpenCode
// injected itself is too). An assistant turn that failed carries the error as its text.
// Every message names sessionID as its Conversation.
func (c *Client) Messages(ctx context.Context, sessionID string) ([]apiv1.Message, error) {
	if sessionID == "" {
		return nil, errors.New("opencode: a session id is required to read messages")
	}
	var wire []wireMessage
	if err := c.do(ctx, http.MethodGet, "/session/"+url.PathEscape(sessionID)+"/message", nil, &wire); err != nil {
		return nil, err
	}
	out := make([]apiv1.Message, 0, len(wire))
	for _, m := range wire {
		var texts []string
		var tools []apiv1.ToolCall
		for _, p := range m.Parts {
			switch {
			case p.Type == "text" && !p.Synthetic && !p.Ignored && p.Text != "":
				texts = append(texts, p.Text)
			case p.Type == "tool" && p.Tool != "":
				out := p.State.Output
				if p.State.Status == "error" {
					out = p.State.Error
				}
				var in json.RawMessage
				if len(p.State.Input) > 0 && string(p.State.Input) != "null" && string(p.State.Input) != "{}" {
					in = p.State.Input
				}
				tools = append(tools, apiv1.ToolCall{Tool: p.Tool, Status: p.State.Status, Title: p.State.Title, Input: in, Output: cut(out, apiv1.MaxToolOutputBytes)})
			}
		}
		text := strings.Join(texts, "\n")
		if text == "" && m.Info.Error != nil {
			msg := m.Info.Error.Data.Message
			if msg == "" {
				msg = m.Info.Error.Name
			}
			text = "error: " + msg
		}
		out = append(out, apiv1.Message{
			ID:           m.Info.ID,
			Role:         m.Info.Role,
			Text:         text,
			CreatedAt:    time.UnixMilli(m.Info.Time.Created).UTC(),
			Tools:        tools,
			Conversation: sessionID,
		})
	}
	return out, nil
}

// cut returns s cut to at most n bytes on a rune boundary, saying how much was left out.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	end := n
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + fmt.Sprintf("\n[... %d more bytes]", len(s)-end)
}

// DeliverPrompt starts a conversation titled title and sends prompt as its first
// message, returning the conversation's id. It is for tests and tools: the agent
// itself delivers a session's initial prompt in agent/app, which also records the
// conversation id and the delivery in the store. It waits (until ctx ends) for
// OpenCode to answer its health check first, since the pod turning Ready and the
// tunnel reaching OpenCode can race. When the conversation was created but the prompt could not be sent, the id
// is returned with the error so a retry can call PromptAsync on the same conversation
// instead of starting another.
func DeliverPrompt(ctx context.Context, c *Client, title, prompt string) (string, error) {
	if _, err := c.WaitHealthy(ctx, 500*time.Millisecond); err != nil {
		return "", err
	}
	s, err := c.CreateSession(ctx, title)
	if err != nil {
		return "", err
	}
	if err := c.PromptAsync(ctx, s.ID, prompt); err != nil {
		return s.ID, err
	}
	return s.ID, nil
}
