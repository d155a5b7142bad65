// Package ui serves the agent's web UI: server-rendered page shells (html/template)
// whose data comes from the v1 JSON API through a little vanilla JavaScript. Every
// asset is embedded; nothing is built or fetched at run time.
//
// Pages are authenticated by the same middleware as the API, so a browser behind the
// authenticating proxy (header auth) needs nothing else. Users without the proxy sign
// in on /login with a personal access token, which the UI keeps in an HttpOnly,
// SameSite=Strict cookie (Secure when served over TLS); CookieAuthenticator lets the
// API accept that cookie, with the CSRF checks described there. Every answer carries
// a strict Content-Security-Policy: no inline script or style, same origin only.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is sent with every UI answer. Scripts, styles and fetches are
// same-origin only and nothing inline is allowed, so injected markup cannot run.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Options configure the UI handler.
type Options struct {
	// APIBase is the path of the v1 API the pages call (default "/api/v1").
	APIBase string
	// Authenticate is the agent's authentication middleware, the same one that guards
	// the API (auth.Middleware's WrapWith), called with the UI's renderer so refusals
	// are pages; it must include a CookieAuthenticator for token sign-in to work.
	// Without it every page answers 401.
	Authenticate func(next http.Handler, render httperr.Renderer) http.Handler
	// Tokens checks a personal access token on the sign-in page
	// (auth.NewTokenAuthenticator). Nil turns token sign-in off.
	Tokens auth.Authenticator
	// Log receives errors; nil discards them.
	Log hclog.Logger
	// ExternalURL is the agent's public URL: shown in CLI hints, its origin is accepted
	// by the CSRF checks and an https URL makes the sign-in cookie Secure.
	ExternalURL string
	// SessionWeb shows "Open in OpenCode" on a session's page: the agent serves
	// sessions' own web UI on their hosts (server.SessionWeb).
	SessionWeb bool
}

type handler struct {
	opts   Options
	log    hclog.Logger
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static map[string]staticFile
}

type staticFile struct {
	body        []byte
	contentType string
	hash        string
}

// New returns the UI handler, to be mounted at "/" beside the API.
func New(opts Options) http.Handler {
	if opts.APIBase == "" {
		opts.APIBase = "/api/v1"
	}
	opts.APIBase = strings.TrimSuffix(opts.APIBase, "/")
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	h := &handler{opts: opts, log: opts.Log.Named("ui"), static: loadStatic()}
	h.pages = h.parsePages()

	mux := http.NewServeMux()
	mux.Handle("GET /{$}", h.authed(h.page("sessions", "Sessions")))
	mux.Handle("GET /new", h.authed(h.page("new", "New session")))
	mux.Handle("GET /sessions/{id}", h.authed(h.sessionPage))
	mux.Handle("GET /tokens", h.authed(h.page("tokens", "Access tokens")))
	mux.Handle("GET /credentials", h.authed(h.page("credentials", "Git credentials")))
	mux.Handle("GET /admin", h.authed(h.adminPage))
	mux.Handle("GET /settings/providers", h.authed(h.providersPage))
	mux.HandleFunc("GET /login", h.loginPage)
	mux.HandleFunc("POST /login", h.login)
	mux.HandleFunc("POST /logout", h.logout)
	mux.HandleFunc("GET /static/{name}", h.serveStatic)
	mux.HandleFunc("/", h.notFound)
	h.mux = mux
	return h
}

// ServeHTTP sets the security headers on every answer, then routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
	h.mux.ServeHTTP(w, r)
}

