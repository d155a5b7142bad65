package server

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/version"
)

// authorize asks the Authorizer whether the caller may perform verb on
// sessions.agents.cake.ai; a denial is audited and answered with 403.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, verb, target string) (*auth.Identity, bool) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return nil, false
	}
	if s.opts.Authorizer == nil {
		return id, true
	}
	allowed, reason, err := s.opts.Authorizer.Authorize(r.Context(), id, verb)
	if err != nil {
		s.log.Error("authorization check failed", "user", id.Username, "verb", verb, "error", err)
		httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "could not check your permissions with the Kubernetes API: try again shortly")
		return nil, false
	}
	if !allowed {
		s.record(r, "session."+verb, target, audit.OutcomeDenied, reason)
		msg := fmt.Sprintf("%s may not %s sessions.%s: ask an admin to bind the cake-agents-user ClusterRole", id.Display(), verb, apiv1.Group)
		if reason != "" {
			msg += " (" + reason + ")"
		}
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, msg)
		return nil, false
	}
	return id, true
}

// record writes an audit event for the caller of r.
func (s *Server) record(r *http.Request, action, target, outcome, detail string) {
	actor := "anonymous"
	if id := auth.FromContext(r.Context()); id != nil {
		actor = id.Display()
	}
	s.opts.Audit.Record(r.Context(), audit.Event{Actor: actor, Action: action, Target: target, Outcome: outcome, Detail: detail})
}

func (s *Server) getVersion(w http.ResponseWriter, _ *http.Request) {
	v := version.Get()
	writeJSON(w, http.StatusOK, apiv1.VersionInfo{Version: s.version(), Commit: v.Commit, Date: v.Date, GoVersion: v.GoVersion, Platform: v.Platform,
		ChartVersion: s.opts.ChartVersion, SupportedClients: version.SupportedClients(s.version())})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	out := apiv1.WhoAmI{Authenticator: id.Source, Username: id.Username, Groups: id.Groups, Permissions: map[string]bool{}, HeaderAuth: s.opts.HeaderAuth}
	if info := s.opts.HeaderAuthInfo; info.State != "" {
		out.HeaderAuthInfo = &info
	}
	if u, err := s.opts.Store.GetUser(r.Context(), id.UserID); err == nil {
		out.User = userToAPI(u)
		out.User.Admin = u.Admin || id.Admin
	} else {
		out.User = apiv1.User{ID: id.UserID, Source: id.Source, Subject: id.Username, Email: id.Email, Groups: id.Groups, Admin: id.Admin}
	}
	for _, verb := range []string{apiv1.VerbGet, apiv1.VerbList, apiv1.VerbCreate, apiv1.VerbUpdate, apiv1.VerbDelete, apiv1.VerbAttach} {
		allowed := true
		if s.opts.Authorizer != nil {
			ok, _, err := s.opts.Authorizer.Authorize(r.Context(), id, verb)
			if err != nil {
				httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "could not check your permissions with the Kubernetes API: try again shortly")
				return
			}
			allowed = ok
		}
		out.Permissions[verb] = allowed
	}
	out.Permissions["admin"] = id.Admin
	writeJSON(w, http.StatusOK, out)
}

func userToAPI(u *store.User) apiv1.User {
	return apiv1.User{ID: u.ID, Source: u.Source, Subject: u.Subject, Email: u.Email, DisplayName: u.DisplayName, Groups: u.Groups,
		Admin: u.Admin, CreatedAt: u.CreatedAt, LastSeenAt: u.LastSeenAt}
}

// tokenLimit names the setting behind the maximum token lifetime in messages.
const tokenLimit = "--token-max-ttl, chart value tokens.maxTTL"

