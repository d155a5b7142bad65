package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
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

// A device flow in progress is kept in the store as a credential of its user (provider
// githubFlowPrefix+id), encrypted like every credential: the device code must never
// leave the agent, and with several replicas behind the Service the poll may reach
// another replica than the start did (the web UI goes through the Service).
const githubFlowPrefix = "github-link:"

// githubFlow is one device flow in progress, as stored.
type githubFlow struct {
	DeviceCode string        `json:"deviceCode"`
	Expires    time.Time     `json:"expires"`
	Interval   time.Duration `json:"interval"`
}

// maxGitHubFlows bounds the flows one user may have in progress; expired ones are
// dropped first.
const maxGitHubFlows = 5

func (s *Server) saveGitHubFlow(ctx context.Context, owner, fid string, f *githubFlow) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return s.opts.Store.PutCredential(ctx, &store.Credential{OwnerID: owner, Provider: githubFlowPrefix + fid, Secret: b})
}

// loadGitHubFlow returns the owner's flow fid, or nil when there is none (another user's
// flow is as unknown as a missing one).
func (s *Server) loadGitHubFlow(ctx context.Context, owner, fid string) (*githubFlow, error) {
	c, err := s.opts.Store.GetCredential(ctx, owner, githubFlowPrefix+fid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f githubFlow
	if err := json.Unmarshal(c.Secret, &f); err != nil {
		return nil, fmt.Errorf("stored GitHub link %s: %w", fid, err)
	}
	return &f, nil
}

func (s *Server) dropGitHubFlow(ctx context.Context, owner, fid string) {
	if err := s.opts.Store.DeleteCredential(ctx, owner, githubFlowPrefix+fid); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("forget a finished GitHub link failed", "error", err)
	}
}

// liveGitHubFlows forgets the owner's expired flows and counts the others.
func (s *Server) liveGitHubFlows(ctx context.Context, owner string, now time.Time) (int, error) {
	list, err := s.opts.Store.ListCredentials(ctx, owner)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range list {
		fid, ok := strings.CutPrefix(c.Provider, githubFlowPrefix)
		if !ok {
			continue
		}
		f, err := s.loadGitHubFlow(ctx, owner, fid)
		if err != nil || f == nil || now.After(f.Expires) {
			s.dropGitHubFlow(ctx, owner, fid)
			continue
		}
		n++
	}
	return n, nil
}

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
	f := &githubFlow{DeviceCode: dc.DeviceCode, Expires: now.Add(time.Duration(dc.ExpiresIn) * time.Second), Interval: time.Duration(dc.Interval) * time.Second}
	n, err := s.liveGitHubFlows(r.Context(), id.UserID, now)
	if err != nil {
		s.storeError(w, r, err, "GitHub link")
		return
	}
	if n >= maxGitHubFlows {
		httperr.Write(w, http.StatusTooManyRequests, apiv1.CodeQuotaExceeded, fmt.Sprintf("you have %d GitHub links in progress: finish one, or try again once their codes expired", n))
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	fid := hex.EncodeToString(b)
	if err := s.saveGitHubFlow(r.Context(), id.UserID, fid, f); err != nil {
		s.storeError(w, r, err, "GitHub link")
		return
	}
	writeJSON(w, http.StatusCreated, apiv1.GitHubLink{ID: fid, UserCode: dc.UserCode, VerificationURI: dc.VerificationURI, ExpiresAt: f.Expires.UTC(), Interval: dc.Interval})
}

// pollGitHubLink asks GitHub once whether the caller entered the code; on success the
// token is stored as the caller's credential for the GitHub host (GitHubHost).
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
	f, err := s.loadGitHubFlow(r.Context(), id.UserID, fid)
	if err != nil {
		s.storeError(w, r, err, "GitHub link")
		return
	}
	if f == nil {
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "no GitHub link "+fid+" in progress: start again with `kubectl agents github link`")
		return
	}
	done := func() { s.dropGitHubFlow(r.Context(), id.UserID, fid) }
	if s.opts.Now().After(f.Expires) {
		done()
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkExpired, Message: "the code expired before it was entered: start again"})
		return
	}
	tok, every, err := s.opts.GitHub.Poll(r.Context(), f.DeviceCode)
	switch {
	case errors.Is(err, github.ErrPending):
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkPending, Interval: int(f.Interval / time.Second)})
		return
	case errors.Is(err, github.ErrSlowDown):
		// GitHub asks for a longer interval: keep it for every later poll, on any replica.
		f.Interval = max(every, f.Interval+5*time.Second)
		if err := s.saveGitHubFlow(r.Context(), id.UserID, fid, f); err != nil {
			s.storeError(w, r, err, "GitHub link")
			return
		}
		writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkPending, Interval: int(f.Interval / time.Second)})
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
	writeJSON(w, http.StatusOK, apiv1.GitHubLinkStatus{Status: apiv1.GitHubLinkLinked, Message: "linked: your private sessions on https://" + s.opts.GitHubHost + "/... clone and push as you from their next start"})
}
