package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DefaultAPIURL is the root of Slack's Web API.
const DefaultAPIURL = "https://slack.com/api"

// Client calls the few Slack Web API methods the agent uses, with the bot token.
type Client struct {
	// APIURL is the Web API root (DefaultAPIURL when empty; a local server in tests).
	APIURL string
	Token  string
	HTTP   *http.Client
}

// APIError is Slack's {"ok":false,"error":"..."} answer.
type APIError struct {
	Method string
	Code   string
}

func (e *APIError) Error() string { return "slack " + e.Method + ": " + e.Code }

// call POSTs a JSON body to method and decodes the answer into out, which must embed
// the ok/error envelope's fields (see response).
func (c *Client) call(ctx context.Context, method string, in any, out interface{ result() response }) error {
	base := c.APIURL
	if base == "" {
		base = DefaultAPIURL
	}
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/"+method, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The URL is Slack's (or the configured one): nothing secret in it.
		return fmt.Errorf("slack %s: %w", method, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("slack %s: HTTP %d", method, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(out); err != nil {
		return fmt.Errorf("slack %s: read the answer: %w", method, err)
	}
	if r := out.result(); !r.OK {
		code := r.Error
		if code == "" {
			code = "unknown_error"
		}
		return &APIError{Method: method, Code: code}
	}
	return nil
}

// response is the envelope every Web API answer carries.
type response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func (r response) result() response { return r }

// AuthTest is the answer of auth.test: who the token is.
type AuthTest struct {
	response
	URL    string `json:"url"`
	Team   string `json:"team"`
	User   string `json:"user"`
	TeamID string `json:"team_id"`
	UserID string `json:"user_id"`
	BotID  string `json:"bot_id"`
}

// AuthTest checks the token (auth.test) and returns the bot's identity.
func (c *Client) AuthTest(ctx context.Context) (*AuthTest, error) {
	out := &AuthTest{}
	if err := c.call(ctx, "auth.test", nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// UserInfo is the part of users.info's user the agent reads.
type UserInfo struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	IsBot   bool   `json:"is_bot"`
	Deleted bool   `json:"deleted"`
	Profile struct {
		Email       string `json:"email"`
		RealName    string `json:"real_name"`
		DisplayName string `json:"display_name"`
	} `json:"profile"`
}

// UserInfo returns a Slack user (users.info; the email needs the users:read.email scope).
func (c *Client) UserInfo(ctx context.Context, id string) (*UserInfo, error) {
	out := &struct {
		response
		User UserInfo `json:"user"`
	}{}
	// users.info takes form or query arguments, not JSON.
	if err := c.call(ctx, "users.info?user="+url.QueryEscape(id), nil, out); err != nil {
		return nil, err
	}
	return &out.User, nil
}

// PostMessage posts text in channel, in the thread of threadTS when set
// (chat.postMessage), and returns the new message's ts.
func (c *Client) PostMessage(ctx context.Context, channel, threadTS, text string) (string, error) {
	in := map[string]any{"channel": channel, "text": text, "unfurl_links": false}
	if threadTS != "" {
		in["thread_ts"] = threadTS
	}
	out := &struct {
		response
		TS string `json:"ts"`
	}{}
	if err := c.call(ctx, "chat.postMessage", in, out); err != nil {
		return "", err
	}
	return out.TS, nil
}

// UpdateMessage replaces the text of message ts in channel (chat.update).
func (c *Client) UpdateMessage(ctx context.Context, channel, ts, text string) error {
	return c.call(ctx, "chat.update", map[string]any{"channel": channel, "ts": ts, "text": text}, &response{})
}
