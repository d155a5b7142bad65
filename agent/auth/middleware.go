package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// ActionAuthenticate is the audit action of a rejected authentication.
const ActionAuthenticate = "auth.authenticate"

// userUpsertInterval bounds how often a returning user's row is rewritten: LastSeenAt
// is accurate to this, and a busy client does not turn every request into a write.
const userUpsertInterval = time.Minute

// AdminResolver decides whether an identity is an agent admin; *SARAuthorizer is one.
type AdminResolver interface {
	Admin(ctx context.Context, id *Identity) (bool, error)
}

// MiddlewareOption changes NewMiddleware's behaviour.
type MiddlewareOption func(*Middleware)

// WithAdminResolver makes the middleware set Identity.Admin on every request. Without
// it every caller is a non-admin. An error from the resolver is logged and counts as
// "not admin": failing closed costs an admin a retry, failing open would hand out
// everyone's sessions during an API outage.
func WithAdminResolver(r AdminResolver) MiddlewareOption {
	return func(m *Middleware) { m.admin = r }
}

// WithAnonymousCounter counts requests that carry no credentials in c instead of writing an
// audit row for each: browsers opening the sign-in page, probes and scanners would otherwise
// bury the decisions that matter. A log line summarises them at most once per
// anonymousLogEvery.
func WithAnonymousCounter(c prometheus.Counter) MiddlewareOption {
	return func(m *Middleware) { m.anonymous = c }
}

// WithHeaderCSRF refuses, with 403, requests of callers the proxy's identity headers
// signed in for which check (the web UI's CSRF rules, ui.CheckCSRF) fails: those callers
// are browsers, whose proxy cookie another site can make them send. Kubernetes
// identities and bearer tokens are never sent by a browser on its own, and the UI's
// sign-in cookie is checked by its own authenticator.
func WithHeaderCSRF(check func(*http.Request) error) MiddlewareOption {
	return func(m *Middleware) { m.headerCSRF = check }
}

// anonymousLogEvery bounds the summary log line of requests without credentials.
const anonymousLogEvery = time.Minute

// Middleware is the authentication middleware built by NewMiddleware. Wrap guards the
// API; WrapWith guards handlers that answer refusals their own way (the web UI's
// pages). One Middleware serves both, so they share the user cache and the summary of
// requests without credentials.
type Middleware struct {
	anonymous      prometheus.Counter
	anonMu         sync.Mutex
	anonSeen       int
	anonLogged     time.Time
	authenticators []Authenticator
	st             store.Store
	rec            *audit.Recorder
	log            hclog.Logger
	admin          AdminResolver
	users          *ttlCache[string]
	noCredentials  string
	headerCSRF     func(*http.Request) error
}

// NewMiddleware authenticates every request with the first authenticator that
// recognises it, resolves admin rights, upserts the user into st (Source and Subject
// from the identity) and puts the Identity in the request context (FromContext).
//
// Requests it turns away are answered by the renderer (Wrap: the API's JSON apiv1.Error):
// 401 Unauthorized for missing or rejected credentials (audited, with the reason; for
// no credentials the message lists the ways available), 503 Unavailable when a
// credential could not be checked (Kubernetes API or store unreachable), 403 Forbidden
// for a cross-site request (WithHeaderCSRF). Nothing is exempt: mount health and
// metrics endpoints outside it.
func NewMiddleware(authenticators []Authenticator, st store.Store, rec *audit.Recorder, log hclog.Logger, opts ...MiddlewareOption) *Middleware {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	m := &Middleware{
		authenticators: slices.Clone(authenticators),
		st:             st,
		rec:            rec,
		log:            log,
		users:          newTTLCache[string](10000),
	}
	for _, o := range opts {
		o(m)
	}
	m.noCredentials = noCredentialsMessage(m.authenticators)
	return m
}

// offerer is implemented by authenticators that can be configured so that they never
// accept anyone (header auth disabled, or without a trusted proxy): a way that cannot
// work is not offered to a caller without credentials.
type offerer interface{ Offered() bool }

func noCredentialsMessage(as []Authenticator) string {
	names := make([]string, 0, len(as))
	for _, a := range as {
		if o, ok := a.(offerer); ok && !o.Offered() {
			continue
		}
		names = append(names, a.Name())
	}
	switch len(names) {
	case 0:
		return "no credentials, and this agent accepts none: configure an authentication method"
	case 1:
		return "no credentials: use " + names[0]
	default:
		return "no credentials: use " + strings.Join(names[:len(names)-1], ", ") + ", or " + names[len(names)-1]
	}
}

// Wrap authenticates every request before next and answers the ones it turns away
// with the API's JSON error.
func (m *Middleware) Wrap(next http.Handler) http.Handler { return m.WrapWith(next, httperr.JSON) }

