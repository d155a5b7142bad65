// Package litellm is a client for the parts of LiteLLM's proxy admin API the agent
// uses with the master key: virtual keys (POST /key/generate, POST /key/delete,
// GET /key/info) and internal users' budgets (POST /user/update, POST /user/new). The
// master key stays in the agent; sessions only ever see the virtual keys made here.
//
// Every error names LiteLLM and the call that failed; a gateway that cannot be reached
// or answers 5xx wraps ErrUnavailable, so callers can tell an outage (retry, answer 503)
// from a refusal (a bad request, a wrong master key).
package litellm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrUnavailable is wrapped by errors of calls LiteLLM did not answer, or answered
// with a server error.
var ErrUnavailable = errors.New("LiteLLM is unavailable")

// ErrNotFound is wrapped when LiteLLM answers 404 (no such key or user).
var ErrNotFound = errors.New("not found in LiteLLM")

// Client calls one LiteLLM proxy with its master key.
type Client struct {
	base      *url.URL
	masterKey string
	http      *http.Client
}

// New returns a client for the proxy at baseURL, the OpenAI-compatible URL sessions
// use (a trailing /v1 is dropped: the admin routes live at the root).
func New(baseURL, masterKey string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("LiteLLM base URL %q is not an http(s) URL", baseURL)
	}
	if masterKey == "" {
		return nil, errors.New("LiteLLM master key is empty: set --litellm-api-key (the chart's litellm.secret)")
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/v1")
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	return &Client{base: u, masterKey: masterKey, http: hc}, nil
}

// KeyRequest describes a virtual key to generate.
type KeyRequest struct {
	// Alias names the key in LiteLLM (key_alias); it must be unique.
	Alias string
	// Models the key may call; empty means every model the proxy serves.
	Models []string
	// MaxBudget in USD; zero means no budget of its own.
	MaxBudget float64
	// Duration after which LiteLLM expires the key; zero means no expiry.
	Duration time.Duration
	// UserID ties the key's spend to a LiteLLM user (and that user's budget).
	UserID string
	// Metadata is stored on the key.
	Metadata map[string]string
}

// Key is a generated virtual key.
type Key struct {
	// Key is the secret the client presents (sk-...).
	Key string
	// Token is LiteLLM's hash of the key: not a secret, accepted by /key/info.
	Token string
	Alias string
}

// GenerateKey makes a virtual key (POST /key/generate).
func (c *Client) GenerateKey(ctx context.Context, r KeyRequest) (*Key, error) {
	body := map[string]any{"key_alias": r.Alias}
	if len(r.Models) > 0 {
		body["models"] = r.Models
	}
	if r.MaxBudget > 0 {
		body["max_budget"] = r.MaxBudget
	}
	if r.Duration > 0 {
		body["duration"] = seconds(r.Duration)
	}
	if r.UserID != "" {
		body["user_id"] = r.UserID
	}
	if len(r.Metadata) > 0 {
		body["metadata"] = r.Metadata
	}
	var out struct {
		Key      string `json:"key"`
		Token    string `json:"token"`
		TokenID  string `json:"token_id"`
		KeyAlias string `json:"key_alias"`
	}
	if err := c.do(ctx, "generate a key", http.MethodPost, "/key/generate", nil, body, &out); err != nil {
		return nil, err
	}
	if out.Key == "" {
		return nil, &Error{errors.New("LiteLLM generate a key: the answer holds no key")}
	}
	// LiteLLM's "token" may be the key itself (its response model copies key into
	// token), so it is never used: token_id is the hash LiteLLM stores, and without it
	// the hash is computed as LiteLLM does (sha256 hex of the key).
	tok := out.TokenID
	if tok == "" || tok == out.Key {
		tok = HashKey(out.Key)
	}
	return &Key{Key: out.Key, Token: tok, Alias: orText(out.KeyAlias, r.Alias)}, nil
}

