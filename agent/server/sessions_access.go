package server

import (
	"fmt"
	"net/http"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
