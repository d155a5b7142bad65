// Package fakelitellm is a local stand-in for a LiteLLM proxy, implementing the
// documented surface the agent uses and nothing more: virtual keys (POST /key/generate,
// POST /key/delete by keys or key_aliases, GET /key/info?key=), internal users'
// budgets (POST /user/new, POST /user/update) — all with the master key — and the
// OpenAI-compatible chat endpoint, which accepts only a live virtual key (or the master
// key), enforces the key's models and the key's and its user's max_budget, and charges
// CostPerRequest to both for every completion. The completions themselves come from
// test/fakemodel, so OpenCode behaves exactly as against the fake model.
package fakelitellm

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cakeai/cake-agents/test/fakemodel"
)

// DefaultCostPerRequest is what a completion costs unless Server.CostPerRequest is set.
const DefaultCostPerRequest = 0.0125

// Key is the server's record of one virtual key.
type Key struct {
	Key       string            `json:"key"`
	Token     string            `json:"token"`
	Alias     string            `json:"key_alias"`
	Models    []string          `json:"models"`
	MaxBudget *float64          `json:"max_budget"`
	Expires   *time.Time        `json:"expires"`
	UserID    string            `json:"user_id"`
	Metadata  map[string]string `json:"metadata"`
	Spend     float64           `json:"spend"`
	// Requests counts the chat completions the key made.
	Requests int `json:"requests"`
}

// User is the server's record of an internal user.
type User struct {
	ID        string   `json:"user_id"`
	MaxBudget *float64 `json:"max_budget"`
	// BudgetDuration is LiteLLM's budget_duration ("30d", "3600s"): the period after
	// which the user's spend resets ("" for never).
	BudgetDuration string  `json:"budget_duration,omitempty"`
	Spend          float64 `json:"spend"`
}

// Server is an http.Handler; create it with New.
type Server struct {
	// CostPerRequest (USD) is charged for every chat completion.
	CostPerRequest float64
	// Model answers the chat completions.
	Model *fakemodel.Server

	masterKey string
	now       func() time.Time
	mux       *http.ServeMux
	down      atomic.Bool

	mu      sync.Mutex
	keys    map[string]*Key // by key
	deleted []Key
	users   map[string]*User
}

// New returns a server whose admin API accepts masterKey.
func New(masterKey string) *Server {
	s := &Server{CostPerRequest: DefaultCostPerRequest, Model: fakemodel.New(), masterKey: masterKey, now: time.Now,
		keys: map[string]*Key{}, users: map[string]*User{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /key/generate", s.admin(s.generate))
	mux.HandleFunc("POST /key/delete", s.admin(s.delete))
	mux.HandleFunc("GET /key/info", s.admin(s.info))
	mux.HandleFunc("POST /user/new", s.admin(s.userNew))
	mux.HandleFunc("POST /user/update", s.admin(s.userUpdate))
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("POST /chat/completions", s.chat)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /models", s.models)
	mux.HandleFunc("GET /_keys", s.admin(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"live": s.Keys(), "deleted": s.Deleted()})
	}))
	mux.HandleFunc("GET /health/liveliness", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, `"I'm alive!"`) })
	s.mux = mux
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.down.Load() {
		writeError(w, http.StatusServiceUnavailable, "service_unavailable", "fake LiteLLM is down")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// SetDown makes every request fail with 503 (down) or be served again, as a LiteLLM
// behind a proxy that lost it would.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// Keys returns a copy of every live key, ordered by alias.
func (s *Server) Keys() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, *k)
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.Alias, b.Alias) })
	return out
}

// Deleted returns a copy of every deleted key, in the order they were deleted.
func (s *Server) Deleted() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Key(nil), s.deleted...)
}

// User returns the user's record, if there is one.
func (s *Server) User(id string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return User{}, false
	}
	return *u, true
}

func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if bearer(r) != s.masterKey || s.masterKey == "" {
			writeError(w, http.StatusUnauthorized, "auth_error", "Authentication Error, only the master key may call "+r.URL.Path)
			return
		}
		h(w, r)
	}
}

