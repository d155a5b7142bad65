package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Limits on session settings; larger values are almost always a typo.
const (
	maxIdleTimeout = 7 * 24 * time.Hour
	maxTTL         = 90 * 24 * time.Hour
)

var (
	branchRe = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,255}$`)
	modelRe  = regexp.MustCompile(`^[A-Za-z0-9._:/@-]{1,200}$`)
)

func validateBranch(b string) error {
	if b == "" {
		return nil
	}
	if !branchRe.MatchString(b) || strings.HasPrefix(b, "-") || strings.Contains(b, "..") || strings.HasSuffix(b, ".lock") || strings.HasSuffix(b, "/") {
		return fmt.Errorf("branch: %q is not a valid git branch name", b)
	}
	return nil
}

func validateTitle(t string) error {
	if utf8.RuneCountInString(t) > apiv1.MaxTitleLen {
		return fmt.Errorf("title: longer than %d characters", apiv1.MaxTitleLen)
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return errors.New("title: must not contain control characters such as newlines")
		}
	}
	return nil
}

func validateLimit(name string, d *apiv1.Duration, limit time.Duration) error {
	if d == nil {
		return nil
	}
	if d.Duration < 0 {
		return fmt.Errorf("%s: must not be negative", name)
	}
	if d.Duration > limit {
		return fmt.Errorf("%s: %s is longer than the maximum %s", name, d.Duration, limit)
	}
	if d.Duration > 0 && d.Duration < time.Minute {
		return fmt.Errorf("%s: %s is shorter than one minute", name, d.Duration)
	}
	return nil
}

func validateCreate(req *apiv1.CreateSessionRequest) error {
	var errs []string
	add := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	add(validateTitle(req.Title))
	if req.Repo != "" {
		// The rule the session's init container applies before it clones.
		if err := apiv1.ValidateRepoURL(req.Repo); err != nil {
			errs = append(errs, "repo: "+err.Error())
		}
	}
	add(validateBranch(req.Branch))
	if req.Branch != "" && req.Repo == "" {
		errs = append(errs, "branch: set repo too, a branch needs a repository")
	}
	if len(req.Prompt) > apiv1.MaxPromptBytes {
		errs = append(errs, fmt.Sprintf("prompt: %d bytes is more than the maximum %d", len(req.Prompt), apiv1.MaxPromptBytes))
	}
	if !utf8.ValidString(req.Prompt) {
		errs = append(errs, "prompt: not valid UTF-8")
	}
	if req.Model != "" && !modelRe.MatchString(req.Model) {
		errs = append(errs, fmt.Sprintf("model: %q is not a model name such as litellm/gpt-4o", req.Model))
	}
	add(validateLimit("idleTimeout", req.IdleTimeout, maxIdleTimeout))
	add(validateLimit("ttl", req.TTL, maxTTL))
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

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
	// The request's values only: the sessions controller fills in the id, state,
	// timestamps and the defaults of whatever the request left zero.
	sess := &store.Session{
		Title:      req.Title,
		OwnerID:    id.UserID,
		Private:    req.Private == nil || *req.Private,
		Repo:       req.Repo,
		Branch:     req.Branch,
		Prompt:     req.Prompt,
		Model:      req.Model,
		Persistent: req.Persistent,
	}
	if req.IdleTimeout != nil {
		sess.IdleTimeout = req.IdleTimeout.Duration
	}
	if req.TTL != nil {
		sess.TTL = req.TTL.Duration
	}
	if sess.Title == "" {
		sess.Title = defaultTitle(req)
	}
	limit := s.opts.MaxActiveSessions
	if id.Admin {
		limit = 0
	}
	if err := s.opts.Sessions.Create(r.Context(), sess, limit); err != nil {
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

// loadSession authorizes verb, then loads the session and applies visibility: a
// session the caller may not see is reported as not found, so ids are not probed.
func (s *Server) loadSession(w http.ResponseWriter, r *http.Request, verb string) (*auth.Identity, *store.Session, bool) {
	sid := r.PathValue("id")
	if err := apiv1.ValidateSessionID(sid); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return nil, nil, false
	}
	id, ok := s.authorize(w, r, verb, sid)
	if !ok {
		return nil, nil, false
	}
	sess, err := s.opts.Store.GetSession(r.Context(), sid)
	if err != nil {
		s.storeError(w, r, err, "session "+sid)
		return nil, nil, false
	}
	if !auth.CanView(id, sess) {
		s.record(r, "session."+verb, sid, "denied", "private session of another user")
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "session "+sid+" not found")
		return nil, nil, false
	}
	return id, sess, true
}

// requireOwner answers 403 unless the caller owns the session or is an admin.
func (s *Server) requireOwner(w http.ResponseWriter, r *http.Request, id *auth.Identity, sess *store.Session, action string) bool {
	if auth.CanModify(id, sess) {
		return true
	}
	s.record(r, "session."+action, sess.ID, "denied", "not the owner")
	httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, fmt.Sprintf("only the owner of session %s or an admin may %s it", sess.ID, action))
	return false
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.loadSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.toAPI(r, sess, nil))
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
	for _, err := range []error{validateLimit("idleTimeout", req.IdleTimeout, maxIdleTimeout), validateLimit("ttl", req.TTL, maxTTL)} {
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

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.loadSession(w, r, apiv1.VerbDelete)
	if !ok || !s.requireOwner(w, r, id, sess, "delete") {
		return
	}
	if err := s.opts.Sessions.Delete(r.Context(), sess.ID); err != nil {
		s.record(r, "session.delete", sess.ID, outcomeFor(err), err.Error())
		s.lifecycleError(w, r, err, sess.ID)
		return
	}
	s.record(r, "session.delete", sess.ID, "success", "")
	failpoint.Hit("delete", "respond", sess.ID)
	if got, err := s.opts.Store.GetSession(r.Context(), sess.ID); err == nil {
		sess = got
	} else {
		sess.State = apiv1.StateDeleting
	}
	writeJSON(w, http.StatusAccepted, s.toAPI(r, sess, nil))
}

func (s *Server) stopSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.loadSession(w, r, apiv1.VerbUpdate)
	if !ok || !s.requireOwner(w, r, id, sess, "stop") {
		return
	}
	got, err := s.opts.Sessions.Stop(r.Context(), sess.ID, "StoppedByUser", "stopped by "+id.Display())
	if err != nil {
		s.record(r, "session.stop", sess.ID, outcomeFor(err), err.Error())
		s.lifecycleError(w, r, err, sess.ID)
		return
	}
	s.record(r, "session.stop", sess.ID, "success", "")
	failpoint.Hit("stop", "respond", sess.ID)
	writeJSON(w, http.StatusAccepted, s.toAPI(r, got, nil))
}

func (s *Server) startSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.loadSession(w, r, apiv1.VerbUpdate)
	if !ok || !s.requireOwner(w, r, id, sess, "start") {
		return
	}
	// A start makes the session active again: it counts against the quota like a create.
	limit := s.opts.MaxActiveSessions
	if id.Admin {
		limit = 0
	}
	got, err := s.opts.Sessions.Start(r.Context(), sess.ID, limit)
	if err != nil {
		s.record(r, "session.start", sess.ID, outcomeFor(err), err.Error())
		s.lifecycleError(w, r, err, sess.ID)
		return
	}
	s.record(r, "session.start", sess.ID, "success", "")
	failpoint.Hit("start", "respond", sess.ID)
	writeJSON(w, http.StatusAccepted, s.toAPI(r, got, nil))
}

// lifecycleError answers a failed stop/start/delete: a state the operation cannot
// apply to, or another operation on the session holding it past the wait, is a 409
// that says why; store sentinels keep their meaning (an unreachable database is a 503,
// not a conflict); anything else is an internal error.
func (s *Server) lifecycleError(w http.ResponseWriter, r *http.Request, err error, sid string) {
	if errors.Is(err, sessions.ErrInvalidState) || errors.Is(err, sessions.ErrBusy) {
		httperr.Write(w, http.StatusConflict, apiv1.CodeConflict, err.Error())
		return
	}
	s.storeError(w, r, err, "session "+sid)
}

func (s *Server) runningSession(w http.ResponseWriter, r *http.Request, verb string) (*auth.Identity, *store.Session, bool) {
	id, sess, ok := s.loadSession(w, r, verb)
	if !ok {
		return nil, nil, false
	}
	if sess.State != apiv1.StateRunning {
		httperr.Write(w, http.StatusConflict, apiv1.CodeNotRunning, fmt.Sprintf("session %s is %s, not Running: start it with `kubectl agents session start %s`", sess.ID, sess.State, sess.ID))
		return nil, nil, false
	}
	return id, sess, true
}

// drivableSession loads a Running session the caller may drive (auth.CanDrive): its owner,
// an admin, or a user RBAC grants "attach" on it. Others who can see it get 403 naming the
// grant that would let them.
func (s *Server) drivableSession(w http.ResponseWriter, r *http.Request, auditAction, action string) (*auth.Identity, *store.Session, bool) {
	id, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return nil, nil, false
	}
	granted := false
	if !auth.IsOwner(id, sess) && !id.Admin {
		if s.opts.Authorizer != nil {
			allowed, _, err := s.opts.Authorizer.AuthorizeSession(r.Context(), id, apiv1.VerbAttach, sess.ID)
			if err != nil {
				s.log.Error("authorization check failed", "user", id.Username, "verb", apiv1.VerbAttach, "session", sess.ID, "error", err)
				httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "could not check your permissions with the Kubernetes API: try again shortly")
				return nil, nil, false
			}
			granted = allowed
		}
	}
	if !auth.CanDrive(id, sess, granted) {
		s.record(r, auditAction, sess.ID, audit.OutcomeDenied, "not the owner, an admin, or granted attach")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, fmt.Sprintf(
			"only the owner of session %[1]s, an admin, or a user granted attach on it may %[2]s it: an admin can bind %[5]s "+
				"the ClusterRole cake-agents-attach, or a Role in namespace %[3]s with the rule "+
				"{apiGroups: [%[4]s], resources: [sessions], verbs: [attach], resourceNames: [%[1]s]} (--resource-name=%[1]s)",
			sess.ID, action, s.opts.Namespace, apiv1.Group, id.Display()))
		return nil, nil, false
	}
	return id, sess, true
}

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.drivableSession(w, r, "session.message", "send prompts to")
	if !ok {
		return
	}
	var req apiv1.SendMessageRequest
	if !decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "text: the prompt is empty")
		return
	}
	if len(req.Text) > apiv1.MaxPromptBytes {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("text: %d bytes is more than the maximum %d", len(req.Text), apiv1.MaxPromptBytes))
		return
	}
	if err := s.opts.Conversation.Send(r.Context(), sess, req.Text); err != nil {
		s.record(r, "session.message", sess.ID, "error", err.Error())
		// A stop or delete (through any replica) may have won the race since the
		// session was read: then the answer is that, not an unreachable OpenCode.
		if cur, gerr := s.opts.Store.GetSession(r.Context(), sess.ID); errors.Is(gerr, store.ErrNotFound) {
			httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "session "+sess.ID+" not found: it was deleted")
			return
		} else if gerr == nil && cur.State != apiv1.StateRunning {
			httperr.Write(w, http.StatusConflict, apiv1.CodeNotRunning, fmt.Sprintf("session %s is %s, not Running, so the message was not delivered: start it with `kubectl agents session start %s`", sess.ID, cur.State, sess.ID))
			return
		}
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	s.opts.Sessions.Touch(r.Context(), sess.ID, "message")
	s.record(r, "session.message", sess.ID, "success", "by "+id.Display())
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
}

func (s *Server) sessionLogs(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	msgs, err := s.opts.Conversation.Messages(r.Context(), sess)
	if err != nil {
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	if msgs == nil {
		msgs = []apiv1.Message{}
	}
	writeJSON(w, http.StatusOK, apiv1.MessageList{Items: msgs})
}

func (s *Server) sessionEvents(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	// Opening the stream is activity; what streams afterwards is not, or a browser tab
	// left open would keep the session from ever reaching its idle timeout.
	tw := &startedWriter{ResponseWriter: w, onStart: func() { s.opts.Sessions.Touch(r.Context(), sess.ID, "events") }}
	err := s.opts.Conversation.Events(r.Context(), sess, tw)
	if err == nil || r.Context().Err() != nil {
		return
	}
	if !tw.started {
		// Nothing sent yet: without this the client would get an empty 200.
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	s.log.Warn("event stream ended", "session", sess.ID, "error", err)
}

// startedWriter remembers whether a response was started, so a handler can still
// answer an error when the streaming call it delegated to failed before writing, and
// calls onStart (when set) as it starts.
type startedWriter struct {
	http.ResponseWriter
	started bool
	onStart func()
}

func (w *startedWriter) start() {
	if !w.started {
		w.started = true
		if w.onStart != nil {
			w.onStart()
		}
	}
}

func (w *startedWriter) WriteHeader(code int) {
	w.start()
	w.ResponseWriter.WriteHeader(code)
}

func (w *startedWriter) Write(b []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController flush the underlying writer.
func (w *startedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) attachSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	if !auth.CanSeePassword(id, sess) {
		s.record(r, "session.attach-direct", sess.ID, "denied", "not the owner")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "a direct attach needs the session's password, which only its owner gets: attach without --direct to go through the agent")
		return
	}
	pw, err := s.opts.Sessions.Password(r.Context(), sess)
	if err != nil {
		httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "the session's password is not available yet: "+err.Error())
		return
	}
	s.opts.Sessions.Touch(r.Context(), sess.ID, "attach")
	s.record(r, "session.attach-direct", sess.ID, "success", "")
	writeJSON(w, http.StatusOK, apiv1.AttachInfo{Password: pw, PodName: sess.PodName, PodNamespace: sess.PodNamespace})
}

func (s *Server) proxySession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.drivableSession(w, r, "session.proxy", "attach to")
	if !ok {
		return
	}
	// The request, and later what the caller sends on a long-lived stream, is activity.
	s.opts.Conversation.Proxy(w, r, sess, "/"+r.PathValue("rest"), func() {
		s.opts.Sessions.Touch(context.WithoutCancel(r.Context()), sess.ID, "proxy")
	})
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
