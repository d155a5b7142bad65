// Package githttp serves bare git repositories over smart HTTP with git's own backend
// (git http-backend as CGI), the way a hosted git server does. Repositories are public
// and read-only unless made private: a private repository answers 401 without its user
// name and token (HTTP basic authentication, as GitHub and friends take an access
// token) and accepts pushes from whoever presents them. The end-to-end environment
// (test/e2eenv), the gitserver command and package tests use it.
package githttp

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Handler serves the bare repositories (NAME.git) under a root directory.
type Handler struct {
	root    string
	backend string
	mu      sync.Mutex
	private map[string]login // by repository name, "NAME.git"
}

type login struct {
	user, token string
	allow       func(user, token string) bool // instead of user and token, when set
}

// New serves root with the git found in PATH.
func New(root string) (*Handler, error) {
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("git --exec-path: %w (serving repositories needs git installed)", err)
	}
	return &Handler{root: root, backend: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"), private: map[string]login{}}, nil
}

// SetPrivate makes repository name (as in the URL, "project.git") private: reads and
// pushes need user and token.
func (h *Handler) SetPrivate(name, user, token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.private[name] = login{user: user, token: token}
}

// SetPrivateFunc makes repository name private with allow deciding who may read and
// push: tokens that change, such as a GitHub App's installation tokens.
func (h *Handler) SetPrivateFunc(name string, allow func(user, token string) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.private[name] = login{allow: allow}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	h.mu.Lock()
	want, private := h.private[name]
	h.mu.Unlock()
	env := []string{
		"GIT_PROJECT_ROOT=" + h.root, "GIT_HTTP_EXPORT_ALL=1",
		// Command-line scope counts as protected configuration, where safe.directory is
		// read: the repositories may belong to another user than the server.
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=safe.directory", "GIT_CONFIG_VALUE_0=*",
	}
	if private {
		user, token, ok := r.BasicAuth()
		if want.allow != nil {
			ok = ok && want.allow(user, token)
		} else {
			ok = ok && subtle.ConstantTimeCompare([]byte(user), []byte(want.user)) == 1 && subtle.ConstantTimeCompare([]byte(token), []byte(want.token)) == 1
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		// git http-backend accepts pushes from an authenticated user only.
		env = append(env, "REMOTE_USER="+user)
	}
	(&cgi.Handler{Path: h.backend, Env: env}).ServeHTTP(w, r)
}
