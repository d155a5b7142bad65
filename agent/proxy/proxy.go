// Package proxy relays /api/v1/sessions/{id}/proxy/<rest> to the session's OpenCode
// over a port-forward tunnel: plain HTTP, Server-Sent Events (flushed as they arrive)
// and WebSocket upgrades (OpenCode's PTY).
//
// The agent's HTTP server authenticates and authorises the caller before calling
// Serve; from then on the agent speaks for the caller. So the caller's credentials
// (Authorization, cookies, identity headers set by an authenticating proxy, OpenCode's
// own ?auth_token=) never reach the pod, and the agent adds OpenCode's Basic auth
// itself: users never learn a session's OpenCode password. OpenCode's configuration
// routes answer with provider API keys in plain text; the proxy redacts them.
package proxy

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/opencode"
	"github.com/cakeai/cake-agents/agent/tunnel"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// DefaultActivityInterval is how often, at most, a long-lived stream (SSE, WebSocket)
// reports activity while the caller keeps sending on it.
const DefaultActivityInterval = 30 * time.Second

// defaultStripHeaders are request headers that carry the caller's identity or
// credentials; OpenCode must see none of them. Prefixes end in "-".
var defaultStripHeaders = []string{
	"Authorization",
	"Proxy-Authorization",
	"Cookie",
	"X-Auth-Request-",
	"X-Forwarded-",
	"Forwarded",
	"X-Real-Ip",
	"X-Remote-",
	"X-Email",
	"X-User",
	"Impersonate-",
	"X-Amzn-Oidc-",
	"Cf-Access-",
}

// Pool is the part of tunnel.Pool the proxy needs.
type Pool interface {
	Transport(namespace, pod string, port int) http.RoundTripper
}

var _ Pool = (*tunnel.Pool)(nil)

// Option configures a Proxy.
type Option func(*Proxy)

// WithStripHeaders adds request headers to remove before forwarding, such as the
// identity headers the agent's header authentication is configured with. A name ending
// in "-" removes every header with that prefix.
func WithStripHeaders(names ...string) Option {
	return func(p *Proxy) { p.strip = append(p.strip, names...) }
}

// WithActivityInterval sets how often a long-lived stream reports activity.
func WithActivityInterval(d time.Duration) Option {
	return func(p *Proxy) { p.activityInterval = d }
}

// Proxy forwards requests to sessions' OpenCode servers. It is safe for concurrent use.
type Proxy struct {
	pool             Pool
	log              hclog.Logger
	strip            []string
	activityInterval time.Duration
	errorLog         *log.Logger
}

// New returns a Proxy that reaches pods through pool.
func New(pool Pool, log hclog.Logger, opts ...Option) *Proxy {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	p := &Proxy{
		pool:             pool,
		log:              log,
		strip:            append([]string(nil), defaultStripHeaders...),
		activityInterval: DefaultActivityInterval,
	}
	for _, o := range opts {
		o(p)
	}
	for i, h := range p.strip {
		// Keep a trailing "-" (prefix marker) through canonicalisation.
		if strings.HasSuffix(h, "-") {
			p.strip[i] = textproto.CanonicalMIMEHeaderKey(strings.TrimSuffix(h, "-")) + "-"
		} else {
			p.strip[i] = textproto.CanonicalMIMEHeaderKey(h)
		}
	}
	p.errorLog = log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	return p
}

// Target is the session pod a request goes to.
type Target struct {
	// SessionID is used in logs only.
	SessionID string
	Namespace string
	Pod       string
	// Port defaults to OpenCode's port, 4096.
	Port int
	// Password is the session's OpenCode password.
	Password string
	// OnActivity, when set, is called once per proxied request and, on long-lived
	// streams, whenever the caller sends data (at most once per activity interval). Only
	// the caller's side counts: OpenCode's heartbeats on an idle attached client must
	// not keep a session alive forever. It must not block.
	OnActivity func()
}