func bearer(r *http.Request) string {
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	return r.Header.Get("x-litellm-api-key")
}

// durationRE is LiteLLM's duration syntax: a number and s, m, h or d.
var durationRE = regexp.MustCompile(`^(\d+)([smhd])$`)

func parseDuration(v string) (time.Duration, error) {
	m := durationRE.FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("duration %q: want a number and s, m, h or d", v)
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	return time.Duration(n) * unit, nil
}

func hashKey(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:])
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		KeyAlias  string            `json:"key_alias"`
		Models    []string          `json:"models"`
		MaxBudget *float64          `json:"max_budget"`
		Duration  *string           `json:"duration"`
		UserID    string            `json:"user_id"`
		Metadata  map[string]string `json:"metadata"`
	}
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	k := &Key{Alias: req.KeyAlias, Models: req.Models, MaxBudget: req.MaxBudget, UserID: req.UserID, Metadata: req.Metadata}
	if req.Duration != nil {
		d, err := parseDuration(*req.Duration)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		exp := s.now().UTC().Add(d)
		k.Expires = &exp
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	k.Key = "sk-" + hex.EncodeToString(b)
	k.Token = hashKey(k.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.Alias != "" {
		for _, o := range s.keys {
			if o.Alias == k.Alias {
				writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("Unique key aliases across all keys are required, key_alias=%s already exists", k.Alias))
				return
			}
		}
	}
	s.keys[k.Key] = k
	// As LiteLLM's GenerateKeyResponse: "token" repeats the key itself (the response
	// model copies it), "token_id" is the hash LiteLLM stores.
	writeJSON(w, http.StatusOK, map[string]any{"key": k.Key, "token": k.Key, "token_id": k.Token, "key_alias": k.Alias,
		"expires": k.Expires, "models": k.Models, "max_budget": k.MaxBudget, "user_id": k.UserID, "metadata": k.Metadata})
}

// find returns the live key named by its value or its token; s.mu is held.
func (s *Server) find(keyOrToken string) *Key {
	if k, ok := s.keys[keyOrToken]; ok {
		return k
	}
	for _, k := range s.keys {
		if k.Token == keyOrToken {
			return k
		}
	}
	return nil
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Keys       []string `json:"keys"`
		KeyAliases []string `json:"key_aliases"`
	}
	if err := decodeStrict(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var victims []*Key
	for _, v := range req.Keys {
		if k := s.find(v); k != nil {
			victims = append(victims, k)
		}
	}
	for _, a := range req.KeyAliases {
		for _, k := range s.keys {
			if k.Alias == a {
				victims = append(victims, k)
			}
		}
	}
	if len(victims) == 0 || len(victims) < len(req.Keys)+len(req.KeyAliases) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("Failed to delete all keys. Keys passed in request: %d, found: %d", len(req.Keys)+len(req.KeyAliases), len(victims)))
		return
	}
	var deleted []string
	for _, k := range victims {
		if _, ok := s.keys[k.Key]; !ok {
			continue
		}
		delete(s.keys, k.Key)
		s.deleted = append(s.deleted, *k)
		deleted = append(deleted, k.Token)
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted_keys": deleted})
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.find(r.URL.Query().Get("key"))
	if k == nil {
		writeError(w, http.StatusNotFound, "not_found", "Key not found in database")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": k.Token, "info": map[string]any{
		"key_alias": k.Alias, "spend": k.Spend, "max_budget": k.MaxBudget, "expires": k.Expires,
		"models": k.Models, "user_id": k.UserID, "metadata": k.Metadata}})
}

type userRequest struct {
	UserID         string   `json:"user_id"`
	MaxBudget      *float64 `json:"max_budget"`
	BudgetDuration *string  `json:"budget_duration"`
}

