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

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/integrations"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Source is the integration's name in the store's events and links.
const Source = "linear"

// TeamRepoSetting is the store setting holding the repository sessions of Linear team
// key start on.
func TeamRepoSetting(key string) string { return "linear.team." + strings.ToUpper(key) + ".repo" }

// Sessions is the session lifecycle as the integration needs it.
type Sessions = integrations.Sessions

// Conversation reaches a running session's OpenCode.
type Conversation = integrations.Conversation

// Options configure a Service.
type Options struct {
	Client        *Client
	Store         store.Store
	Sessions      Sessions
	Conversation  Conversation
	WebhookSecret string
	// Authorizer decides whether the Linear user's agent user may create sessions, and
	// send prompts to sessions it does not own (nil: any user the agent knows may create,
	// and prompt a session that is not private).
	Authorizer auth.Authorizer
	// Audit records the decisions taken for Linear users (nil: none are recorded).
	Audit *audit.Recorder
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
	// PollInterval is how often followed sessions are looked at (default 3s).
	PollInterval time.Duration
}

// Service is the Linear integration: the webhook handler, the workers acting on the
// deliveries, and the follower commenting a session's replies, and its end, on its
// issue.
type Service struct {
	o     Options
	log   hclog.Logger
	queue chan delivery

	mu     sync.Mutex
	viewer *User
	// follower follows the sessions of issues (integrations.Follower).
	follower *integrations.Follower
}

type delivery struct {
	id string
	w  *Webhook
}

// NewService returns the integration; Run starts its workers and its follower.
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
	if o.PollInterval <= 0 {
		o.PollInterval = 3 * time.Second
	}
	s := &Service{o: o, log: o.Log, queue: make(chan delivery, o.Queue)}
	s.follower = integrations.NewFollower(Source, o.Store, o.Log, s.step, apiv1.StatePending, apiv1.StateStarting, apiv1.StateRunning, apiv1.StateStopping)
	return s
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

// Run processes deliveries and follows the sessions of issues until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	return integrations.Run(ctx, s.o.Workers, s.queue, s.handle, s.follower, s.o.PollInterval)
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

// deliveryTimeout bounds one delivery's work (a few GraphQL calls and store writes).
const deliveryTimeout = 2 * time.Minute

// handle acts on one delivery, once: a duplicate (the same Linear-Delivery) is skipped.
// Once the delivery is recorded Linear's retries are skipped too, so work that fails
// after that is told on the issue, for people not to wait for a session that is not
// coming; the cause goes to the log, for an admin.
func (s *Service) handle(ctx context.Context, d delivery) {
	ctx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	log := s.log.With("delivery", d.id, "type", d.w.Type)
	first, err := s.o.Store.RecordEvent(ctx, Source, d.id)
	if err != nil {
		log.Error("record the linear delivery failed", "error", err)
		return
	}
	if !first {
		log.Debug("duplicate linear delivery skipped")
		return
	}
	v, err := s.Viewer(ctx)
	if err != nil {
		// Without the agent's own user there is no telling whether the delivery was
		// meant for it, so no one to tell either.
		log.Error("linear delivery dropped: read the agent's Linear user failed", "error", err)
		return
	}
	switch d.w.Type {
	case "Issue":
		start, err := d.w.IssueStarts(v.ID, s.o.Label)
		if err != nil {
			log.Error("unreadable linear issue delivery", "error", err)
			return
		}
		if !start {
			return
		}
		cur, _, _ := d.w.Issue()
		if err := s.start(ctx, log, v, cur.ID, d.w.Actor); err != nil {
			log.Error("start the session of a linear issue failed", "issue", cur.Identifier, "error", err)
			s.tell(ctx, log, cur.ID, fmt.Sprintf("I could not start a session for %s; an agent admin can find why in the agent's log.", orIssue(cur.Identifier)))
		}
	case "Comment":
		c, err := d.w.Comment()
		if err != nil {
			log.Error("unreadable linear comment delivery", "error", err)
			return
		}
		if d.w.Action != "create" || c.UserID == v.ID || !Mentions(c.Body, v) {
			return
		}
		if err := s.prompt(ctx, log, c, d.w.Actor); err != nil {
			log.Error("pass a linear comment to its session failed", "issue", c.IssueID, "error", err)
			s.tell(ctx, log, c.IssueID, "I could not pass this comment to the issue's session; an agent admin can find why in the agent's log. Mention me again in a while.")
		}
	}
}