// createToken issues a token. Every token expires: after ExpiresIn, else the agent's
// default, never after the agent's maximum, and never after the token the request was
// authenticated with, so a token cannot renew itself forever.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	var req apiv1.CreateTokenRequest
	if !decode(w, r, &req) {
		return
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > auth.MaxTokenNameLen || strings.ContainsFunc(req.Name, unicode.IsControl) {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("name: give the token a name of plain text, 1 to %d bytes, e.g. \"laptop\"", auth.MaxTokenNameLen))
		return
	}
	ttl, explicit := s.opts.DefaultTokenTTL, false
	if req.ExpiresIn != nil && req.ExpiresIn.Duration != 0 {
		ttl, explicit = req.ExpiresIn.Duration, true
		switch {
		case ttl < time.Minute:
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("expiresIn: %s is shorter than the minimum of 1m", ttl))
			return
		case ttl > s.opts.MaxTokenTTL:
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("expiresIn: %s is longer than this agent's maximum token lifetime of %s (%s)",
				ttl, s.opts.MaxTokenTTL, tokenLimit))
			return
		}
	}
	now := s.opts.Now().UTC()
	if !id.TokenExpiresAt.IsZero() {
		left := id.TokenExpiresAt.Sub(now).Truncate(time.Second)
		if ttl > left {
			if explicit {
				httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("expiresIn: %s is longer than the personal access token you used, which expires at %s (in %s): a token cannot outlive the token that created it; use your kubeconfig identity or the authenticating proxy for a longer one",
					ttl, id.TokenExpiresAt.UTC().Format(time.RFC3339), left))
				return
			}
			ttl = left
		}
	}
	secret, tok, err := auth.IssueTokenUntil(r.Context(), s.opts.Store, id.UserID, req.Name, now, now.Add(ttl))
	if err != nil {
		s.record(r, "token.create", req.Name, audit.OutcomeError, err.Error())
		if errors.Is(err, store.ErrConflict) {
			// Names are unique per user, so people can tell their tokens apart.
			httperr.Write(w, http.StatusConflict, apiv1.CodeConflict, fmt.Sprintf("you already have a token named %q: choose another name, or revoke that token first", req.Name))
			return
		}
		s.storeError(w, r, err, "token")
		return
	}
	s.record(r, "token.create", tok.ID, audit.OutcomeSuccess, fmt.Sprintf("name %s, expires %s", req.Name, tok.ExpiresAt.UTC().Format(time.RFC3339)))
	out := s.tokenToAPI(tok, id.Display())
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
}

// tokenToAPI shows t with its effective expiry (tokens stored without one expire the
// maximum lifetime after creation).
func (s *Server) tokenToAPI(t *store.Token, owner string) apiv1.Token {
	exp := auth.EffectiveExpiry(t, s.opts.MaxTokenTTL)
	return apiv1.Token{ID: t.ID, Name: t.Name, OwnerID: t.OwnerID, Owner: owner, CreatedAt: t.CreatedAt, ExpiresAt: &exp, LastUsedAt: t.LastUsedAt}
}

func displayOf(u *store.User) string {
	if u.Email != "" {
		return u.Email
	}
	return u.Subject
}

// tokenOwners resolves ?user= for the token endpoints: empty or "me" (or the caller's
// own id, user name or email) is the caller; anyone else is for admins, and names every
// stored user with that id, user name or email. It answers the request itself (403,
// 404) when it returns false.
func (s *Server) tokenOwners(w http.ResponseWriter, r *http.Request, id *auth.Identity, name, action string) ([]*store.User, bool) {
	self := name == "" || name == "me" || name == id.UserID || name == id.Username || (id.Email != "" && strings.EqualFold(name, id.Email))
	if self {
		u, err := s.opts.Store.GetUser(r.Context(), id.UserID)
		if err != nil {
			s.storeError(w, r, err, "your user")
			return nil, false
		}
		return []*store.User{u}, true
	}
	if !id.Admin {
		s.record(r, action, name, audit.OutcomeDenied, "not an admin")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, fmt.Sprintf("the tokens of another user (%s) are for admins (verb \"*\" on sessions.%s); use user=me for your own", name, apiv1.Group))
		return nil, false
	}
	users, err := s.opts.Store.FindUsers(r.Context(), name)
	if err != nil {
		s.storeError(w, r, err, "users")
		return nil, false
	}
	if len(users) == 0 {
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, fmt.Sprintf("no user %q is known to the agent: name a user by id, Kubernetes user name or email, as `kubectl agents whoami` shows them", name))
		return nil, false
	}
	return users, true
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	users, ok := s.tokenOwners(w, r, id, strings.TrimSpace(r.URL.Query().Get("user")), "token.list")
	if !ok {
		return
	}
	out := apiv1.TokenList{Items: []apiv1.Token{}}
	for _, u := range users {
		toks, err := s.opts.Store.ListTokens(r.Context(), u.ID)
		if err != nil {
			s.storeError(w, r, err, "tokens")
			return
		}
		for _, t := range toks {
			out.Items = append(out.Items, s.tokenToAPI(t, displayOf(u)))
		}
	}
	sort.SliceStable(out.Items, func(i, j int) bool { return out.Items[i].CreatedAt.Before(out.Items[j].CreatedAt) })
	writeJSON(w, http.StatusOK, out)
}

