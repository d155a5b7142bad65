package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// DeviceFlow is GitHub's OAuth device flow as the link endpoints need it
// (agent/github implements it).
type DeviceFlow interface {
	Start(ctx context.Context) (*github.DeviceCode, error)
	Poll(ctx context.Context, deviceCode string) (*github.Token, time.Duration, error)
}

// githubFlows holds the device flows in progress. They live in this replica's memory:
// the device code must never leave the agent, and a flow lasts minutes, during which
// the plugin's port-forward stays on one pod.
type githubFlows struct {
	mu    sync.Mutex
	flows map[string]*githubFlow
}

type githubFlow struct {
	owner      string
	deviceCode string
	expires    time.Time
	interval   time.Duration
}

// maxGitHubFlows bounds the flows kept in memory; expired ones are dropped first.
const maxGitHubFlows = 1000

const githubNotConfigured = "GitHub linking is not configured on this agent: an admin sets the chart value github.oauth.clientId (agent flag --github-client-id) to an OAuth app with the device flow enabled; meanwhile add a token with `kubectl agents credential add github.com`"

// startGitHubLink starts a device flow for the caller.
func (s *Server) startGitHubLink(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	if s.opts.GitHub == nil {
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, githubNotConfigured)
		return
	}
	dc, err := s.opts.GitHub.Start(r.Context())
	if err != nil {
		s.log.Error("github device flow start failed", "error", err)
		s.record(r, "github.link", s.opts.GitHubHost, audit.OutcomeError, err.Error())
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not start linking with GitHub: "+err.Error())
		return
	}
	now := s.opts.Now()
	f := &githubFlow{owner: id.UserID, deviceCode: dc.DeviceCode, expires: now.Add(time.Duration(dc.ExpiresIn) * time.Second), interval: time.Duration(dc.Interval) * time.Second}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	fid := hex.EncodeToString(b)
	s.github.mu.Lock()
	if s.github.flows == nil {
		s.github.flows = map[string]*githubFlow{}
	}
	for k, old := range s.github.flows {
		if now.After(old.expires) {
			delete(s.github.flows, k)
		}
	}
	full := len(s.github.flows) >= maxGitHubFlows
	if !full {
		s.github.flows[fid] = f
	}
	s.github.mu.Unlock()
	if full {
		httperr.Write(w, http.StatusTooManyRequests, apiv1.CodeQuotaExceeded, "too many GitHub links in progress on this agent: try again in a few minutes")
		return
	}
	writeJSON(w, http.StatusCreated, apiv1.GitHubLink{ID: fid, UserCode: dc.UserCode, VerificationURI: dc.VerificationURI, ExpiresAt: f.expires.UTC(), Interval: dc.Interval})
}

// pollGitHubLink asks GitHub once whether the caller entered the code; on success the
// token is stored as the caller's credential for github.com.
func (s *Server) pollGitHubLink(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	if s.opts.GitHub == nil {
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, githubNotConfigured)
		return
	}
	fid := r.PathValue("id")
	s.github.mu.Lock()
	f := s.github.flows[fid]
	s.github.mu.Unlock()
	if f == nil || f.owner != id.UserID {
		// Another user's flow is as unknown as a missing one.
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "no GitHub link "+fid+" in progress on this agent: start again with `kubectl agents github link`")
		return
	}
	done := func() {
		s.github.mu.Lock()
		delete(s.github.flows, fid)
		s.github.mu.Unlock()
	}
	if s.opts.Now().After(f.expires) {
		done()
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkExpired, Message: "the code expired before it was entered: start again"})
		return
	}
	tok, every, err := s.opts.GitHub.Poll(r.Context(), f.deviceCode)
	switch {
	case errors.Is(err, github.ErrPending):
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkPending, Interval: int(f.interval / time.Second)})
		return
	case errors.Is(err, github.ErrSlowDown):
		s.github.mu.Lock()
		f.interval = max(every, f.interval+5*time.Second)
		s.github.mu.Unlock()
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkPending, Interval: int(f.interval / time.Second)})
		return
	case errors.Is(err, github.ErrDenied):
		done()
		s.record(r, "github.link", s.opts.GitHubHost, audit.OutcomeDenied, "declined at GitHub")
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkDenied, Message: "the authorization was declined at GitHub"})
		return
	case errors.Is(err, github.ErrExpired):
		done()
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkExpired, Message: "the code expired before it was entered: start again"})
		return
	case err != nil:
		s.log.Error("github device flow poll failed", "error", err)
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not ask GitHub about the link: "+err.Error())
		return
	}
	done()
	sec := gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: apiv1.DefaultCredentialUsername, Token: tok.AccessToken}
	c := &store.Credential{OwnerID: id.UserID, Provider: gitcred.Provider(s.opts.GitHubHost), Secret: gitcred.Encode(sec)}
	if err := s.opts.Store.PutCredential(r.Context(), c); err != nil {
		s.record(r, "github.link", s.opts.GitHubHost, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "credential")
		return
	}
	s.record(r, "github.link", s.opts.GitHubHost, audit.OutcomeSuccess, fmt.Sprintf("device flow, scope %q", tok.Scope))
	writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkLinked, Message: "linked: sessions on https://github.com/... clone and push as you from their next start"})
}
