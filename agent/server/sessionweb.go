package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// SessionWeb serves each session's own OpenCode web UI on a host of its own,
// <id>.<Domain>. OpenCode's UI loads its code and calls its API at absolute paths
// (/assets/..., /session/...), so it works only at the root of an origin, never under
// the API's /sessions/{id}/proxy/; a host per session, like the workspace apps of
// hosted development environments, gives it one. On those hosts every path goes to the
// session's OpenCode (the agent's API and UI are never served there), except
// /_cake/enter, which signs the browser in.
//
// Signing in: the agent's UI asks POST /api/v1/sessions/{id}/web, which checks that the
// caller may drive the session and answers a URL on the session's host carrying a
// ticket valid once, within sessionWebTicketTTL. /_cake/enter trades the ticket for a
// cookie of that host only (HttpOnly, SameSite=Lax, no Domain: no other session's host,
// nor the agent's own, ever receives it) and records the ticket's nonce in the store every
// replica shares, so a copy of the URL (a browser's history, a proxy's log) signs nobody
// in again. Ticket and cookie are sealed with the agent's keyring (the
// auth secret every replica shares) and bound to the session's id, so one session's
// cannot open another's. Each request is authorised again as the API would authorise
// it (owner, admin, or granted attach, with the Kubernetes answers cached briefly), so
// revoking a grant or deleting the session closes the host at once.
//
// Behind an authenticating proxy that also fronts the wildcard host, its identity
// headers are accepted instead of the cookie.
type SessionWeb struct {
	// Domain is the parent of the session hosts, "agents.example.com" for
	// https://<id>.agents.example.com; it may carry a port ("localhost:8080"), used in
	// the URLs the agent hands out and ignored when matching a request's host.
	Domain string
	// Scheme of the session hosts' URLs: "https" (default) or "http".
	Scheme string
	// Sealer encrypts and authenticates tickets and cookies (agent/store/keyring).
	Sealer Sealer
	// Authenticate authenticates a request without the session cookie the way the API
	// does (the authenticating proxy's headers, a bearer token), refusing with render.
	// Nil: only the cookie is accepted.
	Authenticate func(next http.Handler, render httperr.Renderer) http.Handler
	// Workspace is the directory OpenCode runs in inside a session's pod: signing in
	// lands in the session's conversation there (OpenCode's route /<dir>/session/<id>,
	// dir base64url-encoded). Empty: OpenCode's home page.
	Workspace string
	// CookieTTL bounds how long a sign-in lasts (default DefaultSessionWebCookieTTL); a
	// personal access token's expiry bounds it too.
	CookieTTL time.Duration
}

// Sealer encrypts and authenticates small values; *keyring.Keyring is one.
type Sealer interface {
	Encrypt(plaintext, aad []byte) ([]byte, error)
	Decrypt(ciphertext, aad []byte) ([]byte, error)
}

const (
	// SessionWebCookie is the sign-in cookie of a session host.
	SessionWebCookie = "cake_session_web"
	// SessionWebEnterPath signs a browser in on a session host.
	SessionWebEnterPath = "/_cake/enter"
	// DefaultSessionWebCookieTTL is how long a sign-in on a session host lasts: a working
	// day; opening the session again from the agent's UI signs in afresh.
	DefaultSessionWebCookieTTL = 12 * time.Hour
	// sessionWebTicketTTL is how long a ticket may wait before it is used: the UI
	// redirects at once, and a ticket that leaked (an access log) soon stops working.
	sessionWebTicketTTL = 30 * time.Second
	// sessionWebMaxCookie keeps the sealed cookie below what browsers store (4096 bytes
	// per cookie, name and attributes included).
	sessionWebMaxCookie = 3800
)

// webGrant is the content of a ticket or cookie: who, for which session, until when.
type webGrant struct {
	Session  string         `json:"s"`
	Identity *auth.Identity `json:"i"`
	Expires  int64          `json:"e"` // Unix seconds
	// Nonce makes a ticket single-use: the first sign-in records it (tickets only).
	Nonce string `json:"n,omitempty"`
}

// sessionWebTicketSource is the store's event source (RecordEvent) under which used
// tickets' nonces are remembered; the store forgets them with other events' after a day,
// long past any ticket's expiry.
const sessionWebTicketSource = "session-web-ticket"

