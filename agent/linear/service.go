package linear

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Source is the integration's name in the store's events and links.
const Source = "linear"

// TeamRepoSetting is the store setting holding the repository sessions of Linear team
// key start on.
func TeamRepoSetting(key string) string { return "linear.team." + strings.ToUpper(key) + ".repo" }

// Sessions creates and deletes sessions (*sessions.Controller).
type Sessions interface {
	Create(ctx context.Context, s *store.Session, maxActive int) error
	Delete(ctx context.Context, id string) error
}

// Conversation reaches a running session's conversation (*conversation.Relay).
type Conversation interface {
	Send(ctx context.Context, s *store.Session, text string) error
	// WaitReply returns the conversation's last assistant message once it is idle with
	// one whose ID is not since.
	WaitReply(ctx context.Context, s *store.Session, since string) (*apiv1.Message, error)
}

// Options configure a Service.
type Options struct {
	Client        *Client
	Store         store.Store
	Sessions      Sessions
	Conversation  Conversation
	WebhookSecret string
	// Label names the label that starts a session too ("": only assignment does).
	Label string
	// ExternalURL is the agent's public URL, for the web UI link in comments.
	ExternalURL       string
	MaxActiveSessions int
	Log               hclog.Logger
	// Now is the clock the webhook timestamp is checked against.
	Now func() time.Time
	// Workers process deliveries (default 4); Queue bounds those waiting (default 256):
	// a delivery finding it full is answered 503, and Linear sends it again.
	Workers, Queue int
}

// Service is the Linear integration: the webhook handler, the workers acting on the
// deliveries, and the follower commenting a session's replies on its issue.
type Service struct {
	o     Options
	log   hclog.Logger
	queue chan delivery

	mu     sync.Mutex
	viewer *User
}

type delivery struct {
	id string
	w  *Webhook
}

// NewService returns the integration; Run starts its workers.
func NewService(o Options) *Service {
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	return &Service{o: o, log: o.Log, queue: make(chan delivery, o.Queue)}
}

// maxBody bounds a delivery; Linear's are a few kilobytes.
const maxBody = 1 << 20

// ServeHTTP is POST /integrations/linear/webhook. It answers at once: 401 for a
// delivery not signed with the webhook secret (or too old), with nothing stored; 200
// for a delivery queued (or of an event the agent does not act on); the work happens
// in the workers.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		http.Error(w, "unreadable or oversized delivery", http.StatusBadRequest)
		return
	}
	hook, err := Verify([]byte(s.o.WebhookSecret), body, r.Header.Get(SignatureHeader), s.o.Now())
	switch {
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrStale):
		s.log.Warn("linear webhook refused", "error", err, "remote", r.RemoteAddr)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := r.Header.Get(DeliveryHeader)
	if id == "" {
		http.Error(w, "no "+DeliveryHeader+" header", http.StatusBadRequest)
		return
	}
	if hook.Type != "Issue" && hook.Type != "Comment" {
		w.WriteHeader(http.StatusOK)
		return
	}
	select {
	case s.queue <- delivery{id: id, w: hook}:
		w.WriteHeader(http.StatusOK)
	default:
		// Nothing recorded: Linear retries the delivery, and it is processed then.
		s.log.Error("linear webhook queue full; delivery refused for Linear to retry", "delivery", id)
		http.Error(w, "busy, retry later", http.StatusServiceUnavailable)
	}
}

