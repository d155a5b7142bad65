// Package vcs keeps what each session's workspace is on — the branch checked out and the
// pull request opened from it on GitHub — so `kubectl agents session get` and the web UI
// show where the agent's work went. It looks when asked (GET of one session) while the
// session runs, and records what it saw in the store, so a stopped session still shows
// its branch and pull request.
//
// The branch comes from the session's OpenCode (its workspace's HEAD), the pull request
// from GitHub's REST API, asked with the session's own token (its owner's or the GitHub
// App's, as in its Secret): what the session may see, nothing more.
package vcs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Branches reads the branch a running session's workspace is on; *conversation.Relay
// is one.
type Branches interface {
	Branch(ctx context.Context, s *store.Session) (string, error)
}

// Tokens reads the git token a session has for its repository's host ("" when none);
// *sessions.Controller is one.
type Tokens interface {
	GitToken(ctx context.Context, s *store.Session) (string, error)
}

// DefaultRecheck is how often a branch without a pull request is asked about again.
const DefaultRecheck = 30 * time.Second

// Watcher looks at sessions' workspaces. It is safe for concurrent use.
type Watcher struct {
	Branches Branches
	Tokens   Tokens
	Store    store.Store
	// GitHubHost is the repository host ("github.com") whose pull requests are looked
	// up, at APIURL; empty: branches only.
	GitHubHost string
	APIURL     string
	HTTP       *http.Client
	// Recheck is how long a branch without a pull request goes unasked (default
	// DefaultRecheck), so a page reloaded in a loop does not spend the session's rate limit.
	Recheck time.Duration
	Now     func() time.Time
}

// Refresh returns what s's workspace is on: looked at now when s runs, else as last
// recorded (nil: never seen). An error reaching OpenCode or GitHub comes with what was
// last recorded.
func (w *Watcher) Refresh(ctx context.Context, s *store.Session) (*store.SessionVCS, error) {
	prev, err := w.Store.GetSessionVCS(ctx, s.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if s.State != apiv1.StateRunning {
		return prev, nil
	}
	branch, err := w.Branches.Branch(ctx, s)
	if err != nil {
		return prev, fmt.Errorf("read the branch of session %s: %w", s.ID, err)
	}
	now := w.now()
	next := &store.SessionVCS{SessionID: s.ID, Branch: branch, CheckedAt: now}
	if prev != nil && prev.Branch == branch {
		next.PullRequestURL, next.CheckedAt = prev.PullRequestURL, prev.CheckedAt
	}
	owner, repo, ok := w.githubRepo(s)
	recheck := w.Recheck
	if recheck <= 0 {
		recheck = DefaultRecheck
	}
	// A pull request, once found, stays the branch's; none is asked about again after
	// Recheck, and a new branch at once.
	if ok && branch != "" && next.PullRequestURL == "" && (prev == nil || prev.Branch != branch || now.Sub(prev.CheckedAt) >= recheck) {
		token, err := w.Tokens.GitToken(ctx, s)
		if err != nil {
			return prev, err
		}
		if token != "" {
			pr, err := github.FindPullRequest(ctx, w.HTTP, w.APIURL, token, owner, repo, branch)
			if err != nil {
				return prev, fmt.Errorf("look up the pull request of session %s: %w", s.ID, err)
			}
			if pr != nil {
				next.PullRequestURL = pr.HTMLURL
			}
			next.CheckedAt = now
		}
	}
	if prev != nil && *prev == *next {
		return prev, nil
	}
	if err := w.Store.PutSessionVCS(ctx, next); err != nil {
		return prev, err
	}
	return next, nil
}

// githubRepo returns the owner and name of s's repository when it is on GitHubHost.
func (w *Watcher) githubRepo(s *store.Session) (owner, repo string, ok bool) {
	if w.GitHubHost == "" {
		return "", "", false
	}
	return github.Repository(s.Repo, w.GitHubHost)
}

func (w *Watcher) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}