// newTicket seals a single-use ticket (a random 128-bit nonce) signing ident in to
// session's host until exp.
func (sw *SessionWeb) newTicket(session string, ident *auth.Identity, exp time.Time) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return sw.seal("ticket", webGrant{Session: session, Identity: ident, Expires: exp.Unix(), Nonce: base64.RawURLEncoding.EncodeToString(b)})
}

// sessionWebAAD binds a sealed value to its kind and session: a ticket is no cookie,
// and neither opens another session's host.
func sessionWebAAD(kind, session string) []byte {
	return []byte("cake-agents/session-web/" + kind + "/v1/" + session)
}

func (sw *SessionWeb) seal(kind string, g webGrant) (string, error) {
	b, err := json.Marshal(g)
	if err != nil {
		return "", err
	}
	c, err := sw.Sealer.Encrypt(b, sessionWebAAD(kind, g.Session))
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(c), nil
}

// open returns the grant sealed in v for session, if it is one and has not expired.
func (sw *SessionWeb) open(kind, session, v string, now time.Time) (*webGrant, error) {
	c, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, errors.New("malformed")
	}
	b, err := sw.Sealer.Decrypt(c, sessionWebAAD(kind, session))
	if err != nil {
		return nil, errors.New("not issued by this agent for this session")
	}
	var g webGrant
	if err := json.Unmarshal(b, &g); err != nil || g.Identity == nil || g.Session != session {
		return nil, errors.New("malformed")
	}
	if now.Unix() >= g.Expires {
		return nil, errors.New("expired")
	}
	return &g, nil
}

// sessionOf returns the session id of a request host "<id>.<Domain>[:port]".
func (sw *SessionWeb) sessionOf(host string) (string, bool) {
	h, d := strings.ToLower(hostOnly(host)), strings.ToLower(hostOnly(sw.Domain))
	id, ok := strings.CutSuffix(h, "."+d)
	if !ok || apiv1.ValidateSessionID(id) != nil {
		return "", false
	}
	return id, true
}

// hostOnly drops a port from host (and the brackets of an IPv6 literal).
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// origin is the URL origin of session id's host.
func (sw *SessionWeb) origin(id string) string {
	scheme := sw.Scheme
	if scheme == "" {
		scheme = "https"
	}
	return scheme + "://" + id + "." + sw.Domain
}

// sessionWebHosts routes requests for a session host to serveSessionWeb, all others to
// next.
func (s *Server) sessionWebHosts(next http.Handler) http.Handler {
	sw := s.opts.SessionWeb
	if sw == nil || sw.Domain == "" {
		return next
	}
	// The agent's own host is never a session's, even under a session domain that is
	// its parent (agents.example.com under example.com).
	own := ""
	if u, err := url.Parse(s.opts.ExternalURL); err == nil {
		own = strings.ToLower(u.Hostname())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := sw.sessionOf(r.Host); ok && strings.ToLower(hostOnly(r.Host)) != own {
			s.serveSessionWeb(w, r, id)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// mintSessionWeb answers POST /api/v1/sessions/{id}/web: a URL that opens the session's
// OpenCode web UI in the browser, signed in as the caller.
func (s *Server) mintSessionWeb(w http.ResponseWriter, r *http.Request) {
	sw := s.opts.SessionWeb
	if sw == nil || sw.Domain == "" {
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound,
			"this agent does not serve sessions' OpenCode web UI: an admin enables it with the chart's controlPlane.sessionWeb.enabled "+
				"(a wildcard DNS name and certificate for *.<controlPlane.host>); meanwhile `kubectl agents port-forward "+r.PathValue("id")+"` serves it on a local port")
		return
	}
	id, sess, ok := s.drivableSession(w, r, "session.web", "open")
	if !ok {
		return
	}
	exp := s.opts.Now().Add(sessionWebTicketTTL)
	ticket, err := sw.newTicket(sess.ID, id, exp)
	if err != nil {
		s.log.Error("seal session web ticket failed", "error", err)
		httperr.Write(w, http.StatusInternalServerError, apiv1.CodeInternal, "could not issue a ticket for the session's web UI")
		return
	}
	s.record(r, "session.web", sess.ID, audit.OutcomeSuccess, "")
	writeJSON(w, http.StatusOK, apiv1.SessionWebResponse{
		URL:       sw.origin(sess.ID) + SessionWebEnterPath + "?ticket=" + url.QueryEscape(ticket),
		ExpiresAt: exp.UTC(),
	})
}

// serveSessionWeb serves a request for session id's host.
func (s *Server) serveSessionWeb(w http.ResponseWriter, r *http.Request, id string) {
	sw := s.opts.SessionWeb
	// The session's own page never tells another site where it came from, and the
	// ticket in the entry URL goes nowhere.
	w.Header().Set("Referrer-Policy", "no-referrer")
	r.SetPathValue("id", id)
	now := s.opts.Now()
	if r.URL.Path == SessionWebEnterPath {
		s.enterSessionWeb(w, r, id, now)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/_cake/") {
		http.NotFound(w, r)
		return
	}
	render := s.sessionWebPage(id)
	if c, err := r.Cookie(SessionWebCookie); err == nil {
		g, err := sw.open("cookie", id, c.Value, now)
		if err != nil {
			render(w, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, "Your sign-in to this session's web UI is "+err.Error()+".")
			return
		}
		// A browser attaches the cookie by itself, so only the session's own pages may
		// change anything: another session's host is the same site, and SameSite does not
		// stop it.
		if err := sw.CheckOrigin(r); err != nil {
			httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, err.Error())
			return
		}
		ident := *g.Identity
		if res, ok := s.opts.Authorizer.(auth.AdminResolver); ok && ident.Admin {
			// Admin rights come from RBAC and may have been revoked since the sign-in.
			admin, err := res.Admin(r.Context(), &ident)
			if err != nil {
				httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "could not check your permissions with the Kubernetes API: try again shortly")
				return
			}
			ident.Admin = admin
		}
		s.proxySessionWeb(w, r.WithContext(auth.WithIdentity(r.Context(), &ident)), id)
		return
	}
	if sw.Authenticate == nil {
		render(w, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, "You are not signed in to this session's web UI.")
		return
	}
	sw.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.proxySessionWeb(w, r, id) }), render).ServeHTTP(w, r)
}