// Serve forwards r to the target with the path rest ("" or "/" is OpenCode's root; a
// leading slash is optional) and r's query. The caller has already authorised r.
// Errors reaching the pod are answered with 502 in the API's JSON error format.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, t Target, rest string) {
	port := t.Port
	if port == 0 {
		port = opencode.Port
	}
	act := &activity{fn: t.OnActivity, interval: p.activityInterval}
	act.touch(true)

	logger := p.log.With("session", t.SessionID, "pod", t.Namespace+"/"+t.Pod)
	rp := &httputil.ReverseProxy{
		Transport: p.pool.Transport(t.Namespace, t.Pod, port),
		// Flush every write at once: SSE events and streamed replies must not wait in
		// a buffer.
		FlushInterval: -1,
		ErrorLog:      p.errorLog,
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme = "http"
			out.URL.Host = fmt.Sprintf("127.0.0.1:%d", port)
			out.URL.Path = "/" + strings.TrimPrefix(rest, "/")
			out.URL.RawPath = ""
			q := pr.In.URL.Query()
			if q.Has("auth_token") {
				q.Del("auth_token")
				out.URL.RawQuery = q.Encode()
			} else {
				out.URL.RawQuery = pr.In.URL.RawQuery
			}
			out.Host = out.URL.Host
			p.stripHeaders(out.Header)
			out.SetBasicAuth(opencode.Username, t.Password)
			if isConfigRoute(out.URL.Path) {
				// The answer is rewritten, so ask for it uncompressed.
				out.Header.Del("Accept-Encoding")
			}
			if out.Body != nil && out.Body != http.NoBody {
				out.Body = &activityBody{ReadCloser: out.Body, act: act}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusUnauthorized {
				// Our credentials, not the caller's, were refused: the session's Secret
				// and its OpenCode disagree. Never relay OpenCode's Basic challenge, or
				// browsers would ask the user for a password they cannot know.
				resp.Body.Close()
				return errOpenCodeAuth
			}
			resp.Header.Del("Www-Authenticate")
			if isConfigRoute(resp.Request.URL.Path) {
				return redactResponse(resp)
			}
			if resp.StatusCode == http.StatusSwitchingProtocols {
				if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
					resp.Body = &activityConn{ReadWriteCloser: rwc, act: act}
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The caller went away; nothing to answer.
				return
			}
			msg := "cannot reach the session's OpenCode: " + err.Error()
			if errors.Is(err, errOpenCodeAuth) || errors.Is(err, errUnredactable) {
				msg = err.Error()
			}
			logger.Warn("proxy to session failed", "path", rest, "error", err)
			httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, msg)
		},
	}
	rp.ServeHTTP(w, r)
}

var errOpenCodeAuth = errors.New("the session's OpenCode refused the agent's credentials (its password Secret may have been changed); restart the session")

func (p *Proxy) stripHeaders(h http.Header) {
	for k := range h {
		for _, s := range p.strip {
			if k == s || (strings.HasSuffix(s, "-") && strings.HasPrefix(k, s)) {
				delete(h, k)
				break
			}
		}
	}
}

// activity throttles OnActivity calls for one proxied request.
type activity struct {
	fn       func()
	interval time.Duration

	mu   sync.Mutex
	last time.Time
}

func (a *activity) touch(force bool) {
	if a.fn == nil {
		return
	}
	a.mu.Lock()
	now := time.Now()
	if !force && now.Sub(a.last) < a.interval {
		a.mu.Unlock()
		return
	}
	a.last = now
	a.mu.Unlock()
	a.fn()
}

// activityBody reports activity as the caller's request body streams to the pod.
type activityBody struct {
	io.ReadCloser
	act *activity
}

func (b *activityBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.act.touch(false)
	}
	return n, err
}

// activityConn is the pod side of an upgraded connection; the caller's bytes are
// written to it.
type activityConn struct {
	io.ReadWriteCloser
	act *activity
}

func (c *activityConn) Write(p []byte) (int, error) {
	if len(p) > 0 {
		c.act.touch(false)
	}
	return c.ReadWriteCloser.Write(p)
}
