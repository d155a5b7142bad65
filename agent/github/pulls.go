package github

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// PullRequest is the part of a GitHub pull request the agent shows.
type PullRequest struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	State   string `json:"state"`
}

// FindPullRequest returns the newest pull request (open or closed) whose head is branch
// of owner/repo, or nil when there is none, asking GitHub's REST API at apiURL with
// token (the session's own: its owner's or the App's installation token). The head
// filter is GitHub's "owner:branch" form: the agent in a session pushes its branch to
// the repository it cloned and opens the pull request from there.
func FindPullRequest(ctx context.Context, hc *http.Client, apiURL, token, owner, repo, branch string) (*PullRequest, error) {
	q := url.Values{"head": {owner + ":" + branch}, "state": {"all"}, "per_page": {"1"}}
	u := strings.TrimRight(apiURL, "/") + "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/pulls?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the GitHub API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read GitHub's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GitHub answered %s to listing the pull requests of %s/%s", resp.Status, owner, repo)
	}
	var prs []PullRequest
	if err := json.Unmarshal(b, &prs); err != nil {
		return nil, fmt.Errorf("GitHub's pull request list is not JSON: %w", err)
	}
	if len(prs) == 0 {
		return nil, nil
	}
	return &prs[0], nil
}