// HashKey is LiteLLM's hashed token of a virtual key (sha256, hex): what it stores
// and what /key/info accepts in place of the key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// DeleteKeysByAlias deletes the keys with these aliases (POST /key/delete). Keys that
// do not exist (deleted before) are not an error.
func (c *Client) DeleteKeysByAlias(ctx context.Context, aliases ...string) error {
	if len(aliases) == 0 {
		return nil
	}
	err := c.do(ctx, "delete keys", http.MethodPost, "/key/delete", nil, map[string]any{"key_aliases": aliases}, nil)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// KeyInfo is what the agent reads of a key.
type KeyInfo struct {
	// Spend in USD so far.
	Spend float64
	// MaxBudget in USD; nil when the key has none.
	MaxBudget *float64
	UserID    string
	Expires   *time.Time
}

// KeyInfo reads a key's spend and budget (GET /key/info?key=); key may be the key or
// its Token.
func (c *Client) KeyInfo(ctx context.Context, key string) (*KeyInfo, error) {
	var out struct {
		Info struct {
			Spend     float64    `json:"spend"`
			MaxBudget *float64   `json:"max_budget"`
			UserID    string     `json:"user_id"`
			Expires   *time.Time `json:"expires"`
		} `json:"info"`
	}
	if err := c.do(ctx, "read key info", http.MethodGet, "/key/info", url.Values{"key": {key}}, nil, &out); err != nil {
		return nil, err
	}
	return &KeyInfo{Spend: out.Info.Spend, MaxBudget: out.Info.MaxBudget, UserID: out.Info.UserID, Expires: out.Info.Expires}, nil
}

// SetUserBudget makes sure LiteLLM has an internal user userID whose keys together may
// spend at most maxBudget USD, per period when period > 0 (LiteLLM's budget_duration:
// it resets the user's spend every period) and in all when period is 0: POST
// /user/update, and POST /user/new when the user does not exist yet.
func (c *Client) SetUserBudget(ctx context.Context, userID string, maxBudget float64, period time.Duration) error {
	body := map[string]any{"user_id": userID, "max_budget": maxBudget}
	if period > 0 {
		body["budget_duration"] = seconds(period)
	}
	err := c.do(ctx, "update a user's budget", http.MethodPost, "/user/update", nil, body, nil)
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	return c.do(ctx, "create a user", http.MethodPost, "/user/new", nil, body, nil)
}

// Error is the error of every call: its text holds LiteLLM's answer, which can quote
// the master key (LiteLLM's 401 body starts with a prefix of the key it refused), so it
// belongs in the agent's log only; users, audit records and session messages get
// Advice instead.
type Error struct{ err error }

func (e *Error) Error() string { return e.err.Error() }

// Unwrap gives ErrUnavailable and ErrNotFound to errors.Is.
func (e *Error) Unwrap() error { return e.err }

// IsError reports whether err comes from a LiteLLM call.
func IsError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Advice is the fixed text shown for a failed LiteLLM call in place of its detail: what
// an admin should check.
func Advice(err error) string {
	if errors.Is(err, ErrUnavailable) {
		return "LiteLLM cannot be reached or answers with server errors: an admin should check that LiteLLM is up at the chart's litellm.baseURL (the agent's log has the detail)"
	}
	return "LiteLLM refused the agent's key management call: an admin should check the chart's litellm.secret (the master key) and litellm.baseURL (the agent's log has the detail)"
}

// do sends one request with the master key and decodes a 2xx answer into out; every
// error it returns is an *Error.
func (c *Client) do(ctx context.Context, what, method, path string, q url.Values, body, out any) error {
	if err := c.call(ctx, what, method, path, q, body, out); err != nil {
		return &Error{err}
	}
	return nil
}

func (c *Client) call(ctx context.Context, what, method, path string, q url.Values, body, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("LiteLLM %s: %w", what, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("LiteLLM %s: %w", what, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.masterKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL error names the host, never the key (it is in a header).
		return fmt.Errorf("LiteLLM %s: %w: %w", what, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		msg := errorMessage(b)
		switch {
		case resp.StatusCode >= 500:
			return fmt.Errorf("LiteLLM %s: %w: HTTP %d: %s", what, ErrUnavailable, resp.StatusCode, msg)
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("LiteLLM %s: %w: %s", what, ErrNotFound, msg)
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return fmt.Errorf("LiteLLM %s: the master key was refused (HTTP %d: %s): check the chart's litellm.secret", what, resp.StatusCode, msg)
		}
		return fmt.Errorf("LiteLLM %s: HTTP %d: %s", what, resp.StatusCode, msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("LiteLLM %s: decode the answer: %w", what, err)
	}
	return nil
}

// errorMessage extracts LiteLLM's message from an error body ({"error":{"message"}} or
// FastAPI's {"detail"}), else the start of the body.
func errorMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		Detail any `json:"detail"`
	}
	if json.Unmarshal(b, &e) == nil {
		if e.Error.Message != "" {
			return e.Error.Message
		}
		if e.Detail != nil {
			return fmt.Sprint(e.Detail)
		}
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// seconds renders d as a LiteLLM duration (a number and a unit: s, m, h, d), in whole
// seconds rounded up.
func seconds(d time.Duration) string {
	return fmt.Sprintf("%ds", int64((d+time.Second-1)/time.Second))
}

func orText(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
