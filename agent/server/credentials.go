package server

import (
	"errors"
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

// tokenSecret checks a token request; msg (the 400's message) says what is wrong.
func tokenSecret(req apiv1.PutCredentialRequest) (sec gitcred.Secret, msg string) {
	if req.PrivateKey != "" || req.KnownHosts != "" {
		return sec, `privateKey and knownHosts belong to an SSH key: send them with kind "ssh"`
	}
	// Tokens are pasted: a trailing newline from a file or a terminal is not part of it.
	req.Token = strings.TrimSpace(req.Token)
	switch {
	case req.Token == "":
		return sec, "token: the access token is empty"
	case len(req.Token) > maxCredentialToken || strings.ContainsFunc(req.Token, unicode.IsControl):
		// The message never echoes the token.
		return sec, fmt.Sprintf("token: give one token of printable characters, at most %d bytes", maxCredentialToken)
	}
	if req.Username == "" {
		req.Username = apiv1.DefaultCredentialUsername
	}
	if len(req.Username) > maxCredentialUsername || strings.ContainsFunc(req.Username, unicode.IsControl) {
		return sec, fmt.Sprintf("username: give a user name of printable characters, at most %d bytes", maxCredentialUsername)
	}
	return gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: req.Username, Token: req.Token}, ""
}

// putCredential stores (or replaces) the caller's credential of the request's kind (a
// token, or an SSH key) for the host in the path.
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
	var sec gitcred.Secret
	switch req.Kind {
	case "", apiv1.CredentialKindToken:
		var msg string
		if sec, msg = tokenSecret(req); msg != "" {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, msg)
			return
		}
	case apiv1.CredentialKindSSH:
		if req.Token != "" || req.Username != "" {
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "an ssh credential takes privateKey and knownHosts, not token or username: the repository URL names the login, as in git@host:org/repo.git")
			return
		}
		var err error
		if sec, err = gitcred.NewSSHSecret(host, []byte(req.PrivateKey), []byte(req.KnownHosts)); err != nil {
			// The errors never quote the key.
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
			return
		}
	default:
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("kind %q is not a credential kind: use %q (an HTTPS access token) or %q (an SSH key)", req.Kind, apiv1.CredentialKindToken, apiv1.CredentialKindSSH))
		return
	}
	c := &store.Credential{OwnerID: id.UserID, Provider: gitcred.ProviderOf(sec.Kind, host), Secret: gitcred.Encode(sec)}
	if err := s.opts.Store.PutCredential(r.Context(), c); err != nil {
		s.record(r, "credential.put", host, audit.OutcomeError, err.Error())
		s.storeError(w, r, err, "credential")
		return
	}
	detail := "kind " + sec.Kind + ", user " + sec.Username
	if sec.Kind == apiv1.CredentialKindSSH {
		detail = "kind ssh, key " + sec.Fingerprint
	}
	s.record(r, "credential.put", host, audit.OutcomeSuccess, detail)
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
		if _, _, ok := gitcred.ParseProvider(c.Provider); !ok {
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

// deleteCredential removes the caller's credentials for the host in the path: both
// kinds, or the one ?kind= names. Sessions already running keep theirs until they stop:
// their Secret was written at start.
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
	kinds := []string{apiv1.CredentialKindToken, apiv1.CredentialKindSSH}
	switch k := r.URL.Query().Get("kind"); k {
	case "":
	case apiv1.CredentialKindToken, apiv1.CredentialKindSSH:
		kinds = []string{k}
	default:
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("kind %q is not a credential kind: use %q or %q, or leave it out to remove both", k, apiv1.CredentialKindToken, apiv1.CredentialKindSSH))
		return
	}
	removed := 0
	for _, k := range kinds {
		err := s.opts.Store.DeleteCredential(r.Context(), id.UserID, gitcred.ProviderOf(k, host))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			s.record(r, "credential.delete", host, audit.OutcomeError, err.Error())
			s.storeError(w, r, err, "credential for "+host)
			return
		}
		removed++
	}
	if removed == 0 {
		s.record(r, "credential.delete", host, audit.OutcomeError, store.ErrNotFound.Error())
		s.storeError(w, r, store.ErrNotFound, "credential for "+host)
		return
	}
	s.record(r, "credential.delete", host, audit.OutcomeSuccess, "")
	w.WriteHeader(http.StatusNoContent)
}
