package linear

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Webhook headers, as Linear documents them.
const (
	// SignatureHeader carries the hex HMAC-SHA256 of the raw body, keyed with the
	// webhook's signing secret.
	SignatureHeader = "Linear-Signature"
	// DeliveryHeader is the delivery's id, the same on every retry of it.
	DeliveryHeader = "Linear-Delivery"
	// EventHeader names the entity type of the delivery ("Issue", "Comment").
	EventHeader = "Linear-Event"
)

// MaxWebhookAge is how old a delivery's webhookTimestamp may be, as Linear recommends:
// a captured delivery replayed later is refused even with its valid signature.
const MaxWebhookAge = time.Minute

// ErrBadSignature is a delivery whose signature is missing or does not match the
// body: it was not sent by Linear with the configured signing secret.
var ErrBadSignature = errors.New("the Linear-Signature header does not match the body")

// ErrStale is a signed delivery whose webhookTimestamp is more than MaxWebhookAge away
// from now (a replay, or a clock far off).
var ErrStale = errors.New("the delivery's webhookTimestamp is too old")

// Sign returns the Linear-Signature of body under secret (the fake Linear and tests
// sign with it).
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Webhook is a Linear webhook delivery's payload.
type Webhook struct {
	// Action is "create", "update" or "remove".
	Action string `json:"action"`
	// Type is the entity type: "Issue", "Comment", ...
	Type string `json:"type"`
	// Data is the entity after the change; UpdatedFrom holds the previous values of the
	// fields an update changed.
	Data        json.RawMessage `json:"data"`
	UpdatedFrom json.RawMessage `json:"updatedFrom"`
	URL         string          `json:"url"`
	// WebhookTimestamp is when Linear sent the delivery, in Unix milliseconds.
	WebhookTimestamp int64  `json:"webhookTimestamp"`
	OrganizationID   string `json:"organizationId"`
	// Actor is who made the change: the person a session started by it belongs to.
	// Nil when Linear names no one.
	Actor *Actor `json:"actor"`
}

// Actor is the one who made a delivery's change. Type is "user" for a person (an
// automation, an integration or an OAuth application has another type and owns
// nothing on the agent); Email may be absent, and is then read with Client.User.
type Actor struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Name  string `json:"name"`
	Email string `json:"email"`
	URL   string `json:"url"`
}

// Person reports whether the actor is a Linear user (an absent type is taken as one:
// older deliveries named users only).
func (a *Actor) Person() bool {
	return a != nil && a.ID != "" && (a.Type == "" || strings.EqualFold(a.Type, "user"))
}

// Verify checks that body was signed with secret (signature is the Linear-Signature
// header) and sent less than MaxWebhookAge before now, then parses it. The signature is
// checked first, on the raw bytes, so nothing of an unsigned body is read.
func Verify(secret, body []byte, signature string, now time.Time) (*Webhook, error) {
	want, err := hex.DecodeString(strings.TrimSpace(signature))
	if err != nil || len(secret) == 0 {
		return nil, ErrBadSignature
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !hmac.Equal(want, m.Sum(nil)) {
		return nil, ErrBadSignature
	}
	var w Webhook
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("the delivery is not Linear's webhook JSON: %w", err)
	}
	sent := time.UnixMilli(w.WebhookTimestamp)
	if age := now.Sub(sent); w.WebhookTimestamp == 0 || age > MaxWebhookAge || age < -MaxWebhookAge {
		return nil, ErrStale
	}
	return &w, nil
}

// IssueData is the part of an Issue delivery's data (and updatedFrom) the agent reads.
type IssueData struct {
	ID         string   `json:"id"`
	Identifier string   `json:"identifier"`
	Title      string   `json:"title"`
	AssigneeID *string  `json:"assigneeId"`
	LabelIDs   []string `json:"labelIds"`
	// Labels are the issue's labels with their names (Linear sends them with the ids).
	Labels []Label `json:"labels"`
	TeamID string  `json:"teamId"`
}

