package server

import (
	"errors"
	"net/http"

	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
