package server

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/version"
)

// authorize asks the Authorizer whether the caller may perform verb on
// sessions.agents.cake.ai; a denial is audited and answered with 403.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, verb, target string) (*auth.Identity, bool) {
	id := auth.FromContext(r.Context())
	if id == nil {
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return nil, false
	}
	if s.opts.Authorizer == nil {
		return id, true
	}
	allowed, reason, err := s.opts.Authorizer.Authorize(r.Context(), id, verb)
	if err != nil {
		s.log.Error("authorization check failed", "user", id.Username, "verb", verb, "error", err)
		writeError(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "could not check your permissions with the Kubernetes API: try again shortly")
		return nil, false
	}
	if !allowed {
		s.record(r, "session."+verb, target, audit.OutcomeDenied, reason)
		msg := fmt.Sprintf("%s may not %s sessions.%s: ask an admin to bind the cake-agents-user ClusterRole", id.Display(), verb, apiv1.Group)
		if reason != "" {
			msg += " (" + reason + ")"
		}
		writeError(w, http.StatusForbidden, apiv1.CodeForbidden, msg)
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
	writeJSON(w, http.StatusOK, apiv1.VersionInfo{Version: v.Version, Commit: v.Commit, Date: v.Date, GoVersion: v.GoVersion, Platform: v.Platform})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	out := apiv1.WhoAmI{Authenticator: id.Source, Username: id.Username, Groups: id.Groups, Permissions: map[string]bool{}, HeaderAuth: s.opts.HeaderAuth}
	if info := s.opts.HeaderAuthInfo; info.State != "" {
		out.HeaderAuthInfo = &info
	}
	if u, err := s.opts.Store.GetUser(r.Context(), id.UserID); err == nil {
		out.User = apiv1.User{ID: u.ID, Source: u.Source, Subject: u.Subject, Email: u.Email, DisplayName: u.DisplayName, Groups: u.Groups, Admin: u.Admin || id.Admin, CreatedAt: u.CreatedAt, LastSeenAt: u.LastSeenAt}
	} else {
		out.User = apiv1.User{ID: id.UserID, Source: id.Source, Subject: id.Username, Email: id.Email, Groups: id.Groups, Admin: id.Admin}
	}
	for _, verb := range []string{apiv1.VerbGet, apiv1.VerbList, apiv1.VerbCreate, apiv1.VerbUpdate, apiv1.VerbDelete, apiv1.VerbAttach} {
		allowed := true
		if s.opts.Authorizer != nil {
			ok, _, err := s.opts.Authorizer.Authorize(r.Context(), id, verb)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "could not check your permissions with the Kubernetes API: try again shortly")
				return
			}
			allowed = ok
		}
		out.Permissions[verb] = allowed
	}
	out.Permissions["admin"] = id.Admin
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	var req apiv1.CreateTokenRequest
	if !decode(w, r, &req) {
		return
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > 100 {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "name: give the token a name of 1 to 100 characters, e.g. \"laptop\"")
		return
	}
	ttl := s.opts.DefaultTokenTTL
	if req.ExpiresIn != nil {
		if req.ExpiresIn.Duration < time.Minute || req.ExpiresIn.Duration > 366*24*time.Hour {
			writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "expiresIn: must be between 1m and 8784h (one year)")
			return
		}
		ttl = req.ExpiresIn.Duration
	}
	secret, tok, err := auth.IssueToken(r.Context(), s.opts.Store, id.UserID, req.Name, ttl)
	if err != nil {
		s.record(r, "token.create", req.Name, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "token")
		return
	}
	s.record(r, "token.create", tok.ID, audit.OutcomeSuccess, "name "+req.Name)
	out := tokenToAPI(tok)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
}

func tokenToAPI(t *store.Token) apiv1.Token {
	return apiv1.Token{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt}
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	toks, err := s.opts.Store.ListTokens(r.Context(), id.UserID)
	if err != nil {
		s.storeError(w, r, err, "tokens")
		return
	}
	out := apiv1.TokenList{Items: []apiv1.Token{}}
	for _, t := range toks {
		out.Items = append(out.Items, tokenToAPI(t))
	}
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].CreatedAt.Before(out.Items[j].CreatedAt) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
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
		writeError(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	if !id.Admin {
		s.record(r, "audit.list", "", audit.OutcomeDenied, "not an admin")
		writeError(w, http.StatusForbidden, apiv1.CodeForbidden, "the audit log is for admins (verb \"*\" on sessions.agents.cake.ai)")
		return
	}
	q := r.URL.Query()
	f := store.AuditFilter{Actor: q.Get("actor"), Target: q.Get("target"), Continue: q.Get("continue")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "limit: want a number from 1 to 1000")
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