func orIssue(identifier string) string {
	if identifier == "" {
		return "this issue"
	}
	return identifier
}

// linkData is what the integration keeps on an issue's link. The follower claims
// each comment it is about to make by swapping it (see step).
type linkData struct {
	Identifier string `json:"identifier"`
	// LastPosted is the id of the last assistant message commented on the issue.
	LastPosted string `json:"lastPosted,omitempty"`
	// LastAnswer is that message's text (cut to maxAnswer): the summary commented once
	// the session has ended, when its conversation went with its pod.
	LastAnswer string `json:"lastAnswer,omitempty"`
	// Ended is set once the session's end was commented; cleared when it runs again.
	Ended bool `json:"ended,omitempty"`
}

// start starts the session of issue id for actor, the Linear user who assigned or
// labelled it (not the issue's creator: whoever hands the issue to the agent owns what
// it does), unless the issue has one. v is the agent's own Linear user. It tells the
// issue why when the session is not started for a reason people can act on; the error
// it returns is anything else, when no session was started and no one was told.
func (s *Service) start(ctx context.Context, log hclog.Logger, v *User, id string, actor *Actor) error {
	if _, err := s.o.Store.GetLink(ctx, Source, id); err == nil {
		return nil // one session per issue
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read the issue's link: %w", err)
	}
	iss, err := s.o.Client.Issue(ctx, id)
	if err != nil {
		return err
	}
	retry := "then assign the issue to me again"
	if !actor.Person() || actor.ID == v.ID {
		// An automation or the agent's own key: a session belongs to a person.
		s.tell(ctx, log, iss.ID, fmt.Sprintf("I can't start a session for %s: the change was not made by a person I can tell, "+
			"and a session belongs to the one who asks for it. Assign the issue to me (or label it) yourself.", iss.Identifier))
		return nil
	}
	owner, email, err := s.person(ctx, actor)
	if err != nil {
		return fmt.Errorf("look up the Linear user who asked: %w", err)
	}
	if owner == nil {
		s.tell(ctx, log, iss.ID, fmt.Sprintf("I can't start a session for %s: %s", iss.Identifier, s.unknown(email, retry)))
		return nil
	}
	repo, err := s.o.Store.GetSetting(ctx, TeamRepoSetting(iss.Team.Key))
	if errors.Is(err, store.ErrNotFound) || (err == nil && repo == "") {
		s.tell(ctx, log, iss.ID, fmt.Sprintf("I can't start a session for %s: team %s has no repository configured. "+
			"An agent admin sets it with `kubectl agents integrations linear-team %s --repo https://github.com/org/name` "+
			"(the repository's full URL); %s.", iss.Identifier, iss.Team.Key, iss.Team.Key, retry))
		return nil
	}
	if err != nil {
		return fmt.Errorf("read team %s's repository: %w", iss.Team.Key, err)
	}
	ident := identity(owner)
	who := ident.Display()
	if s.o.Authorizer != nil {
		allowed, reason, err := s.o.Authorizer.Authorize(ctx, ident, apiv1.VerbCreate)
		if err != nil {
			return fmt.Errorf("check whether %s may create sessions: %w", ident.Display(), err)
		}
		if !allowed {
			s.audit(func(r *audit.Recorder) {
				r.Denied(ctx, ident.Display(), "session.create", "", "from Linear issue "+iss.Identifier+": "+reason)
			})
			s.tell(ctx, log, iss.ID, fmt.Sprintf("I can't start a session for %s: %s may not create sessions on the agent. "+
				"Ask an agent admin for access (RBAC: a binding to the cake-agents-user ClusterRole), %s.", iss.Identifier, who, retry))
			return nil
		}
	}
	sess := &store.Session{
		Title:   title(iss),
		OwnerID: owner.ID,
		Private: true,
		Repo:    repo,
		Prompt:  prompt(iss),
	}
	// Admins are not held to the quota, as in the API and from Slack.
	limit := s.o.MaxActiveSessions
	if owner.Admin {
		limit = 0
	}
	if err := s.o.Sessions.Create(ctx, sess, limit); err != nil {
		s.audit(func(r *audit.Recorder) { r.Error(ctx, ident.Display(), "session.create", sess.ID, err) })
		if errors.Is(err, store.ErrQuotaExceeded) {
			s.tell(ctx, log, iss.ID, fmt.Sprintf("I can't start a session for %s: %s already has as many active sessions as allowed. Stop one (`kubectl agents session stop <id>`), %s.", iss.Identifier, who, retry))
			return nil
		}
		return fmt.Errorf("create the session of %s: %w", iss.Identifier, err)
	}
	data, _ := json.Marshal(linkData{Identifier: iss.Identifier})
	if err := s.o.Store.CreateLink(ctx, &store.IntegrationLink{Source: Source, ExternalID: iss.ID, SessionID: sess.ID, Data: data}); err != nil {
		// Another replica started one for the issue meanwhile: keep that one.
		if derr := s.o.Sessions.Delete(context.WithoutCancel(ctx), sess.ID); derr != nil {
			log.Error("delete the extra session of an issue failed", "session", sess.ID, "error", derr)
		}
		if errors.Is(err, store.ErrConflict) {
			return nil
		}
		return fmt.Errorf("link session %s to %s: %w", sess.ID, iss.Identifier, err)
	}
	s.audit(func(r *audit.Recorder) {
		r.Success(ctx, ident.Display(), "session.create", sess.ID, "from Linear issue "+iss.Identifier)
	})
	log.Info("linear issue started a session", "issue", iss.Identifier, "session", sess.ID, "owner", owner.ID)
	s.Follow(sess.ID)
	s.tell(ctx, log, iss.ID, fmt.Sprintf("Started session `%s` for %s on `%s` (owned by %s).\n\n"+
		"- Attach: `kubectl agents attach %s`\n- Web UI: %s\n\nI'll comment the answer here when it is done, and a summary when the session ends; mention me in a comment to send the session a prompt.",
		sess.ID, iss.Identifier, repo, who, sess.ID, s.sessionURL(sess.ID)))
	return nil
}