// Run processes deliveries until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range s.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case d := <-s.queue:
					if err := s.handle(ctx, d); err != nil {
						s.log.Error("linear delivery failed", "delivery", d.id, "type", d.w.Type, "error", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// Viewer returns the agent's Linear user (cached once read).
func (s *Service) Viewer(ctx context.Context) (*User, error) {
	s.mu.Lock()
	v := s.viewer
	s.mu.Unlock()
	if v != nil {
		return v, nil
	}
	v, err := s.o.Client.Viewer(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.viewer = v
	s.mu.Unlock()
	return v, nil
}

// handle acts on one delivery, once: a duplicate (the same Linear-Delivery) is skipped.
func (s *Service) handle(ctx context.Context, d delivery) error {
	first, err := s.o.Store.RecordEvent(ctx, Source, d.id)
	if err != nil {
		return fmt.Errorf("record the delivery: %w", err)
	}
	if !first {
		s.log.Debug("duplicate linear delivery skipped", "delivery", d.id)
		return nil
	}
	v, err := s.Viewer(ctx)
	if err != nil {
		return err
	}
	switch d.w.Type {
	case "Issue":
		start, err := d.w.IssueStarts(v.ID, s.o.Label)
		if err != nil || !start {
			return err
		}
		cur, _, err := d.w.Issue()
		if err != nil {
			return err
		}
		return s.start(ctx, cur.ID)
	case "Comment":
		c, err := d.w.Comment()
		if err != nil {
			return err
		}
		if d.w.Action != "create" || c.UserID == v.ID || !Mentions(c.Body, v) {
			return nil
		}
		return s.prompt(ctx, c)
	}
	return nil
}

// linkData is what the integration keeps on an issue's link.
type linkData struct {
	Identifier string `json:"identifier"`
	// LastPosted is the id of the last assistant message commented on the issue.
	LastPosted string `json:"lastPosted,omitempty"`
}

// start starts the session of issue id, unless it has one.
func (s *Service) start(ctx context.Context, id string) error {
	if _, err := s.o.Store.GetLink(ctx, Source, id); err == nil {
		return nil // one session per issue
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	iss, err := s.o.Client.Issue(ctx, id)
	if err != nil {
		return err
	}
	repo, err := s.o.Store.GetSetting(ctx, TeamRepoSetting(iss.Team.Key))
	if errors.Is(err, store.ErrNotFound) || (err == nil && repo == "") {
		return s.comment(ctx, iss.ID, fmt.Sprintf("I can't start a session for %s: team %s has no repository configured. "+
			"An agent admin sets it with `PUT /api/v1/integrations/linear/teams/%s` and `{\"repo\": \"org/name\"}`; then assign the issue to me again.",
			iss.Identifier, iss.Team.Key, iss.Team.Key))
	}
	if err != nil {
		return err
	}
	owner, who, err := s.owner(ctx, iss)
	if err != nil {
		return err
	}
	if owner == nil {
		return s.comment(ctx, iss.ID, fmt.Sprintf("I can't start a session for %s: %s has no account on the agent. "+
			"Sign in to it once with that email (the web UI at %s, or `kubectl agents whoami`), then assign the issue to me again.",
			iss.Identifier, who, s.o.ExternalURL))
	}
	sess := &store.Session{
		Title:   title(iss),
		OwnerID: owner.ID,
		Private: true,
		Repo:    repo,
		Prompt:  prompt(iss),
	}
	if err := s.o.Sessions.Create(ctx, sess, s.o.MaxActiveSessions); err != nil {
		if errors.Is(err, store.ErrQuotaExceeded) {
			return s.comment(ctx, iss.ID, fmt.Sprintf("I can't start a session for %s: %s already has as many active sessions as allowed. Stop one (`kubectl agents session stop <id>`), then assign the issue to me again.", iss.Identifier, who))
		}
		return fmt.Errorf("create the session of %s: %w", iss.Identifier, err)
	}
	data, _ := json.Marshal(linkData{Identifier: iss.Identifier})
	if err := s.o.Store.CreateLink(ctx, &store.IntegrationLink{Source: Source, ExternalID: iss.ID, SessionID: sess.ID, Data: data}); err != nil {
		// Another replica started one for the issue meanwhile: keep that one.
		if derr := s.o.Sessions.Delete(ctx, sess.ID); derr != nil {
			s.log.Error("delete the extra session of an issue failed", "session", sess.ID, "error", derr)
		}
		if errors.Is(err, store.ErrConflict) {
			return nil
		}
		return fmt.Errorf("link session %s to %s: %w", sess.ID, iss.Identifier, err)
	}
	s.log.Info("linear issue started a session", "issue", iss.Identifier, "session", sess.ID, "owner", owner.ID)
	return s.comment(ctx, iss.ID, fmt.Sprintf("Started session `%s` for %s on `%s` (owned by %s).\n\n"+
		"- Attach: `kubectl agents attach %s`\n- Web UI: %s\n\nI'll comment the answer here when it is done; mention me in a comment to send the session a prompt.",
		sess.ID, iss.Identifier, repo, who, sess.ID, s.sessionURL(sess.ID)))
}

// owner is the agent user the session of iss belongs to: the issue's creator, else its
// assignee (when not the agent), found by email. who names the person for comments.
func (s *Service) owner(ctx context.Context, iss *Issue) (*store.User, string, error) {
	v, err := s.Viewer(ctx)
	if err != nil {
		return nil, "", err
	}
	who := ""
	for _, p := range []*User{iss.Creator, iss.Assignee} {
		if p == nil || p.ID == v.ID || p.Email == "" {
			continue
		}
		if who == "" {
			who = p.Email
		}
		users, err := s.o.Store.FindUsers(ctx, p.Email)
		if err != nil {
			return nil, "", err
		}
		for _, u := range users {
			if strings.EqualFold(u.Email, p.Email) {
				return u, p.Email, nil
			}
		}
	}
	if who == "" {
		who = "the issue's creator"
	}
	return nil, who, nil
}

// prompt sends a comment mentioning the agent to the issue's session.
func (s *Service) prompt(ctx context.Context, c CommentData) error {
	l, err := s.o.Store.GetLink(ctx, Source, c.IssueID)
	if errors.Is(err, store.ErrNotFound) {
		return s.comment(ctx, c.IssueID, "This issue has no session yet: assign it to me to start one.")
	}
	if err != nil {
		return err
	}
	sess, err := s.o.Store.GetSession(ctx, l.SessionID)
	if err != nil {
		return err
	}
	if sess.State != apiv1.StateRunning {
		return s.comment(ctx, c.IssueID, fmt.Sprintf("Session `%s` is %s, so it did not get this comment. Start it with `kubectl agents session start %s`, then mention me again.", sess.ID, sess.State, sess.ID))
	}
	if err := s.o.Conversation.Send(ctx, sess, c.Body); err != nil {
		return fmt.Errorf("send the comment to session %s: %w", sess.ID, err)
	}
	go s.Follow(ctx, sess)
	return nil
}

// followTimeout bounds the wait for one reply; a session idles out long before.
const followTimeout = 24 * time.Hour

// Follow comments the session's next reply on its issue, when the session belongs to
// one: the agent calls it once a session's initial prompt was delivered, and after each
// prompt from a comment.
func (s *Service) Follow(ctx context.Context, sess *store.Session) {
	ctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	links, err := s.o.Store.ListLinks(ctx, sess.ID)
	if err != nil {
		s.log.Warn("read the session's links failed", "session", sess.ID, "error", err)
		return
	}
	var link *store.IntegrationLink
	for _, l := range links {
		if l.Source == Source {
			link = l
		}
	}
	if link == nil {
		return
	}
	var since linkData
	_ = json.Unmarshal(link.Data, &since)
	msg, err := s.o.Conversation.WaitReply(ctx, sess, since.LastPosted)
	if err != nil {
		s.log.Warn("wait for the session's reply failed", "session", sess.ID, "error", err)
		cur, gerr := s.o.Store.GetSession(ctx, sess.ID)
		if gerr == nil && cur.State != apiv1.StateRunning {
			_ = s.comment(ctx, link.ExternalID, fmt.Sprintf("Session `%s` ended (%s) before it answered. %s", sess.ID, cur.State, cur.Message))
		}
		return
	}
	// Another follower (another prompt, another replica) may have posted it already.
	cur, err := s.o.Store.GetLink(ctx, Source, link.ExternalID)
	if err != nil {
		return
	}
	var data linkData
	_ = json.Unmarshal(cur.Data, &data)
	if data.LastPosted == msg.ID {
		return
	}
	data.LastPosted = msg.ID
	b, _ := json.Marshal(data)
	if err := s.o.Store.UpdateLinkData(ctx, Source, link.ExternalID, cur.Data, b); err != nil {
		// Another follower claimed this reply first (ErrConflict): it comments it.
		if !errors.Is(err, store.ErrConflict) {
			s.log.Warn("record the posted reply failed", "session", sess.ID, "error", err)
		}
		return
	}
	if err := s.comment(ctx, link.ExternalID, fmt.Sprintf("Session `%s` answered:\n\n%s\n\n(Web UI: %s)", sess.ID, msg.Text, s.sessionURL(sess.ID))); err != nil {
		s.log.Error("comment the session's reply failed", "session", sess.ID, "error", err)
	}
}

func (s *Service) comment(ctx context.Context, issueID, body string) error {
	_, err := s.o.Client.CommentCreate(ctx, issueID, body)
	return err
}

func (s *Service) sessionURL(id string) string {
	return strings.TrimRight(s.o.ExternalURL, "/") + "/sessions/" + id
}

// title is the session's title: the identifier and the issue's title, shortened.
func title(iss *Issue) string {
	t := strings.Join(strings.Fields(iss.Identifier+" "+iss.Title), " ")
	if utf8.RuneCountInString(t) > 60 {
		t = string([]rune(t)[:57]) + "..."
	}
	return t
}

// prompt is the session's initial prompt: the issue's title and description.
func prompt(iss *Issue) string {
	p := iss.Title
	if d := strings.TrimSpace(iss.Description); d != "" {
		p += "\n\n" + d
	}
	return p + fmt.Sprintf("\n\n(Linear issue %s: %s)", iss.Identifier, iss.URL)
}

// Name is the integration's name.
func (s *Service) Name() string { return Source }

// Check asks Linear who the API key is, now: doctor's "enabled and reachable".
func (s *Service) Check(ctx context.Context) apiv1.Integration {
	out := apiv1.Integration{Name: Source, Enabled: true, Configured: true}
	v, err := s.o.Client.Viewer(ctx)
	if err != nil {
		out.Detail = err.Error()
		return out
	}
	out.Reachable = true
	s.mu.Lock()
	s.viewer = v
	s.mu.Unlock()
	out.Detail = fmt.Sprintf("API key of Linear user %s (%s)", v.DisplayName, v.Email)
	if s.o.Label != "" {
		out.Detail += fmt.Sprintf("; issues assigned to it or labelled %q start sessions", s.o.Label)
	} else {
		out.Detail += "; issues assigned to it start sessions"
	}
	return out
}