// enterSessionWeb trades a ticket for the host's cookie and goes to the UI.
func (s *Server) enterSessionWeb(w http.ResponseWriter, r *http.Request, id string, now time.Time) {
	sw := s.opts.SessionWeb
	render := s.sessionWebPage(id)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		render(w, r, http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed, "Open this page with GET.")
		return
	}
	g, err := sw.open("ticket", id, r.URL.Query().Get("ticket"), now)
	if err == nil && g.Nonce == "" {
		err = errors.New("malformed")
	}
	if err != nil {
		render(w, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, "The link to this session's web UI is "+err.Error()+" (a link works once, for "+sessionWebTicketTTL.String()+").")
		return
	}
	if r.Method == http.MethodHead {
		// A link checker: the ticket is good, but only opening it uses it up and signs in.
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ttl := sw.CookieTTL
	if ttl <= 0 {
		ttl = DefaultSessionWebCookieTTL
	}
	exp := now.Add(ttl)
	if t := g.Identity.TokenExpiresAt; !t.IsZero() && t.Before(exp) {
		exp = t // a sign-in never outlives the token that made it
	}
	v, err := sw.seal("cookie", webGrant{Session: id, Identity: g.Identity, Expires: exp.Unix()})
	if err == nil && len(v) > sessionWebMaxCookie {
		err = fmt.Errorf("the sign-in is %d bytes, more than a browser keeps in a cookie (the identity has too many groups)", len(v))
	}
	if err != nil {
		s.log.Error("seal session web cookie failed", "session", id, "error", err)
		render(w, r, http.StatusInternalServerError, apiv1.CodeInternal, "Could not sign you in to this session's web UI: "+err.Error()+".")
		return
	}
	// Used up last, once nothing else can fail: an error here leaves the link usable.
	first, err := s.opts.Store.RecordEvent(r.Context(), sessionWebTicketSource, g.Nonce)
	if err != nil {
		s.log.Error("record session web ticket failed", "session", id, "error", err)
		render(w, r, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "Could not check the link against the agent's database: reload this page in a moment.")
		return
	}
	if !first {
		render(w, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, "The link to this session's web UI was already used (a link works once, for "+sessionWebTicketTTL.String()+").")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     SessionWebCookie,
		Value:    v,
		Path:     "/",
		Expires:  exp,
		HttpOnly: true,
		Secure:   sw.Scheme != "http",
		// Lax, not Strict: the first load follows a navigation from the agent's UI, which
		// is another site when the session domain is one of its own (and Strict cookies
		// are not sent on a navigation another site started, redirects included). Other
		// sites' scripts still never send it, and changes need the host's own Origin.
		SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, s.sessionWebLanding(r.Context(), id), http.StatusSeeOther)
}