// person maps a Linear user to the agent user with the same email: actor is the user
// as a delivery names it; its email, when the delivery carries none, is read from
// Linear. The string is the email (or the Linear name when none is known), for
// comments. A nil user with no error is someone the agent does not know.
func (s *Service) person(ctx context.Context, actor *Actor) (*store.User, string, error) {
	email, name := strings.TrimSpace(actor.Email), actor.Name
	if email == "" {
		u, err := s.o.Client.User(ctx, actor.ID)
		if err != nil {
			return nil, "", err
		}
		email, name = strings.TrimSpace(u.Email), u.DisplayName
	}
	if email == "" {
		return nil, name, nil
	}
	users, err := s.o.Store.FindUsers(ctx, email)
	if err != nil {
		return nil, "", err
	}
	for _, u := range users {
		if strings.EqualFold(u.Email, email) || strings.EqualFold(u.Subject, email) {
			return u, email, nil
		}
	}
	return nil, email, nil
}

// unknown tells a Linear user the agent cannot map (who is their email, or their name
// when Linear showed no email) how to get access, then retry.
func (s *Service) unknown(who, retry string) string {
	if !strings.Contains(who, "@") {
		return fmt.Sprintf("I cannot see the email address of Linear user %s, so I cannot tell who they are on the agent. "+
			"Ask a Linear admin to let the agent's API key read members' emails, %s.", orSomeone(who), retry)
	}
	where := "the web UI"
	if s.o.ExternalURL != "" {
		where = "the web UI at " + strings.TrimRight(s.o.ExternalURL, "/")
	}
	return fmt.Sprintf("%s has no account on the agent. Sign in to the agent once as %s (%s, or `kubectl agents whoami`) "+
		"and ask an agent admin for access if you have none (RBAC: a binding to the cake-agents-user ClusterRole), %s.", who, who, where, retry)
}

func orSomeone(name string) string {
	if name == "" {
		return "(no name)"
	}
	return name
}

func identity(u *store.User) *auth.Identity {
	return &auth.Identity{UserID: u.ID, Username: u.Subject, Groups: u.Groups, Email: u.Email, DisplayName: u.DisplayName, Source: u.Source, Admin: u.Admin}
}

