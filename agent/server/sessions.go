package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	id, ok := s.authorize(w, r, apiv1.VerbCreate, "sessions")
	if !ok {
		return
	}
	var req apiv1.CreateSessionRequest
	if !decode(w, r, &req) {
		return
	}
	if err := validateCreate(&req); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	if err := withinMaxima(req.IdleTimeout, req.TTL, s.opts.MaxIdleTimeout, s.opts.MaxTTL); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	if req.ForkOf != "" && !s.fillFork(w, r, id, &req) {
		return
	}
	model, ok := s.resolveModel(w, r, req.Model)
	if !ok {
		return
	}
	// The request's values only: the sessions controller fills in the id, state,
	// timestamps and the defaults of whatever the request left zero.
	sess := &store.Session{
		Title:      req.Title,
		OwnerID:    id.UserID,
		Private:    req.Private == nil || *req.Private,
		Repo:       req.Repo,
		Branch:     req.Branch,
		Prompt:     req.Prompt,
		Model:      model,
		Persistent: req.Persistent,
		ForkedFrom: req.ForkOf,
	}
	// Asked for, 0 is "never"; not asked for, the configured default applies.
	if req.IdleTimeout != nil {
		sess.IdleTimeout = orNever(req.IdleTimeout.Duration)
	}
	if req.TTL != nil {
		sess.TTL = orNever(req.TTL.Duration)
	}
	if sess.Title == "" {
		sess.Title = defaultTitle(req)
	}
	limit := s.opts.MaxActiveSessions
	if id.Admin {
		limit = 0
	}
	if err := s.opts.Sessions.Create(r.Context(), sess, limit); err != nil {
		if errors.Is(err, sessions.ErrModelKey) {
			// Nothing was created. LiteLLM's answer can quote the master key: the
			// detail goes to the log, the caller and the audit record get what an
			// admin should check.
			msg := "the session's LiteLLM key could not be made: " + litellm.Advice(err) + "; nothing was created"
			status := http.StatusBadGateway
			if errors.Is(err, litellm.ErrUnavailable) {
				status = http.StatusServiceUnavailable
			}
			s.log.Error("session create failed: no LiteLLM key", "error", err)
			s.record(r, "session.create", sess.ID, audit.OutcomeError, msg)
			httperr.Write(w, status, apiv1.CodeUnavailable, msg)
			return
		}
		s.record(r, "session.create", sess.ID, outcomeFor(err), err.Error())
		// Every store sentinel keeps its status (an unreachable database is a 503);
		// anything else is logged and answered without detail, since driver errors
		// name database hosts and users.
		s.storeError(w, r, err, "session")
		return
	}
	s.record(r, "session.create", sess.ID, "success", "")
	failpoint.Hit("create", "respond", sess.ID)
	w.Header().Set("Location", "/api/v1/sessions/"+sess.ID)
	writeJSON(w, http.StatusCreated, s.toAPI(r, sess, nil))
}

// fillFork checks the session a create forks (the caller must see it: others are not
// found, as everywhere) and takes what the request left empty from it: repository,
// branch, model, persistence and a title. It answers the error itself.
func (s *Server) fillFork(w http.ResponseWriter, r *http.Request, id *auth.Identity, req *apiv1.CreateSessionRequest) bool {
	if err := apiv1.ValidateSessionID(req.ForkOf); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "forkOf: "+err.Error())
		return false
	}
	src, err := s.opts.Store.GetSession(r.Context(), req.ForkOf)
	if err == nil && !auth.CanView(id, src) {
		err = store.ErrNotFound
	}
	if err != nil {
		s.storeError(w, r, err, "forkOf: session "+req.ForkOf)
		return false
	}
	if req.Repo == "" {
		req.Repo, req.Branch = src.Repo, src.Branch
	}
	if req.Model == "" {
		req.Model = src.Model
	}
	req.Persistent = req.Persistent || src.Persistent
	if req.Title == "" {
		req.Title = "fork of " + src.Title
		if r := []rune(req.Title); len(r) > apiv1.MaxTitleLen {
			req.Title = string(r[:apiv1.MaxTitleLen-3]) + "..."
		}
	}
	return true
}