// revokeUserTokens revokes every token of a user at once: what an admin does when a
// person leaves, or when their identity provider groups changed and their tokens must
// not carry the old ones until they expire.
func (s *Server) revokeUserTokens(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	name := strings.TrimSpace(r.URL.Query().Get("user"))
	if name == "" {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "user: name the user whose tokens to revoke (?user=NAME: id, Kubernetes user name or email; me for yourself); one token: DELETE /api/v1/tokens/{id}")
		return
	}
	users, ok := s.tokenOwners(w, r, id, name, "token.revoke-all")
	if !ok {
		return
	}
	out := apiv1.TokenRevocation{Users: []apiv1.User{}}
	var names []string
	for _, u := range users {
		n, err := s.opts.Store.DeleteUserTokens(r.Context(), u.ID)
		if err != nil {
			s.record(r, "token.revoke-all", name, audit.OutcomeError, fmt.Sprintf("after %d tokens: %v", out.Revoked, err))
			s.storeError(w, r, err, "tokens")
			return
		}
		out.Revoked += n
		out.Users = append(out.Users, userToAPI(u))
		names = append(names, fmt.Sprintf("%s/%s (%s)", u.Source, u.Subject, u.ID))
	}
	s.record(r, "token.revoke-all", name, audit.OutcomeSuccess, fmt.Sprintf("%d tokens of %s", out.Revoked, strings.Join(names, ", ")))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	tid := r.PathValue("id")
	if err := s.opts.Store.DeleteToken(r.Context(), id.UserID, tid); err != nil {
		s.record(r, "token.delete", tid, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "token "+tid)
		return
	}
	s.record(r, "token.delete", tid, audit.OutcomeSuccess, "")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	if !id.Admin {
		s.record(r, "audit.list", "", audit.OutcomeDenied, "not an admin")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "the audit log is for admins (verb \"*\" on sessions.agents.cake.ai)")
		return
	}
	q := r.URL.Query()
	f := store.AuditFilter{Actor: q.Get("actor"), Target: q.Get("target"), Continue: q.Get("continue")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "limit: want a number from 1 to 1000")
			return
		}
		f.Limit = n
	}
	page, err := s.opts.Store.ListAudit(r.Context(), f)
	if err != nil {
		s.storeError(w, r, err, "audit events")
		return
	}
	out := apiv1.AuditList{Items: []apiv1.AuditEvent{}, Continue: page.Continue}
	for _, e := range page.Items {
		out.Items = append(out.Items, apiv1.AuditEvent{ID: e.ID, Time: e.Time, Actor: e.Actor, Action: e.Action, Target: e.Target, Outcome: e.Outcome, Detail: e.Detail, RequestID: e.RequestID})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz reports ready only when the store and the Kubernetes API answer, so the
// Service sends no traffic to a replica that would fail every request.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]error{}
	if s.opts.Ready != nil {
		for k, v := range s.opts.Ready(r.Context()) {
			checks[k] = v
		}
	}
	if _, ok := checks["store"]; !ok && s.opts.Store != nil {
		checks["store"] = s.opts.Store.Ping(r.Context())
	}
	if _, ok := checks["kubernetes"]; !ok && s.opts.Sessions != nil {
		checks["kubernetes"] = s.opts.Sessions.Ready(r.Context())
	}
	out := apiv1.Readiness{Ready: true, Checks: map[string]string{}}
	for k, err := range checks {
		if err != nil {
			out.Ready = false
			out.Checks[k] = err.Error()
		} else {
			out.Checks[k] = "ok"
		}
	}
	code := http.StatusOK
	if !out.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, out)
}
