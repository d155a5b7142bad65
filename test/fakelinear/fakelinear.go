// Package fakelinear is a local Linear for tests: the GraphQL operations the agent
// uses (viewer, user, issue, commentCreate), answered only with the configured API key
// as Linear answers them, and webhook deliveries signed exactly as Linear signs them,
// carrying the actor who made the change as Linear's do.
package fakelinear

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// User is a Linear user of the fake.
type User struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DisplayName string `json:"displayName"`
	Email       string `json:"email"`
}

// Label is an issue label.
type Label struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Issue is an issue of the fake.
type Issue struct {
	ID          string
	Identifier  string
	Title       string
	Description string
	TeamID      string
	TeamKey     string
	Labels      []Label
	Assignee    *User
	Creator     *User
}

// Comment is a comment the agent created.
type Comment struct {
	ID      string
	IssueID string
	Body    string
}

// Server is the fake Linear. Its zero value is not usable: call New.
type Server struct {
	*httptest.Server
	key    string
	viewer User

	mu       sync.Mutex
	issues   map[string]*Issue
	users    map[string]User
	comments []Comment
	calls    map[string]int
	// failing counts the next requests of an operation answered with an error.
	failing map[string]int
}

// New starts a fake Linear accepting apiKey, whose viewer (the API key's user) is viewer.
func New(apiKey string, viewer User) *Server {
	s := &Server{key: apiKey, viewer: viewer, issues: map[string]*Issue{}, users: map[string]User{viewer.ID: viewer},
		calls: map[string]int{}, failing: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// GraphQLURL is the URL of the fake's GraphQL endpoint (the agent's linear.apiURL).
func (s *Server) GraphQLURL() string { return s.URL + "/graphql" }

// AddIssue stores iss (found by its ID or Identifier); its assignee and creator
// become users of the fake, as AddUser does.
func (s *Server) AddIssue(iss Issue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := iss
	s.issues[iss.ID] = &c
	if iss.Identifier != "" {
		s.issues[iss.Identifier] = &c
	}
	for _, u := range []*User{iss.Assignee, iss.Creator} {
		if u != nil && u.ID != "" {
			s.users[u.ID] = *u
		}
	}
}

// AddUser makes u a user of the organization: the user query answers it, with its
// email, as Linear answers an API key of the same workspace.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.ID] = u
}

// FailNext makes the next n requests of the GraphQL operation op (e.g.
// "CommentCreate") fail as Linear does when it has trouble: an INTERNAL_ERROR.
func (s *Server) FailNext(op string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing[op] = n
}

// Comments returns the comments created on issueID so far.
func (s *Server) Comments(issueID string) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.comments {
		if c.IssueID == issueID {
			out = append(out, c)
		}
	}
	return out
}

// Calls returns how many requests of the GraphQL operation op (e.g. "Viewer") were
// answered, with or without an error.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

var opName = regexp.MustCompile(`^\s*(query|mutation)\s+(\w+)`)

type gqlError struct {
	Message    string            `json:"message"`
	Extensions map[string]string `json:"extensions,omitempty"`
}