func defaultTitle(req apiv1.CreateSessionRequest) string {
	t := req.Prompt
	if t == "" && req.Repo != "" {
		t = strings.TrimSuffix(req.Repo[strings.LastIndexAny(req.Repo, "/:")+1:], ".git")
	}
	t = strings.Join(strings.Fields(t), " ")
	if utf8.RuneCountInString(t) > 60 {
		t = string([]rune(t)[:57]) + "..."
	}
	if t == "" {
		t = "untitled"
	}
	return t
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	id, ok := s.authorize(w, r, apiv1.VerbList, "sessions")
	if !ok {
		return
	}
	q := r.URL.Query()
	f := store.SessionFilter{VisibleTo: id.UserID, Continue: q.Get("continue")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "limit: want a number from 1 to 1000")
			return
		}
		f.Limit = n
	}
	all := false
	if v := q.Get("all"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("all: %q is not true or false", v))
			return
		}
		all = b
	}
	if all {
		if !id.Admin {
			s.record(r, "session.list-all", "", "denied", "not an admin")
			httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "listing every user's sessions needs the admin role (verb \"*\" on sessions.agents.cake.ai)")
			return
		}
		f.VisibleTo = ""
	}
	switch owner := q.Get("owner"); owner {
	case "":
	case "me":
		f.OwnerID, f.VisibleTo = id.UserID, ""
	default:
		f.OwnerID = owner
	}
	if v := q.Get("state"); v != "" {
		for _, st := range strings.Split(v, ",") {
			state := apiv1.SessionState(strings.TrimSpace(st))
			if !state.Valid() {
				httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("state: %q is not one of %v", st, apiv1.AllStates))
				return
			}
			f.States = append(f.States, state)
		}
	}
	page, err := s.opts.Store.ListSessions(r.Context(), f)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "continue: invalid token: list again from the start without it")
			return
		}
		s.storeError(w, r, err, "sessions")
		return
	}
	out := apiv1.SessionList{Items: make([]apiv1.Session, 0, len(page.Items)), Continue: page.Continue}
	names := map[string]string{}
	for _, sess := range page.Items {
		out.Items = append(out.Items, s.toAPI(r, sess, names))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.loadSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	out := s.toAPI(r, sess, nil)
	// The spend (LiteLLM) and the branch (the session's own OpenCode, through a tunnel)
	// are details: both are asked at the same time and for at most detailTimeout, so a
	// gateway or an OpenCode that is slow or gone costs those fields, never the answer.
	ctx, cancel := context.WithTimeout(r.Context(), detailTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if sp, ok := s.opts.Sessions.(spender); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spend, on, err := sp.Spend(ctx, sess.ID)
			if err != nil {
				s.log.Warn("read the session's LiteLLM spend failed", "session", sess.ID, "error", err)
			} else if on {
				out.ModelSpend = &spend
			}
		}()
	}
	if s.opts.Workspaces != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.opts.Workspaces.Refresh(ctx, sess)
			if err != nil {
				s.log.Warn("look at the session's branch and pull request failed", "session", sess.ID, "error", err)
			}
			if v != nil {
				out.CurrentBranch, out.PullRequestURL = v.Branch, v.PullRequestURL
			}
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

// detailTimeout bounds what GET /sessions/{id} asks beyond the store: the LiteLLM spend
// (whose client would otherwise wait its own 15 s) and the workspace's branch from the
// session's OpenCode, which may be busy starting, answering a model or unreachable.
const detailTimeout = 10 * time.Second

// Workspaces tells what a session's workspace is on (*vcs.Watcher): looked at now while
// it runs, else as last seen; nil when never seen.
type Workspaces interface {
	Refresh(ctx context.Context, s *store.Session) (*store.SessionVCS, error)
}

// spender is implemented by a Sessions that gives sessions LiteLLM keys of their own
// (sessions.Controller): Spend is what session id's keys spent, in USD; on is false when
// sessions get no keys.
type spender interface {
	Spend(ctx context.Context, id string) (spend float64, on bool, err error)
}