// CommentData is the part of a Comment delivery's data the agent reads.
type CommentData struct {
	ID      string `json:"id"`
	Body    string `json:"body"`
	IssueID string `json:"issueId"`
	UserID  string `json:"userId"`
}

// Kind is what a delivery asks of the agent.
type Kind int

const (
	// Ignore: nothing for the agent (another assignee, another label, an edit, ...).
	Ignore Kind = iota
	// Start: the issue was assigned to the agent's user, or given the agent's label: a
	// session starts on it (once per issue).
	Start
	// Prompt: a comment on the issue mentions the agent: its body goes to the issue's
	// session as a prompt.
	Prompt
)

// Issue returns an Issue delivery's data, and the previous values of the fields an
// update changed (nil fields: unchanged).
func (w *Webhook) Issue() (cur IssueData, prev map[string]json.RawMessage, err error) {
	if err := json.Unmarshal(w.Data, &cur); err != nil {
		return cur, nil, fmt.Errorf("the Issue delivery's data: %w", err)
	}
	if len(w.UpdatedFrom) > 0 && string(w.UpdatedFrom) != "null" {
		if err := json.Unmarshal(w.UpdatedFrom, &prev); err != nil {
			return cur, nil, fmt.Errorf("the Issue delivery's updatedFrom: %w", err)
		}
	}
	return cur, prev, nil
}

// IssueStarts reports whether an Issue delivery starts a session: the issue was
// created assigned to viewerID or carrying the label named label, or an update made it
// so (assigned to viewerID from someone else or no one; the label added). label ""
// means no label starts sessions. An update that changes something else of an issue
// already assigned to the agent does not start another.
func (w *Webhook) IssueStarts(viewerID, label string) (bool, error) {
	if w.Type != "Issue" || (w.Action != "create" && w.Action != "update") {
		return false, nil
	}
	cur, prev, err := w.Issue()
	if err != nil {
		return false, err
	}
	// Label names are per team; the ids in labelIds (now and before) are what changed.
	labelID := ""
	for _, l := range cur.Labels {
		if label != "" && strings.EqualFold(l.Name, label) {
			labelID = l.ID
		}
	}
	assigned := viewerID != "" && cur.AssigneeID != nil && *cur.AssigneeID == viewerID
	labelled := labelID != "" && slices.Contains(cur.LabelIDs, labelID)
	if w.Action == "create" {
		return assigned || labelled, nil
	}
	if raw, changed := prev["assigneeId"]; changed && assigned {
		var before *string
		_ = json.Unmarshal(raw, &before)
		if before == nil || *before != viewerID {
			return true, nil
		}
	}
	if raw, changed := prev["labelIds"]; changed && labelled {
		var before []string
		_ = json.Unmarshal(raw, &before)
		if !slices.Contains(before, labelID) {
			return true, nil
		}
	}
	return false, nil
}

// Comment returns a Comment delivery's data.
func (w *Webhook) Comment() (CommentData, error) {
	var c CommentData
	if err := json.Unmarshal(w.Data, &c); err != nil {
		return c, fmt.Errorf("the Comment delivery's data: %w", err)
	}
	return c, nil
}

// Mentions reports whether a comment body mentions the agent's Linear user: an
// @-mention of its display name or name (Linear writes mentions as "@name" in the
// Markdown, or as a link to the user's profile, which ends in the display name).
func Mentions(body string, viewer *User) bool {
	for _, n := range []string{viewer.DisplayName, viewer.Name} {
		if n == "" {
			continue
		}
		re := regexp.MustCompile(`(?i)(^|[^\w@])@` + regexp.QuoteMeta(n) + `($|[^\w.-]|\.(\s|$))|/profiles/` + regexp.QuoteMeta(n) + `\b`)
		if re.MatchString(body) {
			return true
		}
	}
	return false
}