// sessionWebLanding is where a sign-in goes: the session's conversation in OpenCode's
// UI when there is one, else its home page.
func (s *Server) sessionWebLanding(ctx context.Context, id string) string {
	sw := s.opts.SessionWeb
	if sw.Workspace == "" {
		return "/"
	}
	sess, err := s.opts.Store.GetSession(ctx, id)
	if err != nil || sess.OpenCodeSessionID == "" || strings.ContainsAny(sess.OpenCodeSessionID, "/?#%") {
		return "/"
	}
	return "/" + base64.RawURLEncoding.EncodeToString([]byte(sw.Workspace)) + "/session/" + sess.OpenCodeSessionID
}

// proxySessionWeb forwards an authenticated request on session id's host to its
// OpenCode, once the caller may drive the session.
func (s *Server) proxySessionWeb(w http.ResponseWriter, r *http.Request, id string) {
	if navigation(r) {
		// A page, not a script, asked: a stopped or deleted session gets a page too.
		if sess, err := s.opts.Store.GetSession(r.Context(), id); err == nil && sess.State != apiv1.StateRunning && auth.CanView(auth.FromContext(r.Context()), sess) {
			s.sessionWebPage(id)(w, r, http.StatusConflict, apiv1.CodeNotRunning, fmt.Sprintf("Session %s is %s, not Running: start it first.", id, sess.State))
			return
		}
	}
	_, sess, ok := s.drivableSession(w, r, "session.web", "open")
	if !ok {
		return
	}
	defer s.touchWhileOpen(r.Context(), sess.ID, ActivityAttached)()
	// Scrubbed as the answer starts, once the pod's headers are in place.
	scrubbed := &startedWriter{ResponseWriter: w, onStart: func() { scrubSessionWebHeaders(w.Header()) }}
	s.opts.Conversation.Proxy(scrubbed, r, sess, r.URL.Path, func() {
		s.opts.Sessions.Touch(context.WithoutCancel(r.Context()), sess.ID, "proxy")
	})
}

// navigation reports whether a browser is loading a page (not a script's fetch).
func navigation(r *http.Request) bool {
	if m := r.Header.Get("Sec-Fetch-Mode"); m != "" {
		return m == "navigate"
	}
	return r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html")
}

// CheckOrigin refuses state-changing requests and WebSocket handshakes whose Origin is
// not the session host itself: the check for requests a browser authenticates by itself
// (the cookie; the authenticating proxy's identity, which Authenticate should apply it
// to instead of the API's, since OpenCode's UI sends no CSRF header of ours).
func (sw *SessionWeb) CheckOrigin(r *http.Request) error {
	upgrade := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	if (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions) && !upgrade {
		return nil
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		if r.Header.Get("Sec-Fetch-Site") == "same-origin" {
			return nil
		}
		return errors.New("a state-changing request without an Origin header was refused: the request may come from another site")
	}
	o, err := url.Parse(origin)
	if err != nil || !strings.EqualFold(o.Host, r.Host) || (sw.Scheme != "" && o.Scheme != sw.Scheme) {
		return fmt.Errorf("a request from %q was refused: only the session's own web UI may change it", truncateOrigin(origin))
	}
	return nil
}

func truncateOrigin(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// scrubSessionWebHeaders drops what a session's pod must not set on the browser:
// cookies (a pod could set one for the agent's own domain) and CORS grants (the UI is
// same-origin, and no other site may read a session with the user's cookie).
func scrubSessionWebHeaders(h http.Header) {
	h.Del("Set-Cookie")
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			h.Del(k)
		}
	}
}

var sessionWebTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Session {{.ID}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem">
<h1>Session {{.ID}}</h1>
<p>{{.Message}}</p>
<p>{{if .Link}}<a href="{{.Link}}">Open the session in Cake Agents</a> and choose <b>Open in OpenCode</b>.{{else}}Open the session in the Cake Agents web UI and choose <b>Open in OpenCode</b>.{{end}}</p>
</body></html>`))

// sessionWebPage renders refusals on a session host: a page for a browser, the API's
// JSON error for a script.
func (s *Server) sessionWebPage(id string) httperr.Renderer {
	return func(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
		if !navigation(r) {
			httperr.Write(w, status, code, msg)
			return
		}
		link := ""
		if s.opts.ExternalURL != "" {
			link = strings.TrimSuffix(s.opts.ExternalURL, "/") + "/sessions/" + id
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_ = sessionWebTemplate.Execute(w, struct{ ID, Message, Link string }{id, msg, link})
	}
}
