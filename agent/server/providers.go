package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/providers"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// catalog loads the providers sessions may use now; nil (and an answer written) on error.
func (s *Server) catalog(w http.ResponseWriter, r *http.Request) *providers.Catalog {
	c, err := providers.Load(r.Context(), s.opts.Store, s.providerDefaults())
	if err != nil {
		s.storeError(w, r, err, "providers")
		return nil
	}
	return c
}

func (s *Server) providerDefaults() providers.Defaults {
	if s.opts.Providers == nil {
		return providers.Defaults{}
	}
	return *s.opts.Providers
}

// admin answers 401/403 unless the caller is an admin; the refusal is audited.
func (s *Server) admin(w http.ResponseWriter, r *http.Request, action string) bool {
	id := auth.FromContext(r.Context())
	if id == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return false
	}
	if !id.Admin {
		s.record(r, action, "providers", audit.OutcomeDenied, "not an admin")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "model providers are managed by admins (verb \"*\" on sessions.agents.cake.ai)")
		return false
	}
	return true
}

// getProviders answers the stored providers with every secret value as %%SECRET%%.
func (s *Server) getProviders(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r, "providers.get") {
		return
	}
	c := s.catalog(w, r)
	if c == nil {
		return
	}
	s.record(r, "providers.get", "providers", audit.OutcomeSuccess, "")
	writeJSON(w, http.StatusOK, c.Stored.Redacted())
}

// putProviders replaces the providers; %%SECRET%% keeps a stored value.
func (s *Server) putProviders(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r, "providers.put") {
		return
	}
	tooLarge := func() {
		msg := fmt.Sprintf("the providers JSON is larger than %d bytes", providers.MaxBodyBytes)
		s.record(r, "providers.put", "providers", audit.OutcomeError, msg)
		httperr.Write(w, http.StatusRequestEntityTooLarge, apiv1.CodeTooLarge, msg)
	}
	if r.ContentLength > providers.MaxBodyBytes {
		tooLarge()
		return
	}
	var raw json.RawMessage
	if !decode(w, r, &raw) {
		return
	}
	if len(raw) > providers.MaxBodyBytes {
		tooLarge()
		return
	}
	set, err := providers.Parse(raw)
	if err == nil {
		var old *providers.Catalog
		if old = s.catalog(w, r); old == nil {
			return
		}
		err = set.KeepSecrets(old.Stored)
	}
	if err != nil {
		s.record(r, "providers.put", "providers", audit.OutcomeError, err.Error())
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	if err := s.opts.Store.ReplaceProviders(r.Context(), set.ToStore()); err != nil {
		s.record(r, "providers.put", "providers", outcomeFor(err), "")
		s.storeError(w, r, err, "providers")
		return
	}
	ids := make([]string, 0, len(set))
	for _, m := range set.Models() {
		ids = append(ids, m.ID)
	}
	s.record(r, "providers.put", "providers", audit.OutcomeSuccess, "models: "+strings.Join(ids, ", "))
	writeJSON(w, http.StatusOK, set.Redacted())
}

// listModels answers the models any signed-in user may pick for a session.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	if auth.FromContext(r.Context()) == nil {
		httperr.Write(w, http.StatusUnauthorized, apiv1.CodeUnauthorized, "not authenticated")
		return
	}
	c := s.catalog(w, r)
	if c == nil {
		return
	}
	out := apiv1.ModelList{Items: c.Models()}
	if out.Items == nil {
		out.Items = []apiv1.Model{}
	}
	writeJSON(w, http.StatusOK, out)
}

// resolveModel checks req's model against the providers and returns the one to store;
// false when it answered 400 (or the store failed).
func (s *Server) resolveModel(w http.ResponseWriter, r *http.Request, model string) (string, bool) {
	if s.opts.Providers == nil {
		return model, true
	}
	c := s.catalog(w, r)
	if c == nil {
		return "", false
	}
	m, err := c.Resolve(model)
	if errors.Is(err, providers.ErrNoProviders) {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "cannot create a session: "+err.Error())
		return "", false
	}
	if err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return "", false
	}
	return m, true
}
