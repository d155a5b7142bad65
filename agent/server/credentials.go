package server

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Limits of a git credential's parts: far above real tokens (GitHub's are < 300 bytes),
// far below the request limit.
const (
	maxCredentialToken    = 8192
	maxCredentialUsername = 256
)

// The credential endpoints act on the caller's own credentials only: nobody, admins
// included, reads or replaces another user's, so a credential is only ever used for
// sessions of the person who linked it.

// putCredential stores (or replaces) the caller's token for the host in the path.
func (s *Server) putCredential(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	host := strings.ToLower(r.PathValue("host"))
	if err := apiv1.ValidateCredentialHost(host); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	var req apiv1.PutCredentialRequest
	if !decode(w, r, &req) {
		return
	}
	// Tokens are pasted: a trailing newline from a file or a terminal is not part of it.
	req.Token = strings.TrimSpace(req.Token)
	switch {
	case req.Token == "":
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "token: the access token is empty")
		return
	case len(req.Token) > maxCredentialToken || strings.ContainsFunc(req.Token, unicode.IsControl):
		// The message never echoes the token.
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("token: give one token of printable characters, at most %d bytes", maxCredentialToken))
		return
	}
	if req.Username == "" {
		req.Username = apiv1.DefaultCredentialUsername
	}
	if len(req.Username) > maxCredentialUsername || strings.ContainsFunc(req.Username, unicode.IsControl) {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("username: give a user name of printable characters, at most %d bytes", maxCredentialUsername))
		return
	}
	sec := gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: req.Username, Token: req.Token}
	c := &store.Credential{OwnerID: id.UserID, Provider: gitcred.Provider(host), Secret: gitcred.Encode(sec)}
	if err := s.opts.Store.PutCredential(r.Context(), c); err != nil {
		s.record(r, "credential.put", host, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "credential")
		return
	}
	s.record(r, "credential.put", host, audit.OutcomeSuccess, "kind "+sec.Kind+", user "+sec.Username)
	writeJSON(w, http.StatusOK, gitcred.ToAPI(c, sec))
}

// listCredentials lists the caller's git credentials without their secrets.
func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	list, err := s.opts.Store.ListCredentials(r.Context(), id.UserID)
	if err != nil {
		s.storeError(w, r, err, "credentials")
		return
	}
	out := apiv1.CredentialList{Items: []apiv1.Credential{}}
	for _, c := range list {
		if _, ok := gitcred.HostOf(c.Provider); !ok {
			continue
		}
		// The kind and user name live in the encrypted secret; reading them here keeps
		// the table's schema as it is, and a list is short.
		full, err := s.opts.Store.GetCredential(r.Context(), id.UserID, c.Provider)
		if err != nil {
			s.storeError(w, r, err, "credential")
			return
		}
		sec, err := gitcred.Decode(full.Secret)
		if err != nil {
			s.storeError(w, r, err, "credential")
			return
		}
		out.Items = append(out.Items, gitcred.ToAPI(full, sec))
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteCredential removes the caller's credential for the host in the path. Sessions
// already running keep theirs until they stop: their Secret was written at start.
func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request) {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	host := strings.ToLower(r.PathValue("host"))
	if err := apiv1.ValidateCredentialHost(host); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	if err := s.opts.Store.DeleteCredential(r.Context(), id.UserID, gitcred.Provider(host)); err != nil {
		s.record(r, "credential.delete", host, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "credential for "+host)
		return
	}
	s.record(r, "credential.delete", host, audit.OutcomeSuccess, "")
	w.WriteHeader(http.StatusNoContent)
}
