package fakegithub

import (
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// apiPrefix is where the REST API lives, as on GitHub Enterprise Server (github.com's is
// the host api.github.com): one server then plays both the web host and the API.
const apiPrefix = "/api/v3"

// The App side of the fake. The endpoints, as GitHub documents them:
//
//	GET  /repos/{owner}/{repo}/installation        (JWT)  the installation covering a repository
//	POST /app/installations/{id}/access_tokens     (JWT)  an installation token, optionally for some repositories
//	GET  /repos/{owner}/{repo}/pulls?head=&state=  (token) pull requests, newest first
//
// A JWT must be RS256, signed by the private key of the App its iss names (AddApp), with
// iat in the past, exp in the future and at most 10 minutes apart; anything else is 401.
// Installation tokens live TokenTTL (default an hour, GitHub's) by the server's clock.
type appState struct {
	keys          map[string]*rsa.PublicKey // by App id
	installations map[int64]*installation
	tokens        []IssuedToken
	nextID        int64
	userTokens    map[string]bool
	pulls         []pull
}

// pull is a pull request opened on the fake.
type pull struct {
	owner, repo, head string // head as "owner:branch"
	number            int
	state             string
}

type installation struct {
	app   string
	owner string
	repos []string // nil: every repository of owner
}

// IssuedToken is an installation token the fake handed out.
type IssuedToken struct {
	Token        string
	Installation int64
	Repositories []string // the repositories it is limited to; nil: all the installation's
	ExpiresAt    time.Time
}

// AddApp registers App id with the public half of its private key.
func (s *Server) AddApp(id int64, key *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps.keys == nil {
		s.apps.keys = map[string]*rsa.PublicKey{}
	}
	s.apps.keys[strconv.FormatInt(id, 10)] = key
}

// Install installs App appID on owner, for repos (every repository of owner when none),
// and returns the installation's id.
func (s *Server) Install(appID int64, owner string, repos ...string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps.installations == nil {
		s.apps.installations = map[int64]*installation{}
	}
	s.apps.nextID++
	id := 1000 + s.apps.nextID
	s.apps.installations[id] = &installation{app: strconv.FormatInt(appID, 10), owner: owner, repos: repos}
	return id
}

// Issued lists the installation tokens handed out so far, oldest first.
func (s *Server) Issued() []IssuedToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.apps.tokens)
}

// TokenGrants reports whether token is an unexpired installation token that may reach
// owner/repo: what a git or REST request with it would need.
func (s *Server) TokenGrants(token, owner, repo string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grantsLocked(token, owner, repo)
}

func (s *Server) grantsLocked(token, owner, repo string) bool {
	now := s.now()
	for _, t := range s.apps.tokens {
		if t.Token != token || !now.Before(t.ExpiresAt) {
			continue
		}
		inst := s.apps.installations[t.Installation]
		if inst == nil || !strings.EqualFold(inst.owner, owner) || !inst.covers(repo) {
			return false
		}
		return t.Repositories == nil || slices.Contains(t.Repositories, repo)
	}
	return false
}

func (i *installation) covers(repo string) bool {
	return i.repos == nil || slices.Contains(i.repos, repo)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) tokenTTL() time.Duration {
	if s.TokenTTL > 0 {
		return s.TokenTTL
	}
	return time.Hour
}

// AddUserToken makes token a user's token (a linked account's) that may read every
// repository's pull requests.
func (s *Server) AddUserToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps.userTokens == nil {
		s.apps.userTokens = map[string]bool{}
	}
	s.apps.userTokens[token] = true
}

// OpenPullRequest plays someone (the agent in a session, with gh) opening a pull request
// on owner/repo from branch of the same repository; it returns the pull request's web URL.
func (s *Server) OpenPullRequest(owner, repo, branch string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.apps.pulls) + 1
	s.apps.pulls = append(s.apps.pulls, pull{owner: owner, repo: repo, head: owner + ":" + branch, number: n, state: "open"})
	return pullURL(owner, repo, n)
}