// budgetDuration checks a budget_duration as LiteLLM parses it (a number and a unit).
func budgetDuration(v *string) (string, error) {
	if v == nil {
		return "", nil
	}
	if _, err := parseDuration(*v); err != nil {
		return "", fmt.Errorf("budget_duration: %w", err)
	}
	return *v, nil
}

func (s *Server) userNew(w http.ResponseWriter, r *http.Request) {
	var req userRequest
	if err := decodeStrict(r, &req); err != nil || req.UserID == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "user_id is required")
		return
	}
	period, err := budgetDuration(req.BudgetDuration)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[req.UserID]; ok {
		writeError(w, http.StatusBadRequest, "bad_request", "user "+req.UserID+" already exists")
		return
	}
	s.users[req.UserID] = &User{ID: req.UserID, MaxBudget: req.MaxBudget, BudgetDuration: period}
	writeJSON(w, http.StatusOK, map[string]any{"user_id": req.UserID, "max_budget": req.MaxBudget})
}

func (s *Server) userUpdate(w http.ResponseWriter, r *http.Request) {
	var req userRequest
	if err := decodeStrict(r, &req); err != nil || req.UserID == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "user_id is required")
		return
	}
	period, err := budgetDuration(req.BudgetDuration)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[req.UserID]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "user "+req.UserID+" not found")
		return
	}
	u.MaxBudget = req.MaxBudget
	if req.BudgetDuration != nil {
		u.BudgetDuration = period
	}
	writeJSON(w, http.StatusOK, map[string]any{"user_id": u.ID, "max_budget": u.MaxBudget})
}

// chat checks the caller's key, lets the fake model answer, and charges the key.
func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 32<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &req)
	presented := bearer(r)
	s.mu.Lock()
	k := s.keys[presented]
	if presented != s.masterKey || s.masterKey == "" {
		if msg := s.refuse(k, req.Model); msg != "" {
			s.mu.Unlock()
			status := http.StatusUnauthorized
			if k != nil {
				status = http.StatusBadRequest
			}
			writeError(w, status, "auth_error", msg)
			return
		}
	}
	s.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.Model.ServeHTTP(w, r)
	s.mu.Lock()
	if k != nil {
		k.Spend += s.CostPerRequest
		k.Requests++
		if u := s.users[k.UserID]; u != nil {
			u.Spend += s.CostPerRequest
		}
	}
	s.mu.Unlock()
}

// refuse says why k may not call model now ("" when it may); s.mu is held.
func (s *Server) refuse(k *Key, model string) string {
	switch {
	case k == nil:
		return "Authentication Error, Invalid proxy server token passed. Unable to find token in cache or `LiteLLM_VerificationTokenTable`"
	case k.Expires != nil && s.now().After(*k.Expires):
		return "Authentication Error - Expired Key. Key Expiry time " + k.Expires.Format(time.RFC3339)
	case len(k.Models) > 0 && !slices.Contains(k.Models, model):
		return fmt.Sprintf("key not allowed to access model. This key can only access models=%v. Tried to access %s", k.Models, model)
	case k.MaxBudget != nil && k.Spend >= *k.MaxBudget:
		return fmt.Sprintf("Budget has been exceeded! Current cost: %g, Max budget: %g", k.Spend, *k.MaxBudget)
	}
	if u := s.users[k.UserID]; u != nil && u.MaxBudget != nil && u.Spend >= *u.MaxBudget {
		return fmt.Sprintf("ExceededBudget: User=%s over budget. Spend=%g, Budget=%g", u.ID, u.Spend, *u.MaxBudget)
	}
	return ""
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if bearer(r) == "" {
		writeError(w, http.StatusUnauthorized, "auth_error", "Authentication Error, no key passed")
		return
	}
	s.Model.ServeHTTP(w, r)
}

// decodeStrict decodes a JSON body, refusing unknown fields so a misspelt field in the
// agent's requests fails the tests instead of being silently ignored.
func decodeStrict(r *http.Request, v any) error {
	d := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers in LiteLLM's error shape.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": "None", "code": strconv.Itoa(status)}})
}