// prompt sends a comment mentioning the agent to the issue's session, when its author
// may: the session's owner, an admin, or, for a session that is not private, someone
// the Authorizer lets attach to it (as a reply in a Slack thread). It tells the issue
// when the comment is not sent; the error it returns is anything else.
func (s *Service) prompt(ctx context.Context, log hclog.Logger, c CommentData, actor *Actor) error {
	l, err := s.o.Store.GetLink(ctx, Source, c.IssueID)
	if errors.Is(err, store.ErrNotFound) {
		s.tell(ctx, log, c.IssueID, "This issue has no session yet: assign it to me to start one.")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the issue's link: %w", err)
	}
	// The comment's author: the delivery's actor when it is them (it may carry the
	// email), else the author by id.
	if actor == nil || actor.ID != c.UserID {
		actor = &Actor{ID: c.UserID, Type: "user"}
	}
	retry := "then mention me again"
	user, who, err := s.person(ctx, actor)
	if err != nil {
		log.Error("look up the linear commenter failed", "user", c.UserID, "error", err)
		s.tell(ctx, log, c.IssueID, "I could not look you up in Linear just now, so I did not send that to the session; mention me again in a minute.")
		return nil
	}
	if user == nil {
		s.audit(func(r *audit.Recorder) {
			r.Denied(ctx, "linear:"+orSomeone(who), "session.message", l.SessionID, "from Linear: no agent user with that email")
		})
		s.tell(ctx, log, c.IssueID, "I did not send that to the session: "+s.unknown(who, retry))
		return nil
	}
	sess, err := s.o.Store.GetSession(ctx, l.SessionID)
	if errors.Is(err, store.ErrNotFound) {
		s.tell(ctx, log, c.IssueID, fmt.Sprintf("Session `%s` was deleted, so it did not get this comment.", l.SessionID))
		return nil
	}
	if err != nil {
		return fmt.Errorf("read session %s: %w", l.SessionID, err)
	}
	ident := identity(user)
	if !auth.IsOwner(ident, sess) && !user.Admin {
		allowed, reason := false, "the session is private to its owner"
		if !sess.Private {
			if s.o.Authorizer == nil {
				allowed = true
			} else {
				allowed, reason, err = s.o.Authorizer.AuthorizeSession(ctx, ident, apiv1.VerbAttach, sess.ID)
				if err != nil {
					return fmt.Errorf("check whether %s may attach to session %s: %w", ident.Display(), sess.ID, err)
				}
			}
		}
		if !allowed {
			s.audit(func(r *audit.Recorder) {
				r.Denied(ctx, ident.Display(), "session.message", sess.ID, "from Linear: "+reason)
			})
			s.tell(ctx, log, c.IssueID, fmt.Sprintf("I did not send that to session `%s`: only its owner (or someone an agent admin lets attach to it, with RBAC) may send it prompts. "+
				"%s may ask an agent admin for access.", sess.ID, ident.Display()))
			return nil
		}
	}
	if sess.State != apiv1.StateRunning {
		s.tell(ctx, log, c.IssueID, fmt.Sprintf("Session `%s` is %s, so it did not get this comment. Start it with `kubectl agents session start %s`, then mention me again.", sess.ID, sess.State, sess.ID))
		return nil
	}
	if err := s.o.Conversation.Send(ctx, sess, c.Body); err != nil {
		log.Warn("send a linear comment to its session failed", "session", sess.ID, "error", err)
		s.tell(ctx, log, c.IssueID, fmt.Sprintf("I could not reach session `%s` just now; mention me again in a minute.", sess.ID))
		return nil
	}
	s.o.Sessions.Touch(ctx, sess.ID, Source)
	s.audit(func(r *audit.Recorder) {
		r.Success(ctx, ident.Display(), "session.message", sess.ID, "from Linear issue "+issueName(l))
	})
	s.Follow(sess.ID)
	return nil
}

// issueName is the identifier (ENG-12) of a link's issue, else its id.
func issueName(l *store.IntegrationLink) string {
	var d linkData
	if json.Unmarshal(l.Data, &d) == nil && d.Identifier != "" {
		return d.Identifier
	}
	return l.ExternalID
}

func (s *Service) audit(f func(*audit.Recorder)) {
	if s.o.Audit != nil {
		f(s.o.Audit)
	}
}

// tell comments body on the issue, logging a failure: there is no one else to tell.
func (s *Service) tell(ctx context.Context, log hclog.Logger, issueID, body string) {
	if err := s.comment(ctx, issueID, body); err != nil {
		log.Warn("comment on the linear issue failed", "issue", issueID, "error", err)
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
