// Package fakegithub is a local server speaking the GitHub endpoints the agent uses, as
// GitHub documents them, so they are tested without GitHub: the OAuth device flow (POST
// /login/device/code, POST /login/oauth/access_token with the device_code grant, JSON
// answers for Accept: application/json, errors as HTTP 200 with "error":
// authorization_pending, slow_down, expired_token, access_denied,
// incorrect_client_credentials), where a test plays the user with Approve or Deny; and
// the GitHub App REST endpoints (see app.go), under /api/v3 as on GitHub Enterprise.
package fakegithub

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Server is the fake. ClientID is the only client id it accepts.
type Server struct {
	ClientID string
	// Now is the clock of App JWTs and installation tokens (default time.Now); TokenTTL
	// the life of an installation token (default an hour). Set them before serving.
	Now      func() time.Time
	TokenTTL time.Duration
	mu       sync.Mutex
	apps     appState
	flows    map[string]*flow // by device code
	// Polls counts token requests, by device code.
	polls map[string]int
}

type flow struct {
	userCode string
	token    string // set by Approve
	denied   bool
	expired  bool
	slowDown bool
}

// New returns a fake accepting clientID.
func New(clientID string) *Server {
	return &Server{ClientID: clientID, flows: map[string]*flow{}, polls: map[string]int{}}
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, apiPrefix); ok {
		s.serveAPI(w, r, rest)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Accept") != "application/json" {
		// GitHub answers form-encoded without the Accept header; a client that forgets
		// it would not parse the real answer either.
		http.Error(w, "want POST with Accept: application/json", http.StatusNotAcceptable)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.PostForm.Get("client_id") != s.ClientID {
		writeJSON(w, map[string]string{"error": "incorrect_client_credentials", "error_description": "The client_id is not valid."})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/login/device/code":
		dc, uc := random(20), strings.ToUpper(random(2)+"-"+random(2))
		s.flows[dc] = &flow{userCode: uc}
		writeJSON(w, map[string]any{"device_code": dc, "user_code": uc, "verification_uri": "https://github.com/login/device", "expires_in": 900, "interval": 1})
	case "/login/oauth/access_token":
		if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" {
			writeJSON(w, map[string]string{"error": "unsupported_grant_type"})
			return
		}
		dc := r.PostForm.Get("device_code")
		s.polls[dc]++
		f := s.flows[dc]
		switch {
		case f == nil:
			writeJSON(w, map[string]string{"error": "incorrect_device_code"})
		case f.slowDown:
			f.slowDown = false
			writeJSON(w, map[string]any{"error": "slow_down", "interval": 6})
		case f.expired:
			writeJSON(w, map[string]string{"error": "expired_token"})
		case f.denied:
			writeJSON(w, map[string]string{"error": "access_denied"})
		case f.token == "":
			writeJSON(w, map[string]string{"error": "authorization_pending"})
		default:
			delete(s.flows, dc) // a device code is good for one token
			writeJSON(w, map[string]string{"access_token": f.token, "token_type": "bearer", "scope": "repo"})
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) find(userCode string) *flow {
	for _, f := range s.flows {
		if f.userCode == userCode {
			return f
		}
	}
	return nil
}

// Approve plays the user entering userCode and authorizing: the next poll gets token.
// It reports whether the code is known.
func (s *Server) Approve(userCode, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.find(userCode)
	if f != nil {
		f.token = token
	}
	return f != nil
}

// Deny plays the user declining.
func (s *Server) Deny(userCode string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.find(userCode)
	if f != nil {
		f.denied = true
	}
	return f != nil
}

// Expire makes userCode's flow expired; SlowDown makes its next poll a slow_down.
func (s *Server) Expire(userCode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.find(userCode); f != nil {
		f.expired = true
	}
}

// SlowDown makes the next poll of userCode's flow answer slow_down.
func (s *Server) SlowDown(userCode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.find(userCode); f != nil {
		f.slowDown = true
	}
}