func answer(w http.ResponseWriter, status int, data any, errs ...gqlError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{}
	if data != nil {
		body["data"] = data
	}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/graphql" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Query     string         `json:"query"`
		Variables map[string]any `json:"variables"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		answer(w, http.StatusBadRequest, nil, gqlError{Message: "body is not JSON"})
		return
	}
	m := opName.FindStringSubmatch(req.Query)
	if m == nil {
		answer(w, http.StatusBadRequest, nil, gqlError{Message: "the fake answers named operations only"})
		return
	}
	op := m[2]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	// Linear answers a bad key with 400 and an AUTHENTICATION_ERROR (not 401).
	if r.Header.Get("Authorization") != s.key {
		answer(w, http.StatusBadRequest, nil, gqlError{Message: "Authentication required, not authenticated", Extensions: map[string]string{"code": "AUTHENTICATION_ERROR"}})
		return
	}
	if s.failing[op] > 0 {
		s.failing[op]--
		answer(w, http.StatusOK, nil, gqlError{Message: "Internal server error (the fake failing on purpose)", Extensions: map[string]string{"code": "INTERNAL_ERROR"}})
		return
	}
	str := func(k string) string { v, _ := req.Variables[k].(string); return v }
	switch op {
	case "Viewer":
		answer(w, http.StatusOK, map[string]any{"viewer": s.viewer})
	case "User":
		u, ok := s.users[str("id")]
		if !ok {
			answer(w, http.StatusOK, map[string]any{"user": nil}, gqlError{Message: "Entity not found: User", Extensions: map[string]string{"code": "INVALID_INPUT"}})
			return
		}
		answer(w, http.StatusOK, map[string]any{"user": u})
	case "Issue":
		iss, ok := s.issues[str("id")]
		if !ok {
			answer(w, http.StatusOK, map[string]any{"issue": nil}, gqlError{Message: "Entity not found: Issue", Extensions: map[string]string{"code": "INVALID_INPUT"}})
			return
		}
		answer(w, http.StatusOK, map[string]any{"issue": map[string]any{
			"id": iss.ID, "identifier": iss.Identifier, "title": iss.Title, "description": iss.Description,
			"url":      "https://linear.app/fake/issue/" + iss.Identifier,
			"team":     map[string]string{"id": iss.TeamID, "key": iss.TeamKey, "name": iss.TeamKey},
			"labels":   map[string]any{"nodes": nonNil(iss.Labels)},
			"assignee": iss.Assignee, "creator": iss.Creator,
		}})
	case "CommentCreate":
		issueID, body := str("issueId"), str("body")
		if _, ok := s.issues[issueID]; !ok || body == "" {
			answer(w, http.StatusOK, nil, gqlError{Message: "Argument Validation Error", Extensions: map[string]string{"code": "INVALID_INPUT"}})
			return
		}
		c := Comment{ID: newID(), IssueID: issueID, Body: body}
		s.comments = append(s.comments, c)
		answer(w, http.StatusOK, map[string]any{"commentCreate": map[string]any{"success": true, "comment": map[string]string{"id": c.ID}}})
	default:
		answer(w, http.StatusBadRequest, nil, gqlError{Message: "the fake does not implement " + op})
	}
}

func nonNil(l []Label) []Label {
	if l == nil {
		return []Label{}
	}
	return l
}

// IssuePayload is the webhook payload of an Issue event: action "create" or "update";
// updatedFrom (may be nil) holds the previous values of the changed fields, as Linear
// sends them (e.g. {"assigneeId": null}); actor is the user who made the change (nil:
// no person did, as for an automation), with its email only when set.
func IssuePayload(action string, iss Issue, updatedFrom map[string]any, actor *User, sent time.Time) map[string]any {
	var assignee any
	if iss.Assignee != nil {
		assignee = iss.Assignee.ID
	}
	ids := []string{}
	for _, l := range iss.Labels {
		ids = append(ids, l.ID)
	}
	p := map[string]any{
		"action": action, "type": "Issue", "createdAt": sent.UTC().Format(time.RFC3339Nano),
		"url":              "https://linear.app/fake/issue/" + iss.Identifier,
		"webhookTimestamp": sent.UnixMilli(), "webhookId": "fake-webhook", "organizationId": "fake-org",
		"data": map[string]any{
			"id": iss.ID, "identifier": iss.Identifier, "title": iss.Title, "description": iss.Description,
			"teamId": iss.TeamID, "assigneeId": assignee, "labelIds": ids, "labels": nonNil(iss.Labels),
		},
	}
	if updatedFrom != nil {
		p["updatedFrom"] = updatedFrom
	}
	if actor != nil {
		p["actor"] = actorOf(*actor)
	}
	return p
}

// actorOf is a user as a delivery's actor: Linear's shape, the email only when known.
func actorOf(u User) map[string]any {
	a := map[string]any{"id": u.ID, "type": "user", "name": u.Name, "url": "https://linear.app/fake/profiles/" + u.DisplayName}
	if u.Email != "" {
		a["email"] = u.Email
	}
	return a
}

// CommentPayload is the webhook payload of a Comment created by user userID on
// issueID; its actor is that user, by id only (the agent looks the email up).
func CommentPayload(issueID, userID, body string, sent time.Time) map[string]any {
	return map[string]any{
		"action": "create", "type": "Comment", "createdAt": sent.UTC().Format(time.RFC3339Nano),
		"webhookTimestamp": sent.UnixMilli(), "webhookId": "fake-webhook", "organizationId": "fake-org",
		"actor": map[string]any{"id": userID, "type": "user"},
		"data":  map[string]any{"id": newID(), "body": body, "issueId": issueID, "userId": userID},
	}
}

// Delivery is one signed webhook delivery: the raw body and its headers.
type Delivery struct {
	Body   []byte
	Header http.Header
}

// Sign makes a delivery of payload with id deliveryID, signed with secret as Linear
// does: Linear-Signature is the hex HMAC-SHA256 of the raw body.
func Sign(secret string, deliveryID string, payload map[string]any) Delivery {
	b, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Linear-Delivery", deliveryID)
	h.Set("Linear-Event", fmt.Sprint(payload["type"]))
	h.Set("User-Agent", "Linear-Webhook")
	h.Set("Linear-Signature", hmacHex(secret, b))
	return Delivery{Body: b, Header: h}
}

// Send posts d to url with hc and returns the response status.
func (d Delivery) Send(ctx context.Context, hc *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.Body))
	if err != nil {
		return 0, err
	}
	for k, v := range d.Header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Tampered returns d with its body changed after signing (a forged delivery).
func (d Delivery) Tampered() Delivery {
	b := bytes.Clone(d.Body)
	b = append(b[:len(b)-1], []byte(`,"x":1}`)...)
	return Delivery{Body: b, Header: d.Header.Clone()}
}

func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

var ids atomic.Int64

// newID returns an id unique in the process, shaped like Linear's UUIDs.
func newID() string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", ids.Add(1)) }
