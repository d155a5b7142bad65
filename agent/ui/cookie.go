package ui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/cakeai/cake-agents/agent/auth"
)

// CookieName is the sign-in cookie set by the token login page. It holds the personal
// access token itself, so revoking or expiring the token signs the browser out at once
// and the agent keeps no server-side session state.
const CookieName = "cake_agents_token"

// CSRFHeader must accompany every state-changing API request authenticated by the
// sign-in cookie (any non-empty value; the UI sends "1"). A cross-site page cannot set
// a custom header without a CORS preflight, which the agent never grants.
const CSRFHeader = "X-Cake-CSRF"

// maxLoginBody bounds the sign-in form.
const maxLoginBody = 8 << 10

// proxyPathRe matches the session proxy: OpenCode's own web UI runs there and cannot
// add CSRFHeader, so it gets the Origin check only.
var proxyPathRe = regexp.MustCompile(`/sessions/[^/]+/proxy(/|$)`)

// CookieAuthenticator accepts the UI's sign-in cookie on any request, API included:
// it checks the token inside with the personal access token authenticator. Put it
// last in the chain given to auth.NewMiddleware, after the token authenticator.
//
// Because browsers attach cookies by themselves, requests it authenticates are
// checked against cross-site request forgery (see CheckCSRF); a request that fails is
// rejected with 401, never passed on.
type CookieAuthenticator struct {
	tokens      auth.Authenticator
	externalURL string
}

// NewCookieAuthenticator returns the cookie authenticator. tokens is the personal
// access token authenticator (auth.NewTokenAuthenticator); externalURL, when set, is
// an origin the CSRF check accepts besides the request's own host.
func NewCookieAuthenticator(tokens auth.Authenticator, externalURL string) *CookieAuthenticator {
	return &CookieAuthenticator{tokens: tokens, externalURL: externalURL}
}

// Name implements auth.Authenticator.
func (a *CookieAuthenticator) Name() string { return "the web UI's token sign-in (/login)" }

// Authenticate implements auth.Authenticator.
func (a *CookieAuthenticator) Authenticate(r *http.Request) (*auth.Identity, bool, error) {
	var token string
	if c, err := r.Cookie(CookieName); err == nil { // the only error is "no such cookie"
		token = c.Value
	}
	if token == "" {
		return nil, false, nil
	}
	if !strings.HasPrefix(token, auth.TokenPrefix) {
		return nil, false, fmt.Errorf("%w: the sign-in cookie does not hold a personal access token: sign in again at /login", auth.ErrUnauthenticated)
	}
	if err := CheckCSRF(r, a.externalURL); err != nil {
		return nil, false, fmt.Errorf("%w: %v", auth.ErrUnauthenticated, err)
	}
	id, ok, err := a.tokens.Authenticate(tokenRequest(r, token))
	if err != nil {
		return nil, false, err
	}
	if !ok || id == nil {
		return nil, false, fmt.Errorf("%w: the sign-in cookie was not accepted: sign in again at /login", auth.ErrUnauthenticated)
	}
	return id, true, nil
}

// tokenRequest is r as the token authenticator expects it: the token as a bearer
// credential and no cookies.
func tokenRequest(r *http.Request, token string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", "Bearer "+token)
	r2.Header.Del("Cookie")
	return r2
}

// CheckCSRF decides whether a request that a browser authenticated by itself (with a
// cookie) may have been forged by another site. Safe methods pass, except WebSocket
// handshakes, which must come from the agent's origin. State-changing methods need
//   - an Origin header naming the agent's own origin (the request's Host, or
//     externalURL's origin), or, without Origin, Sec-Fetch-Site: same-origin; and
//   - the CSRFHeader header, except on the session proxy, where OpenCode's own web UI
//     cannot send it and the Origin check (plus SameSite=Strict) has to do.
//
// The lead may apply it to header-authenticated browser requests as well.
func CheckCSRF(r *http.Request, externalURL string) error {
	upgrade := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
	if safe && !upgrade {
		return nil
	}
	origin := r.Header.Get("Origin")
	switch {
	case origin != "":
		if !sameOrigin(origin, r, externalURL) {
			return fmt.Errorf("cross-origin request from %s refused: use the web UI at this agent's own address", truncate(origin, 100))
		}
	case upgrade:
		// Browsers always send Origin with WebSocket handshakes; a client without
		// one is not a browser page of another site.
	default:
		if r.Header.Get("Sec-Fetch-Site") != "same-origin" {
			return errors.New("state-changing request without an Origin header refused: the request may come from another site")
		}
	}
	if !safe && !proxyPathRe.MatchString(r.URL.Path) && r.Header.Get(CSRFHeader) == "" {
		return fmt.Errorf("state-changing request without the %s header refused (the web UI sends it; scripts should use a bearer token instead of the cookie)", CSRFHeader)
	}
	return nil
}

