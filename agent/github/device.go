// Package github speaks the GitHub endpoints the agent uses to give sessions a GitHub
// token: the OAuth device flow that links a user's account (RFC 8628 as GitHub documents
// it under "Authorizing OAuth apps"), and a GitHub App's installation tokens for
// organisation-wide setups (see App). For linking, the agent holds the OAuth app's client
// id and brokers the flow, so the device code — which, with the public client id, is all
// it takes to collect the token — never leaves the agent; the user only sees the short
// user code.
package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is github.com's web host, where the device-flow endpoints live.
const DefaultBaseURL = "https://github.com"

// DeviceFlow starts and completes device-flow authorizations for one OAuth app.
type DeviceFlow struct {
	// BaseURL is the GitHub web host (https://github.com, or GitHub Enterprise's).
	BaseURL string
	// ClientID is the OAuth app's public client id.
	ClientID string
	// Scope is what the token may do; "repo" lets sessions clone and push private
	// repositories and open pull requests.
	Scope string
	HTTP  *http.Client
}

// DeviceCode is GitHub's answer to starting a flow.
type DeviceCode struct {
	DeviceCode      string `json:"device_code"`
	UserCode        string `json:"user_code"`
	VerificationURI string `json:"verification_uri"`
	ExpiresIn       int    `json:"expires_in"`
	Interval        int    `json:"interval"`
}

// Outcomes of one poll that are not a token. Pending and SlowDown mean "ask again later"
// (SlowDown: less often); the others end the flow.
var (
	ErrPending  = errors.New("authorization pending: the user has not entered the code yet")
	ErrSlowDown = errors.New("polling too fast")
	ErrExpired  = errors.New("the code expired before it was entered")
	ErrDenied   = errors.New("the user declined the authorization")
)

// oauthError is the error shape of GitHub's OAuth endpoints (HTTP 200 with "error").
type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func (d *DeviceFlow) post(ctx context.Context, path string, form url.Values, out any) error {
	base := strings.TrimRight(d.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json") // else GitHub answers form-encoded
	hc := d.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach GitHub at %s: %w", base, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read GitHub's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GitHub answered %s to POST %s", resp.Status, path)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GitHub's answer to POST %s is not JSON: %w", path, err)
	}
	return nil
}

// Start asks GitHub for a device code and the user code to show.
func (d *DeviceFlow) Start(ctx context.Context) (*DeviceCode, error) {
	var raw struct {
		DeviceCode
		oauthError
	}
	if err := d.post(ctx, "/login/device/code", url.Values{"client_id": {d.ClientID}, "scope": {d.Scope}}, &raw); err != nil {
		return nil, err
	}
	if raw.Error != "" {
		// device_flow_disabled, incorrect_client_credentials: the admin's to fix.
		return nil, fmt.Errorf("GitHub refused to start the device flow: %s (%s): check the OAuth app's client id and that it allows the device flow", raw.Error, raw.ErrorDescription)
	}
	if raw.DeviceCode.DeviceCode == "" || raw.UserCode == "" || raw.VerificationURI == "" {
		return nil, errors.New("GitHub's device code answer lacks device_code, user_code or verification_uri")
	}
	if raw.Interval <= 0 {
		raw.Interval = 5 // RFC 8628's default
	}
	return &raw.DeviceCode, nil
}

// Token is a granted user access token.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	Scope       string `json:"scope"`
}

// Poll asks once whether the user entered the code: a token, or one of the Err values
// (ErrSlowDown with the interval GitHub wants from now on).
func (d *DeviceFlow) Poll(ctx context.Context, deviceCode string) (*Token, time.Duration, error) {
	var raw struct {
		Token
		oauthError
		Interval int `json:"interval"` // with slow_down: the new minimum
	}
	form := url.Values{"client_id": {d.ClientID}, "device_code": {deviceCode}, "grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}}
	if err := d.post(ctx, "/login/oauth/access_token", form, &raw); err != nil {
		return nil, 0, err
	}
	switch raw.Error {
	case "":
		if raw.AccessToken == "" {
			return nil, 0, errors.New("GitHub's token answer has no access_token")
		}
		return &raw.Token, 0, nil
	case "authorization_pending":
		return nil, 0, ErrPending
	case "slow_down":
		return nil, time.Duration(raw.Interval) * time.Second, ErrSlowDown
	case "expired_token":
		return nil, 0, ErrExpired
	case "access_denied":
		return nil, 0, ErrDenied
	default:
		return nil, 0, fmt.Errorf("GitHub refused the token: %s (%s)", raw.Error, raw.ErrorDescription)
	}
}
