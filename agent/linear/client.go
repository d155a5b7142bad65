// Package linear is the agent's side of the Linear integration: a client for the few
// GraphQL calls the agent makes (who it is, who a user is, an issue with its team,
// labels and people, a comment on an issue), the verification of Linear's signed webhooks, and the
// decision of what a delivery asks the agent to do. It holds no state: deliveries,
// links to sessions and team settings live in the agent's store.
package linear

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultAPIURL is Linear's GraphQL endpoint.
const DefaultAPIURL = "https://api.linear.app/graphql"

// ErrUnauthorized is returned when Linear refuses the API key (a revoked or mistyped
// key): the fix is the key, not a retry.
var ErrUnauthorized = errors.New("Linear refused the API key (check linear.secret's apiKey)") //nolint:staticcheck // Linear is a name, and errors wrapping it start "linear: "

// Client calls Linear's GraphQL API with a personal or application API key. It is safe
// for concurrent use.
type Client struct {
	url  string
	key  string
	http *http.Client
}

// New returns a client of the GraphQL API at apiURL (DefaultAPIURL when empty) using
// key; hc nil means a client with a 15 s timeout.
func New(apiURL, key string, hc *http.Client) *Client {
	if apiURL == "" {
		apiURL = DefaultAPIURL
	}
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	return &Client{url: apiURL, key: key, http: hc}
}

// User is a Linear user as the agent needs it.
type User struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DisplayName string `json:"displayName"`
	Email       string `json:"email"`
}

// Team is the team an issue belongs to; Key is the prefix of its identifiers ("ENG").
type Team struct {
	ID   string `json:"id"`
	Key  string `json:"key"`
	Name string `json:"name"`
}

// Label is an issue label.
type Label struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Issue is a Linear issue with what starting a session from it takes.
type Issue struct {
	ID          string  `json:"id"`
	Identifier  string  `json:"identifier"`
	Title       string  `json:"title"`
	Description string  `json:"description"`
	URL         string  `json:"url"`
	Team        Team    `json:"team"`
	Labels      []Label `json:"-"`
	Assignee    *User   `json:"assignee"`
	Creator     *User   `json:"creator"`
}

// HasLabel reports whether the issue carries a label named name (ignoring case, as
// Linear's label names are unique per team regardless of case).
func (i *Issue) HasLabel(name string) bool {
	for _, l := range i.Labels {
		if strings.EqualFold(l.Name, name) {
			return true
		}
	}
	return false
}

// graphQLError is one entry of a GraphQL answer's errors.
type graphQLError struct {
	Message    string `json:"message"`
	Extensions struct {
		Code string `json:"code"`
	} `json:"extensions"`
}

// do posts query with vars and decodes the answer's data into out. Errors name Linear
// and what was asked (what), never the key.
func (c *Client) do(ctx context.Context, what, query string, vars map[string]any, out any) error {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("linear: %s: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/json")
	// Linear takes an API key as the Authorization header itself (OAuth tokens get a
	// Bearer prefix, which the key then carries).
	req.Header.Set("Authorization", c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		// The key travels in a header, never in the URL, so the error cannot quote it.
		return fmt.Errorf("linear: %s: reach %s: %w", what, c.url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("linear: %s: read the answer: %w", what, err)
	}
	var ans struct {
		Data   json.RawMessage `json:"data"`
		Errors []graphQLError  `json:"errors"`
	}
	jsonErr := json.Unmarshal(b, &ans)
	authFailed := resp.StatusCode == http.StatusUnauthorized
	for _, e := range ans.Errors {
		if e.Extensions.Code == "AUTHENTICATION_ERROR" {
			authFailed = true
		}
	}
	if authFailed {
		return fmt.Errorf("linear: %s: %w", what, ErrUnauthorized)
	}
	if len(ans.Errors) > 0 {
		msgs := make([]string, 0, len(ans.Errors))
		for _, e := range ans.Errors {
			msgs = append(msgs, e.Message)
		}
		return fmt.Errorf("linear: %s: Linear answered %s", what, strings.Join(msgs, "; "))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("linear: %s: Linear answered %s", what, resp.Status)
	}
	if jsonErr != nil || len(ans.Data) == 0 {
		return fmt.Errorf("linear: %s: the answer is not a GraphQL result", what)
	}
	if err := json.Unmarshal(ans.Data, out); err != nil {
		return fmt.Errorf("linear: %s: unexpected answer: %w", what, err)
	}
	return nil
}

// Query texts, named so the fake Linear (test/fakelinear) recognises them.
const (
	viewerQuery = `query Viewer { viewer { id name displayName email } }`
	userQuery   = `query User($id: String!) { user(id: $id) { id name displayName email } }`
	issueQuery  = `query Issue($id: String!) { issue(id: $id) { id identifier title description url ` +
		`team { id key name } labels { nodes { id name } } assignee { id name displayName email } creator { id name displayName email } } }`
	commentMutation = `mutation CommentCreate($issueId: String!, $body: String!) { commentCreate(input: {issueId: $issueId, body: $body}) { success comment { id } } }`
)

// Viewer returns the user the API key belongs to: the agent's own Linear user, to
// which issues are assigned to start a session.
func (c *Client) Viewer(ctx context.Context) (*User, error) {
	var out struct {
		Viewer *User `json:"viewer"`
	}
	if err := c.do(ctx, "read the API key's user", viewerQuery, nil, &out); err != nil {
		return nil, err
	}
	if out.Viewer == nil || out.Viewer.ID == "" {
		return nil, errors.New("linear: read the API key's user: Linear answered no user")
	}
	return out.Viewer, nil
}

// User returns the user id, with the email the agent maps people by (a webhook's actor
// may come without it).
func (c *Client) User(ctx context.Context, id string) (*User, error) {
	var out struct {
		User *User `json:"user"`
	}
	if err := c.do(ctx, "read user "+id, userQuery, map[string]any{"id": id}, &out); err != nil {
		return nil, err
	}
	if out.User == nil || out.User.ID == "" {
		return nil, fmt.Errorf("linear: read user %s: no such user", id)
	}
	return out.User, nil
}

// Issue returns the issue id (its UUID or identifier such as "ENG-12").
func (c *Client) Issue(ctx context.Context, id string) (*Issue, error) {
	var out struct {
		Issue *struct {
			Issue
			Labels struct {
				Nodes []Label `json:"nodes"`
			} `json:"labels"`
		} `json:"issue"`
	}
	if err := c.do(ctx, "read issue "+id, issueQuery, map[string]any{"id": id}, &out); err != nil {
		return nil, err
	}
	if out.Issue == nil {
		return nil, fmt.Errorf("linear: read issue %s: no such issue", id)
	}
	iss := out.Issue.Issue
	iss.Labels = out.Issue.Labels.Nodes
	return &iss, nil
}

// CommentCreate comments body (Markdown) on issue issueID and returns the comment's id.
func (c *Client) CommentCreate(ctx context.Context, issueID, body string) (string, error) {
	var out struct {
		CommentCreate struct {
			Success bool `json:"success"`
			Comment struct {
				ID string `json:"id"`
			} `json:"comment"`
		} `json:"commentCreate"`
	}
	what := "comment on issue " + issueID
	if err := c.do(ctx, what, commentMutation, map[string]any{"issueId": issueID, "body": body}, &out); err != nil {
		return "", err
	}
	if !out.CommentCreate.Success {
		return "", fmt.Errorf("linear: %s: Linear answered success=false", what)
	}
	return out.CommentCreate.Comment.ID, nil
}
