package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// LocalUser is the user name OpenCode expects with its password (Basic auth).
const LocalUser = "opencode"

// authCookie remembers a browser that authenticated once with ?auth_token=, so the web
// UI's own requests (which do not repeat the token) pass.
const authCookie = "kubectl-agents-auth"

// RandomPassword returns a password for the local listener: other local users and
// browser tabs can reach 127.0.0.1, so the listener must not be open to them.
func RandomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// LocalProxy is the local side of `attach`: an HTTP server on 127.0.0.1 that requires
// Password (Basic auth as OpenCode does, ?auth_token=base64(user:pass), or the cookie
// set after it), strips it, and relays each request — plain HTTP, SSE and WebSocket
// upgrades alike — to Upstream with Path prepended, through Transport (which carries
// the user's credentials for the agent).
type LocalProxy struct {
	Password string
	// Upstream is the agent's base URL, Path the proxy path of the session
	// ("/api/v1/sessions/{id}/proxy").
	Upstream *url.URL
	Path     string
	// Transport reaches the agent with the user's identity.
	Transport http.RoundTripper
	// Authorize adds credentials that are not in the transport (a personal token).
	Authorize func(*http.Request)
	// ErrorLog receives relay failures (nil: discarded).
	ErrorLog *log.Logger
}

// Handler returns the proxy as an http.Handler.
func (p *LocalProxy) Handler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = p.Upstream.Scheme
			r.Out.URL.Host = p.Upstream.Host
			r.Out.Host = p.Upstream.Host
			base := strings.TrimSuffix(p.Upstream.EscapedPath(), "/") + p.Path
			raw := base + r.In.URL.EscapedPath()
			if unescaped, err := url.PathUnescape(raw); err == nil {
				r.Out.URL.Path, r.Out.URL.RawPath = unescaped, raw
			}
			q := r.In.URL.Query()
			if q.Has("auth_token") {
				q.Del("auth_token")
				r.Out.URL.RawQuery = q.Encode()
			}
			r.Out.Header.Del("Authorization")
			r.Out.Header.Del("Cookie")
			for _, c := range r.In.Cookies() {
				if c.Name != authCookie {
					r.Out.AddCookie(c)
				}
			}
			if p.Authorize != nil {
				p.Authorize(r.Out)
			}
		},
		Transport: p.Transport,
		// SSE and streamed answers must reach OpenCode's TUI as they come.
		FlushInterval: -1,
		ErrorLog:      p.ErrorLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if p.ErrorLog != nil {
				p.ErrorLog.Printf("relay %s %s: %v", r.Method, r.URL.Path, err)
			}
			http.Error(w, "kubectl agents: cannot reach the session through the agent: "+err.Error(), http.StatusBadGateway)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.authenticated(w, r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="kubectl agents", charset="UTF-8"`)
			http.Error(w, "unauthorized: use the password kubectl agents printed", http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

func (p *LocalProxy) authenticated(w http.ResponseWriter, r *http.Request) bool {
	if _, pass, ok := r.BasicAuth(); ok && p.match(pass) {
		return true
	}
	if c, err := r.Cookie(authCookie); err == nil && p.match(c.Value) {
		return true
	}
	if tok := r.URL.Query().Get("auth_token"); tok != "" {
		if b, err := base64.StdEncoding.DecodeString(tok); err == nil {
			if _, pass, ok := strings.Cut(string(b), ":"); ok && p.match(pass) {
				http.SetCookie(w, &http.Cookie{Name: authCookie, Value: p.Password, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
				return true
			}
		}
	}
	return false
}

func (p *LocalProxy) match(pass string) bool {
	return subtle.ConstantTimeCompare([]byte(pass), []byte(p.Password)) == 1
}

// AuthToken returns the ?auth_token= value OpenCode's web UI understands.
func AuthToken(password string) string {
	return base64.StdEncoding.EncodeToString([]byte(LocalUser + ":" + password))
}

// Serve runs handler on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		// Hijacked WebSocket connections are not closed by Shutdown.
		_ = srv.Close()
		return nil
	}
}

// Dialer opens a connection to the far side of a tunnel.
type Dialer func(ctx context.Context) (net.Conn, error)

// ServeTCP accepts connections on ln until ctx ends and copies each to a connection
// from dial, both ways. A failed dial closes that one local connection only (the
// next one dials again: the tunnel reconnects), and is reported to onError.
func ServeTCP(ctx context.Context, ln net.Listener, dial Dialer, onError func(error)) error {
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			remote, err := dial(ctx)
			if err != nil {
				if onError != nil {
					onError(err)
				}
				return
			}
			defer remote.Close()
			stop := context.AfterFunc(ctx, func() { c.Close(); remote.Close() })
			defer stop()
			pipe(c, remote)
		}()
	}
}

// pipe copies both ways until both directions end, half-closing where it can so
// request/response protocols see EOF.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// IsClosed reports whether err only says a listener or connection was closed.
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed)
}
