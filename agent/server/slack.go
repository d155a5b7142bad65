package server

import (
	"errors"
	"net/http"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/slack"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// slackChannel answers the channel id of the path, or 400 for anything else (a
// channel's name is not its id, and the id is part of a settings key).
func slackChannel(w http.ResponseWriter, r *http.Request) (string, bool) {
	ch := r.PathValue("id")
	if err := apiv1.ValidateSlackChannelID(ch); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "channel: "+err.Error())
		return "", false
	}
	return ch, true
}

// slackAdmin lets admins through and answers everyone else 401 or 403.
func (s *Server) slackAdmin(w http.ResponseWriter, r *http.Request, action string) bool {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return false
	}
	if !id.Admin {
		s.record(r, action, r.PathValue("id"), audit.OutcomeDenied, "not an admin")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "Slack channel settings are managed by admins (verb \"*\" on sessions.agents.cake.ai)")
		return false
	}
	return true
}

// getSlackChannel answers a channel's default repository.
func (s *Server) getSlackChannel(w http.ResponseWriter, r *http.Request) {
	if !s.slackAdmin(w, r, "slack.channel.get") {
		return
	}
	ch, ok := slackChannel(w, r)
	if !ok {
		return
	}
	repo, err := s.opts.Store.GetSetting(r.Context(), slack.ChannelRepoSetting(ch))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.storeError(w, r, err, "setting")
		return
	}
	writeJSON(w, http.StatusOK, apiv1.SlackChannel{Channel: ch, Repo: repo})
}

// putSlackChannel sets a channel's default repository.
func (s *Server) putSlackChannel(w http.ResponseWriter, r *http.Request) {
	if !s.slackAdmin(w, r, "slack.channel.put") {
		return
	}
	ch, ok := slackChannel(w, r)
	if !ok {
		return
	}
	var req apiv1.SlackChannel
	if !decode(w, r, &req) {
		return
	}
	if req.Repo != "" {
		if err := apiv1.ValidateRepoURL(req.Repo); err != nil {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "repo: "+err.Error())
			return
		}
	}
	if err := s.opts.Store.PutSetting(r.Context(), slack.ChannelRepoSetting(ch), req.Repo); err != nil {
		s.record(r, "slack.channel.put", ch, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "setting")
		return
	}
	s.record(r, "slack.channel.put", ch, "success", "repo "+req.Repo)
	writeJSON(w, http.StatusOK, apiv1.SlackChannel{Channel: ch, Repo: req.Repo})
}