func loadStatic() map[string]staticFile {
	out := map[string]staticFile{}
	entries, err := fs.ReadDir(assets, "assets/static")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	for _, e := range entries {
		b, err := assets.ReadFile("assets/static/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out[e.Name()] = staticFile{body: b, contentType: ct, hash: hex.EncodeToString(sum[:6])}
	}
	return out
}

// staticURL names an asset with its content hash, so it can be cached for good.
func (h *handler) staticURL(name string) string {
	f, ok := h.static[name]
	if !ok {
		panic("ui: template refers to missing static file " + name)
	}
	return "/static/" + name + "?v=" + f.hash
}

func (h *handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := h.static[r.PathValue("name")]
	if !ok {
		h.notFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	if r.URL.Query().Get("v") == f.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+f.hash+`"`)
	if r.Header.Get("If-None-Match") == `"`+f.hash+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(f.body)
}

func (h *handler) parsePages() map[string]*template.Template {
	funcs := template.FuncMap{"static": h.staticURL}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/templates/layout.html"))
	pages := map[string]*template.Template{}
	files, err := fs.Glob(assets, "assets/templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" {
			continue
		}
		pages[name] = template.Must(template.Must(base.Clone()).ParseFS(assets, f))
	}
	return pages
}

// pageData is everything a template sees. It never holds a secret: the pages load
// their data from the API with the browser's own credentials.
type pageData struct {
	Title     string
	Page      string
	API       string
	User      *userView
	SignOut   bool
	SessionID string
	Server    string
	Error     string
	Next      string
	TokenAuth bool
	// SessionWeb: sessions' own OpenCode web UI is served (Options.SessionWeb).
	SessionWeb bool
}

type userView struct {
	Name  string
	Admin bool
}

func (h *handler) data(r *http.Request, page, title string) *pageData {
	d := &pageData{Title: title, Page: page, API: h.opts.APIBase, Server: h.serverURL(r), SessionWeb: h.opts.SessionWeb}
	if id := auth.FromContext(r.Context()); id != nil {
		d.User = &userView{Name: id.Display(), Admin: id.Admin}
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		d.SignOut = true
	}
	return d
}

// serverURL is the agent's URL for CLI hints: ExternalURL, else what the browser used.
func (h *handler) serverURL(r *http.Request) string {
	if h.opts.ExternalURL != "" {
		return strings.TrimSuffix(h.opts.ExternalURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (h *handler) render(w http.ResponseWriter, status int, d *pageData) {
	t, ok := h.pages[d.Page]
	if !ok {
		panic("ui: no template for page " + d.Page)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		h.log.Error("render page failed", "page", d.Page, "error", err)
		http.Error(w, "internal error: see the agent's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *handler) page(name, title string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.render(w, http.StatusOK, h.data(r, name, title))
	}
}

func (h *handler) sessionPage(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("id")
	if apiv1.ValidateSessionID(sid) != nil {
		h.notFound(w, r)
		return
	}
	d := h.data(r, "session", "Session "+sid)
	d.SessionID = sid
	h.render(w, http.StatusOK, d)
}

// providersPage is Settings › Providers: the admins' editor of the model providers.
func (h *handler) providersPage(w http.ResponseWriter, r *http.Request) {
	if id := auth.FromContext(r.Context()); id == nil || !id.Admin {
		d := h.data(r, "error", "Admins only")
		d.Error = "Model providers are managed by agent admins (verb \"*\" on sessions." + apiv1.Group + "). Ask an admin to bind the cake-agents-admin ClusterRole."
		h.render(w, http.StatusForbidden, d)
		return
	}
	h.render(w, http.StatusOK, h.data(r, "providers", "Settings › Providers"))
}

func (h *handler) adminPage(w http.ResponseWriter, r *http.Request) {
	if id := auth.FromContext(r.Context()); id == nil || !id.Admin {
		d := h.data(r, "error", "Admins only")
		d.Error = "The admin view is for agent admins (verb \"*\" on sessions." + apiv1.Group + "). Ask an admin to bind the cake-agents-admin ClusterRole."
		h.render(w, http.StatusForbidden, d)
		return
	}
	h.render(w, http.StatusOK, h.data(r, "admin", "Admin"))
}

func (h *handler) notFound(w http.ResponseWriter, r *http.Request) {
	d := h.data(r, "error", "Not found")
	d.Error = "There is no page at " + r.URL.Path + "."
	h.render(w, http.StatusNotFound, d)
}

// authed runs the authentication middleware in front of a page. When the middleware
// turns the request away (no or bad credentials, a cross-site request, an outage) the
// browser gets a page: the sign-in page for 401, an error page otherwise.
func (h *handler) authed(page http.HandlerFunc) http.Handler {
	if h.opts.Authenticate == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.renderLogin(w, r, http.StatusUnauthorized, "This agent has no authentication configured, so the UI cannot tell who you are.")
		})
	}
	return h.opts.Authenticate(page, h.renderError)
}

// renderError is the UI's httperr.Renderer: the middleware's refusals as pages.
func (h *handler) renderError(w http.ResponseWriter, r *http.Request, status int, _, msg string) {
	if status == http.StatusUnauthorized {
		h.renderLogin(w, r, status, msg)
		return
	}
	d := h.data(r, "error", http.StatusText(status))
	d.Error = msg
	h.render(w, status, d)
}

// safeNext returns a local path to go to after sign-in, or "/".
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || strings.HasPrefix(u.Path, "/login") {
		return "/"
	}
	return u.RequestURI()
}