func (s *Server) patchSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.loadSession(w, r, apiv1.VerbUpdate)
	if !ok || !s.requireOwner(w, r, id, sess, "update") {
		return
	}
	var req apiv1.UpdateSessionRequest
	if !decode(w, r, &req) {
		return
	}
	var errs []string
	if req.Title != nil {
		if err := validateTitle(*req.Title); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, err := range []error{validateLimit("idleTimeout", req.IdleTimeout, maxIdleTimeout), validateLimit("ttl", req.TTL, maxTTL),
		withinMaxima(req.IdleTimeout, req.TTL, s.opts.MaxIdleTimeout, s.opts.MaxTTL)} {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, strings.Join(errs, "; "))
		return
	}
	if req.ResourceVersion != 0 && req.ResourceVersion != sess.ResourceVersion {
		httperr.Write(w, http.StatusConflict, apiv1.CodeConflict, fmt.Sprintf("session %s is at resourceVersion %d, not %d: fetch it again and retry", sess.ID, sess.ResourceVersion, req.ResourceVersion))
		return
	}
	if req.Private != nil && !*req.Private && sess.Private && sess.State.Active() {
		if host, ok := s.carriesCredential(r, sess); ok {
			httperr.Write(w, http.StatusConflict, apiv1.CodeConflict, fmt.Sprintf("session %s runs with your git credential for %s, which everyone it is shared with could read: stop it first (`kubectl agents session stop %s`); a shared session starts without anyone's credentials", sess.ID, host, sess.ID))
			return
		}
	}
	if req.Title != nil {
		sess.Title = *req.Title
	}
	if req.Private != nil {
		sess.Private = *req.Private
	}
	if req.IdleTimeout != nil {
		sess.IdleTimeout = req.IdleTimeout.Duration
	}
	if req.TTL != nil {
		sess.TTL = req.TTL.Duration
	}
	if err := s.opts.Store.UpdateSession(r.Context(), sess); err != nil {
		s.record(r, "session.update", sess.ID, outcomeFor(err), err.Error())
		s.storeError(w, r, err, "session "+sess.ID)
		return
	}
	s.record(r, "session.update", sess.ID, "success", "")
	writeJSON(w, http.StatusOK, s.toAPI(r, sess, nil))
}

// toAPI converts a stored session to its wire form, resolving the owner's name
// (names caches lookups across a list).
func (s *Server) toAPI(r *http.Request, sess *store.Session, names map[string]string) apiv1.Session {
	owner, ok := names[sess.OwnerID]
	if !ok {
		owner = sess.OwnerID
		if u, err := s.opts.Store.GetUser(r.Context(), sess.OwnerID); err == nil {
			owner = u.Email
			if owner == "" {
				owner = u.Subject
			}
		}
		if names != nil {
			names[sess.OwnerID] = owner
		}
	}
	out := apiv1.Session{
		ID:                 sess.ID,
		Title:              sess.Title,
		OwnerID:            sess.OwnerID,
		Owner:              owner,
		Private:            sess.Private,
		Repo:               sess.Repo,
		Branch:             sess.Branch,
		Prompt:             sess.Prompt,
		Model:              sess.Model,
		Persistent:         sess.Persistent,
		IdleTimeout:        apiv1.Duration{Duration: sess.IdleTimeout},
		TTL:                apiv1.Duration{Duration: sess.TTL},
		State:              sess.State,
		Reason:             sess.Reason,
		Message:            sess.Message,
		PodName:            sess.PodName,
		PodNamespace:       sess.PodNamespace,
		StartKind:          sess.StartKind,
		ForkedFrom:         sess.ForkedFrom,
		CreatedAt:          sess.CreatedAt,
		UpdatedAt:          sess.UpdatedAt,
		StartedAt:          sess.StartedAt,
		StoppedAt:          sess.StoppedAt,
		LastActivityAt:     sess.LastActivityAt,
		LastActivitySource: sess.LastActivitySource,
		ResourceVersion:    sess.ResourceVersion,
	}
	if t, ok := sess.IdleDeadline(); ok {
		out.IdleDeadline = &t
	}
	if t, ok := sess.ExpiresAt(); ok {
		out.ExpiresAt = &t
	}
	return out
}

func outcomeFor(err error) string {
	if errors.Is(err, store.ErrQuotaExceeded) {
		return "denied"
	}
	return "error"
}

// carriesCredential reports whether the running private session sess was given its
// owner's git credential for its repository's host (a token for https, an SSH key for
// ssh), and names the host.
func (s *Server) carriesCredential(r *http.Request, sess *store.Session) (string, bool) {
	provider, host := "", apiv1.RepoSSHHost(sess.Repo)
	if host != "" {
		provider = gitcred.SSHProvider(host)
	} else if host = apiv1.RepoCredentialHost(sess.Repo); host != "" {
		provider = gitcred.Provider(host)
	} else {
		return "", false
	}
	_, err := s.opts.Store.GetCredential(r.Context(), sess.OwnerID, provider)
	// An unreadable credential counts as carried: sharing must not leak on a hiccup.
	return host, !errors.Is(err, store.ErrNotFound)
}