func pullURL(owner, repo string, n int) string {
	return fmt.Sprintf("https://github.com/%s/%s/pull/%d", owner, repo, n)
}

// apiError answers in the REST API's error shape.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

// appJWT checks the request's App JWT and returns the App's id.
func (s *Server) appJWT(r *http.Request) (string, error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", fmt.Errorf("a JWT (Authorization: Bearer) is required")
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		iss, _ := t.Claims.GetIssuer()
		key := s.apps.keys[iss]
		if key == nil {
			return nil, fmt.Errorf("no App with id %q", iss)
		}
		return key, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuedAt(), jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now))
	if err != nil {
		return "", err
	}
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute {
		return "", fmt.Errorf("'exp' is too far in the future")
	}
	return claims.Issuer, nil
}

// serveAPI answers the REST API paths (after /api/v3).
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 4 && parts[0] == "repos" && parts[3] == "installation":
		app, err := s.appJWT(r)
		if err != nil {
			apiError(w, http.StatusUnauthorized, "A JSON web token could not be decoded: "+err.Error())
			return
		}
		for id, inst := range s.apps.installations {
			if inst.app == app && strings.EqualFold(inst.owner, parts[1]) && inst.covers(parts[2]) {
				writeJSON(w, map[string]any{"id": id, "app_id": app, "account": map[string]string{"login": inst.owner}})
				return
			}
		}
		apiError(w, http.StatusNotFound, "Not Found")
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "app" && parts[1] == "installations" && parts[3] == "access_tokens":
		app, err := s.appJWT(r)
		if err != nil {
			apiError(w, http.StatusUnauthorized, "A JSON web token could not be decoded: "+err.Error())
			return
		}
		id, _ := strconv.ParseInt(parts[2], 10, 64)
		inst := s.apps.installations[id]
		if inst == nil || inst.app != app {
			apiError(w, http.StatusNotFound, "Not Found")
			return
		}
		var body struct {
			Repositories []string `json:"repositories"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				apiError(w, http.StatusBadRequest, "Problems parsing JSON")
				return
			}
		}
		for _, repo := range body.Repositories {
			if !inst.covers(repo) {
				apiError(w, http.StatusUnprocessableEntity, "There is at least one repository that does not exist or is not accessible to the parent installation.")
				return
			}
		}
		t := IssuedToken{Token: "ghs_" + random(18), Installation: id, Repositories: body.Repositories,
			ExpiresAt: s.now().Add(s.tokenTTL()).UTC().Truncate(time.Second)}
		s.apps.tokens = append(s.apps.tokens, t)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"token": t.Token, "expires_at": t.ExpiresAt.Format(time.RFC3339),
			"permissions": map[string]string{"contents": "write", "pull_requests": "write"}, "repository_selection": "selected"})
	case r.Method == http.MethodGet && len(parts) == 4 && parts[0] == "repos" && parts[3] == "pulls":
		// GET /repos/{owner}/{repo}/pulls?head=owner:branch&state=all: newest first. A
		// token that may not read the repository gets 404, as on GitHub.
		owner, repo := parts[1], parts[2]
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if tok2, ok := strings.CutPrefix(r.Header.Get("Authorization"), "token "); ok {
			tok = tok2
		}
		if !s.apps.userTokens[tok] && !s.grantsLocked(tok, owner, repo) {
			apiError(w, http.StatusNotFound, "Not Found")
			return
		}
		q := r.URL.Query()
		out := []map[string]any{}
		for i := len(s.apps.pulls) - 1; i >= 0; i-- {
			p := s.apps.pulls[i]
			if !strings.EqualFold(p.owner, owner) || p.repo != repo || (q.Get("head") != "" && q.Get("head") != p.head) ||
				(q.Get("state") != "all" && p.state != "open") {
				continue
			}
			out = append(out, map[string]any{"number": p.number, "state": p.state, "html_url": pullURL(p.owner, p.repo, p.number)})
		}
		writeJSON(w, out)
	default:
		apiError(w, http.StatusNotFound, "Not Found")
	}
}
