package client

import (
	"net/http"
	"sync"

	"github.com/cakeai/cake-agents/pkg/version"
)

// WithVersion makes the client send its version (version.HeaderClient) on every request
// and call warn once for each distinct Warning the agent answers with (such as the one
// line version.Skew writes when plugin and agent are outside the supported window). It
// wraps the http.Client's transport, so streams and the attach proxy carry it too.
func WithVersion(v string, warn func(text string)) Option {
	return func(c *Client) {
		hc := *c.http
		next := hc.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		hc.Transport = &versionTransport{next: next, version: v, warn: warn}
		c.http = &hc
	}
}

// versionTransport adds the client's version to requests and reports the agent's warnings.
type versionTransport struct {
	next    http.RoundTripper
	version string
	warn    func(string)
	seen    sync.Map // warning text → struct{}
}

func (t *versionTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get(version.HeaderClient) == "" {
		req = req.Clone(req.Context())
		req.Header.Set(version.HeaderClient, t.version)
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || t.warn == nil {
		return resp, err
	}
	for _, v := range resp.Header.Values("Warning") {
		if text := version.ParseWarningHeader(v); text != "" {
			if _, dup := t.seen.LoadOrStore(text, struct{}{}); !dup {
				t.warn(text)
			}
		}
	}
	return resp, nil
}