func sameOrigin(origin string, r *http.Request, externalURL string) bool {
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" || (o.Scheme != "http" && o.Scheme != "https") {
		return false
	}
	if strings.EqualFold(o.Host, r.Host) {
		return true
	}
	if externalURL != "" {
		if e, err := url.Parse(externalURL); err == nil && e.Host != "" &&
			strings.EqualFold(e.Scheme, o.Scheme) && strings.EqualFold(e.Host, o.Host) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return fmt.Sprintf("%q...", s[:n])
	}
	return fmt.Sprintf("%q", s)
}

func (h *handler) secureCookie(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(strings.ToLower(h.opts.ExternalURL), "https://")
}

func (h *handler) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d := h.data(r, "login", "Sign in")
	d.User = nil
	// "No credentials" is the normal way here, not an error worth a red box.
	if !strings.HasPrefix(msg, "no credentials") {
		d.Error = strings.TrimPrefix(msg, auth.ErrUnauthenticated.Error()+": ")
	}
	d.TokenAuth = h.opts.Tokens != nil
	d.Next = r.URL.RequestURI()
	if r.URL.Path == "/login" {
		d.Next = safeNext(r.URL.Query().Get("next"))
	}
	h.render(w, status, d)
}

func (h *handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.renderLogin(w, r, http.StatusOK, "")
}

// login checks the posted personal access token and, when it is valid, keeps it in
// the sign-in cookie. The form is same-origin only, so no other site can sign a
// browser in to an account of its choosing.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	if err := checkFormOrigin(r, h.opts.ExternalURL); err != nil {
		h.renderLogin(w, r, http.StatusForbidden, err.Error())
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		h.renderLogin(w, r, http.StatusBadRequest, "The sign-in form could not be read: try again.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	fail := func(status int, msg string) {
		d := h.data(r, "login", "Sign in")
		d.User, d.SignOut = nil, false
		d.Error, d.Next, d.TokenAuth = msg, next, h.opts.Tokens != nil
		h.render(w, status, d)
	}
	if h.opts.Tokens == nil {
		fail(http.StatusNotFound, "Token sign-in is not enabled on this agent: sign in through your organisation's proxy.")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if !strings.HasPrefix(token, auth.TokenPrefix) || len(token) > 200 {
		fail(http.StatusBadRequest, "That is not a personal access token: they start with "+auth.TokenPrefix+". Create one on the Tokens page while signed in through your proxy, or with POST /api/v1/tokens.")
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/", nil)
	if err != nil {
		fail(http.StatusInternalServerError, "internal error")
		return
	}
	req.RemoteAddr = r.RemoteAddr
	req.Header.Set("Authorization", "Bearer "+token)
	id, ok, err := h.opts.Tokens.Authenticate(req)
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		fail(http.StatusUnauthorized, strings.TrimPrefix(err.Error(), auth.ErrUnauthenticated.Error()+": "))
		return
	case err != nil:
		h.log.Error("check token at sign-in failed", "error", err)
		fail(http.StatusServiceUnavailable, "The agent cannot check tokens right now: try again shortly.")
		return
	case !ok || id == nil:
		fail(http.StatusUnauthorized, "The token was not accepted.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    token,
		Path:     "/",
		HttpOnly: true,
		Secure:   h.secureCookie(r),
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	if err := checkFormOrigin(r, h.opts.ExternalURL); err != nil {
		h.renderLogin(w, r, http.StatusForbidden, err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   h.secureCookie(r),
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// checkFormOrigin applies CheckCSRF's origin rule to the UI's own forms, which are
// plain HTML posts and so carry no CSRFHeader.
func checkFormOrigin(r *http.Request, externalURL string) error {
	origin := r.Header.Get("Origin")
	if origin != "" {
		if !sameOrigin(origin, r, externalURL) {
			return fmt.Errorf("the form was posted from another site (%s) and was refused", truncate(origin, 100))
		}
		return nil
	}
	if r.Header.Get("Sec-Fetch-Site") == "same-origin" {
		return nil
	}
	return errors.New("the form was posted without an Origin header and was refused: use a current browser")
}
