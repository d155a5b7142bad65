package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/linear"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Integration is a chat or issue-tracker integration as the API needs it: its webhook
// (served without the API's authentication: deliveries carry their own signature) and
// the check doctor reports.
type Integration interface {
	// Name is the integration's name ("linear"); its webhook is served under
	// /integrations/<name>/.
	Name() string
	// Check reports whether it is configured and its service answers.
	Check(ctx context.Context) apiv1.Integration
}

// integrationCheckTimeout bounds each integration's check in GET /api/v1/integrations.
const integrationCheckTimeout = 5 * time.Second

// listIntegrations reports every integration the agent knows, configured or not.
func (s *Server) listIntegrations(w http.ResponseWriter, r *http.Request) {
	if auth.FromContext(r.Context()) == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	out := apiv1.IntegrationList{Items: []apiv1.Integration{}}
	for _, in := range s.opts.Integrations {
		ctx, cancel := context.WithTimeout(r.Context(), integrationCheckTimeout)
		out.Items = append(out.Items, in.Check(ctx))
		cancel()
	}
	writeJSON(w, http.StatusOK, out)
}

// linearAdmin lets admins through and answers everyone else 401, or 403 naming the
// verb (audited as denied under action): a team's repository says where the agent
// pushes, which is an admin's business, as with Slack's channel settings.
func (s *Server) linearAdmin(w http.ResponseWriter, r *http.Request, action string) bool {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return false
	}
	if !id.Admin {
		s.record(r, action, strings.ToUpper(r.PathValue("key")), audit.OutcomeDenied, "not an admin")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "Linear teams' repositories are managed by admins (verb \"*\" on sessions.agents.cake.ai)")
		return false
	}
	return true
}

// putLinearTeam sets the repository sessions of a Linear team's issues start on (admins);
// an empty repo removes it, as with Slack's channels.
func (s *Server) putLinearTeam(w http.ResponseWriter, r *http.Request) {
	if !s.linearAdmin(w, r, "integrations.linear.team") {
		return
	}
	key := r.PathValue("key")
	if err := apiv1.ValidateLinearTeamKey(key); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "key: "+err.Error())
		return
	}
	var req apiv1.LinearTeam
	if !decode(w, r, &req) {
		return
	}
	if req.Repo != "" {
		if err := apiv1.ValidateRepoURL(req.Repo); err != nil {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "repo: "+err.Error())
			return
		}
	}
	key = strings.ToUpper(key)
	if err := s.opts.Store.PutSetting(r.Context(), linear.TeamRepoSetting(key), req.Repo); err != nil {
		s.record(r, "integrations.linear.team", key, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "Linear team "+key)
		return
	}
	s.record(r, "integrations.linear.team", key, audit.OutcomeSuccess, req.Repo)
	writeJSON(w, http.StatusOK, apiv1.LinearTeam{Key: key, Repo: req.Repo})
}

// getLinearTeam answers the repository of a Linear team (admins; 404: none set).
func (s *Server) getLinearTeam(w http.ResponseWriter, r *http.Request) {
	if !s.linearAdmin(w, r, "integrations.linear.team.get") {
		return
	}
	key := strings.ToUpper(r.PathValue("key"))
	repo, err := s.opts.Store.GetSetting(r.Context(), linear.TeamRepoSetting(key))
	if errors.Is(err, store.ErrNotFound) || (err == nil && repo == "") {
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "Linear team "+key+" has no repository: an admin sets it with `kubectl agents integrations linear-team "+key+" --repo URL`")
		return
	}
	if err != nil {
		s.storeError(w, r, err, "Linear team "+key)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.LinearTeam{Key: key, Repo: repo})
}