// WrapWith is Wrap with the refusals answered by render, which gets the status, the
// apiv1 error code and the message Wrap would send.
func (m *Middleware) WrapWith(next http.Handler, render httperr.Renderer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		id, via, err := m.authenticate(r)
		if err != nil {
			actor := "unauthenticated peer " + peerString(r.RemoteAddr)
			if errors.Is(err, ErrUnauthenticated) {
				m.rec.Denied(ctx, actor, ActionAuthenticate, via, err.Error())
				render(w, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, err.Error())
				return
			}
			m.log.Error("authenticate request failed", "authenticator", via, "peer", peerString(r.RemoteAddr), "error", err)
			m.rec.Error(ctx, actor, ActionAuthenticate, via, err)
			render(w, r, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "cannot check your credentials right now; try again shortly")
			return
		}
		if id == nil {
			m.noCredentialsSeen(r)
			render(w, r, http.StatusUnauthorized, apiv1.CodeUnauthorized, m.noCredentials)
			return
		}
		if m.admin != nil {
			admin, err := m.admin.Admin(ctx, id)
			if err != nil {
				m.log.Warn("resolve admin rights failed, treating caller as non-admin", "user", id.Username, "error", err)
			}
			id.Admin = admin && err == nil
		}
		if err := m.upsertUser(ctx, id); err != nil {
			m.log.Error("record user failed", "user", id.Username, "source", id.Source, "error", err)
			render(w, r, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "cannot record your user right now; try again shortly")
			return
		}
		if m.headerCSRF != nil && id.Source == SourceHeader {
			if err := m.headerCSRF(r); err != nil {
				render(w, r, http.StatusForbidden, apiv1.CodeForbidden, "cross-site request refused: "+err.Error())
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(WithIdentity(ctx, id)))
	})
}

// noCredentialsSeen counts a request without credentials and logs a summary line at most
// once per anonymousLogEvery (the first one at once), never an audit row per request.
func (m *Middleware) noCredentialsSeen(r *http.Request) {
	if m.anonymous != nil {
		m.anonymous.Inc()
	}
	m.anonMu.Lock()
	m.anonSeen++
	now := time.Now()
	if now.Sub(m.anonLogged) < anonymousLogEvery {
		m.anonMu.Unlock()
		return
	}
	n, since := m.anonSeen, m.anonLogged
	m.anonSeen, m.anonLogged = 0, now
	m.anonMu.Unlock()
	kv := []any{"count", n, "latest_peer", peerString(r.RemoteAddr), "latest_path", r.URL.Path}
	if !since.IsZero() {
		kv = append(kv, "since", since.UTC().Format(time.RFC3339))
	}
	m.log.Info("requests without credentials refused (401); counted in cake_agents_unauthenticated_requests_total, not audited one by one", kv...)
}

// authenticate returns the identity, or nil when no authenticator recognised the
// request, and the name of the authenticator that decided.
func (m *Middleware) authenticate(r *http.Request) (*Identity, string, error) {
	for _, a := range m.authenticators {
		id, ok, err := a.Authenticate(r)
		if err != nil {
			return nil, a.Name(), err
		}
		if ok && id != nil {
			return id, a.Name(), nil
		}
	}
	return nil, "", nil
}

// upsertUser fills id.UserID, creating or refreshing the stored user. Identities that
// already carry a UserID (personal access tokens) belong to an existing user.
func (m *Middleware) upsertUser(ctx context.Context, id *Identity) error {
	if id.UserID != "" {
		return nil
	}
	u := &store.User{
		Source:      id.Source,
		Subject:     id.subject(),
		Email:       id.Email,
		DisplayName: id.DisplayName,
		Groups:      slices.Clone(id.Groups),
		Admin:       id.Admin,
	}
	if u.Subject == "" {
		return fmt.Errorf("identity from %s authentication has no subject", id.Source)
	}
	// Everything stored goes into the key, so a change (new group, lost admin) is
	// written at once rather than after the interval.
	key := fmt.Sprintf("%q %q %q %q %q %t", u.Source, u.Subject, u.Email, u.DisplayName, u.Groups, u.Admin)
	if uid, ok := m.users.get(key); ok {
		id.UserID = uid
		return nil
	}
	if m.st == nil {
		return errors.New("no store to record users in")
	}
	if err := m.st.UpsertUser(ctx, u); err != nil {
		return fmt.Errorf("upsert user: %w", err)
	}
	if u.ID == "" {
		return errors.New("upsert user: the store returned no id")
	}
	m.users.put(key, u.ID, userUpsertInterval)
	id.UserID = u.ID
	return nil
}
