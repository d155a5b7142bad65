// Package slack starts and follows sessions from Slack: a mention of the agent's bot in
// a channel starts a public session, a direct message a private one, owned by the
// agent user whose email is the Slack user's; replies in the thread become prompts to
// the same session; the agent posts the session's progress and its answers in the
// thread.
//
// Slack's Events API delivers each event with a v0 signature (HMAC-SHA256 of
// "v0:timestamp:body" with the app's signing secret), expects an answer within three
// seconds and retries otherwise: the handler verifies, acknowledges and queues, and a
// bounded pool of workers does the rest. Every delivery's event_id is recorded in the
// store, and each thread's session is a store link keyed by channel and thread, so a
// retry or a second replica never starts a second session.
package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
const Source = "slack"

// sourceMessage dedupes messages: one message can arrive as both an app_mention and a
// message event, under two event ids.
const sourceMessage = "slack-message"

// ChannelRepoSetting is the settings key of a channel's default repository (an admin
// sets it with `kubectl agents integrations slack-channel ID --repo URL`).
func ChannelRepoSetting(channel string) string { return "slack.channel." + channel + ".repo" }

// Sessions is the session lifecycle as the integration needs it.
type Sessions = integrations.Sessions

// Conversation reaches a running session's OpenCode.
type Conversation = integrations.Conversation

// Options configure a Handler.
type Options struct {
	SigningSecret string
	Client        *Client
	Store         store.Store
	Sessions      Sessions
	Conversation  Conversation
	// Authorizer decides whether the mapped user may create sessions (nil: any user
	// the agent knows may).
	Authorizer auth.Authorizer
	Audit      *audit.Recorder
	// ExternalURL is the agent's public URL, for the web UI link ("" : no link).
	ExternalURL       string
	MaxActiveSessions int
	Log               hclog.Logger
	Now               func() time.Time
	// Workers and Queue bound the work in flight (default 4 and 256): a delivery that
	// finds the queue full is answered 503, and Slack retries it later.
	Workers int
	Queue   int
	// PollInterval is how often followed sessions are looked at (default 3s).
	PollInterval time.Duration
	// RepoHosts are hosts whose https://HOST/org/name links in a message name the
	// repository, besides DefaultRepoHosts (the agent adds its GitHub host).
	RepoHosts []string
}

// Handler serves POST /integrations/slack/events and, in Run, does the work.
type Handler struct {
	o    Options
	log  hclog.Logger
	jobs chan *eventJob

	// follower follows the sessions started from Slack (integrations.Follower).
	follower *integrations.Follower
}

// New returns a Handler; call Run to start its workers.
func New(o Options) *Handler {
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
	h := &Handler{o: o, log: o.Log, jobs: make(chan *eventJob, o.Queue)}
	h.follower = integrations.NewFollower(Source, o.Store, o.Log, h.step, apiv1.StatePending, apiv1.StateStarting, apiv1.StateRunning, apiv1.StateStopping)
	return h
}

// envelope is an Events API request body.
type envelope struct {
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	EventID   string `json:"event_id"`
	Event     event  `json:"event"`
}

// event is the part of a message or app_mention event the agent reads.
type event struct {
	Type        string `json:"type"`
	Subtype     string `json:"subtype"`
	User        string `json:"user"`
	BotID       string `json:"bot_id"`
	Text        string `json:"text"`
	Channel     string `json:"channel"`
	ChannelType string `json:"channel_type"`
	TS          string `json:"ts"`
	ThreadTS    string `json:"thread_ts"`
}

type eventJob struct {
	id    string
	ev    event
	retry string
}

// maxBody bounds a delivery: Slack's events are a few kilobytes.
const maxBody = 1 << 20

// ServeHTTP verifies and acknowledges a delivery, queueing its work.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		http.Error(w, "unreadable or too large body", http.StatusBadRequest)
		return
	}
	if err := Verify(h.o.SigningSecret, r.Header.Get("X-Slack-Request-Timestamp"), r.Header.Get("X-Slack-Signature"), body, h.o.Now()); err != nil {
		// Nothing is stored for a request that is not Slack's.
		h.log.Warn("slack request refused", "remote", r.RemoteAddr, "error", err)
		http.Error(w, "invalid Slack signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		http.Error(w, "not an Events API request", http.StatusBadRequest)
		return
	}
	switch env.Type {
	case "url_verification":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"challenge": env.Challenge})
		return
	case "event_callback":
	default:
		w.WriteHeader(http.StatusOK)
		return
	}
	if env.EventID == "" || !h.wanted(env.Event) {
		w.WriteHeader(http.StatusOK)
		return
	}
	select {
	case h.jobs <- &eventJob{id: env.EventID, ev: env.Event, retry: r.Header.Get("X-Slack-Retry-Num")}:
		w.WriteHeader(http.StatusOK)
	default:
		// Nothing recorded: Slack's retry is handled like a first delivery.
		h.log.Warn("slack event dropped: the work queue is full", "event", env.EventID)
		http.Error(w, "busy, retry later", http.StatusServiceUnavailable)
	}
}

// wanted keeps mentions and people's messages; a bot's own messages (ours included)
// and edits, joins and the like are ignored, so the agent never answers itself.
func (h *Handler) wanted(ev event) bool {
	if ev.BotID != "" || ev.User == "" || ev.Channel == "" || ev.TS == "" {
		return false
	}
	switch ev.Type {
	case "app_mention":
		return ev.Subtype == ""
	case "message":
		return ev.Subtype == "" || ev.Subtype == "file_share"
	}
	return false
}

// Run runs the workers and the follower of linked sessions until ctx ends. (The
// agent prunes old delivery ids for every integration, see agent/app.)
func (h *Handler) Run(ctx context.Context) error {
	return integrations.Run(ctx, h.o.Workers, h.jobs, h.handle, h.follower, h.o.PollInterval)
}

// handle does one delivery's work.
func (h *Handler) handle(ctx context.Context, j *eventJob) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	log := h.log.With("event", j.id, "channel", j.ev.Channel)
	first, err := h.o.Store.RecordEvent(ctx, Source, j.id)
	if err != nil {
		log.Error("record slack event failed", "error", err)
		return
	}
	if !first {
		log.Debug("duplicate slack delivery ignored", "retry", j.retry)
		return
	}
	ev := j.ev
	threadTS := ev.ThreadTS
	if threadTS == "" {
		threadTS = ev.TS
	}
	key := ev.Channel + ":" + threadTS
	link, err := h.o.Store.GetLink(ctx, Source, key)
	switch {
	case err == nil:
		if h.firstOfMessage(ctx, log, ev) {
			h.followUp(ctx, log, link, ev, threadTS)
		}
	case !errors.Is(err, store.ErrNotFound):
		log.Error("read slack thread link failed", "error", err)
	case ev.Type == "message" && ev.ChannelType != "im":
		// A channel message outside a thread the bot follows: if it mentions the bot,
		// its app_mention copy starts the session. Not recorded as the message's
		// handling, or that copy, arriving later, would be taken for a duplicate.
	default:
		if h.firstOfMessage(ctx, log, ev) {
			h.start(ctx, log, ev, key, threadTS)
		}
	}
}

// firstOfMessage records that a message is being acted on and reports whether it is
// the first time: a mention in a followed thread arrives twice (app_mention and
// message, with their own event ids), and must become one prompt. It is called only
// on the paths that act, so the copy that is ignored never hides the one that is not.
func (h *Handler) firstOfMessage(ctx context.Context, log hclog.Logger, ev event) bool {
	first, err := h.o.Store.RecordEvent(ctx, sourceMessage, ev.Channel+":"+ev.TS)
	if err != nil {
		log.Error("record slack message failed", "error", err)
		return false
	}
	return first
}

// private reports whether a session started from ev is private: one started from a
// direct message, a group DM or a private channel (the G… ids Slack gives them; the
// channel_type of message events), whose conversation is not for every agent user to
// read. A mention in a public channel starts a public session.
func private(ev event) bool {
	switch ev.ChannelType {
	case "im", "mpim", "group":
		return true
	}
	return strings.HasPrefix(ev.Channel, "D") || strings.HasPrefix(ev.Channel, "G")
}

// linkData is what a thread's link records (IntegrationLink.Data).
type linkData struct {
	Channel  string `json:"channel"`
	ThreadTS string `json:"thread_ts"`
	// StatusTS is the status message the agent keeps up to date.
	StatusTS string `json:"status_ts,omitempty"`
	// State is the session state the status message shows.
	State string `json:"state,omitempty"`
	// Answered is the id of the last assistant message posted in the thread.
	Answered string `json:"answered,omitempty"`
}

// reply posts text in the thread, logging a failure (there is no one else to tell).
func (h *Handler) reply(ctx context.Context, log hclog.Logger, channel, threadTS, text string) string {
	ts, err := h.o.Client.PostMessage(ctx, channel, threadTS, text)
	if err != nil {
		log.Warn("slack reply failed", "error", err)
	}
	return ts
}

// resolveUser maps a Slack user to the agent's user with the same email; the second
// result is what to tell them when there is none.
func (h *Handler) resolveUser(ctx context.Context, slackUser string) (*store.User, string, error) {
	info, err := h.o.Client.UserInfo(ctx, slackUser)
	if err != nil {
		return nil, "", err
	}
	email := strings.TrimSpace(info.Profile.Email)
	if email == "" {
		return nil, "I cannot see your email address in Slack, so I cannot tell who you are in Cake Agents. Ask an admin to give the app the `users:read.email` scope.", nil
	}
	users, err := h.o.Store.FindUsers(ctx, email)
	if err != nil {
		return nil, "", err
	}
	for _, u := range users {
		if strings.EqualFold(u.Email, email) || strings.EqualFold(u.Subject, email) {
			return u, "", nil
		}
	}
	where := "the web UI"
	if h.o.ExternalURL != "" {
		where = "the web UI (" + strings.TrimSuffix(h.o.ExternalURL, "/") + ")"
	}
	return nil, fmt.Sprintf("I don't know %s in Cake Agents yet. Sign in to the agent once as %s — %s or `kubectl agents whoami` — or ask an admin to give you access, then mention me again.", email, email, where), nil
}

func identity(u *store.User) *auth.Identity {
	return &auth.Identity{UserID: u.ID, Username: u.Subject, Groups: u.Groups, Email: u.Email, DisplayName: u.DisplayName, Source: u.Source, Admin: u.Admin}
}

// start starts a session for a message that is not in a followed thread.
func (h *Handler) start(ctx context.Context, log hclog.Logger, ev event, key, threadTS string) {
	owner, why, err := h.resolveUser(ctx, ev.User)
	if err != nil {
		log.Error("map slack user failed", "user", ev.User, "error", err)
		h.reply(ctx, log, ev.Channel, threadTS, "I could not look you up just now; please try again in a minute.")
		return
	}
	if owner == nil {
		h.reply(ctx, log, ev.Channel, threadTS, why)
		return
	}
	req := ParseText(ev.Text, append(DefaultRepoHosts[:len(DefaultRepoHosts):len(DefaultRepoHosts)], h.o.RepoHosts...)...)
	if req.Repo == "" {
		repo, err := h.o.Store.GetSetting(ctx, ChannelRepoSetting(ev.Channel))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			log.Error("read channel repository failed", "error", err)
		}
		req.Repo = repo
	}
	if req.Repo != "" {
		if err := apiv1.ValidateRepoURL(req.Repo); err != nil {
			h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("I can't use the repository %s: %v", req.Repo, err))
			return
		}
	}
	if req.Prompt == "" {
		h.reply(ctx, log, ev.Channel, threadTS, "Tell me what to do, e.g. `repo:org/name fix the flaky test` (or ask an admin to set this channel's default repository).")
		return
	}
	if len(req.Prompt) > apiv1.MaxPromptBytes {
		h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("That message is longer than the %d bytes a prompt may have.", apiv1.MaxPromptBytes))
		return
	}
	id := identity(owner)
	if h.o.Authorizer != nil {
		allowed, reason, err := h.o.Authorizer.Authorize(ctx, id, apiv1.VerbCreate)
		if err != nil {
			log.Error("authorization check failed", "user", id.Username, "error", err)
			h.reply(ctx, log, ev.Channel, threadTS, "I could not check your permissions just now; please try again in a minute.")
			return
		}
		if !allowed {
			h.audit(ctx, func(r *audit.Recorder) { r.Denied(ctx, id.Display(), "session.create", "", "from Slack: "+reason) })
			h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("%s may not create sessions: ask an admin to bind the cake-agents-user ClusterRole.", id.Display()))
			return
		}
	}
	sess := &store.Session{Title: title(req.Prompt), OwnerID: owner.ID, Private: private(ev), Repo: req.Repo, Prompt: req.Prompt}
	limit := h.o.MaxActiveSessions
	if owner.Admin {
		limit = 0
	}
	if err := h.o.Sessions.Create(ctx, sess, limit); err != nil {
		h.audit(ctx, func(r *audit.Recorder) { r.Error(ctx, id.Display(), "session.create", sess.ID, err) })
		msg := "I could not start a session; an admin can find why in the agent's log."
		if errors.Is(err, store.ErrQuotaExceeded) {
			msg = "You have as many active sessions as you may: stop one (`kubectl agents session list`) and mention me again."
		}
		log.Error("slack session create failed", "error", err)
		h.reply(ctx, log, ev.Channel, threadTS, msg)
		return
	}
	data := linkData{Channel: ev.Channel, ThreadTS: threadTS, State: string(sess.State)}
	raw, _ := json.Marshal(data)
	if err := h.o.Store.CreateLink(ctx, &store.IntegrationLink{Source: Source, ExternalID: key, SessionID: sess.ID, Data: raw}); err != nil {
		// Another delivery started this thread's session first: ours goes.
		if derr := h.o.Sessions.Delete(context.WithoutCancel(ctx), sess.ID); derr != nil {
			log.Error("delete duplicate slack session failed", "session", sess.ID, "error", derr)
		}
		if !errors.Is(err, store.ErrConflict) {
			log.Error("link slack thread failed", "session", sess.ID, "error", err)
		}
		return
	}
	h.audit(ctx, func(r *audit.Recorder) {
		r.Success(ctx, id.Display(), "session.create", sess.ID, "from Slack channel "+ev.Channel)
	})
	log.Info("session started from slack", "session", sess.ID, "owner", owner.ID)
	data.StatusTS = h.reply(ctx, log, ev.Channel, threadTS, h.statusText(sess))
	created := raw
	raw, _ = json.Marshal(data)
	// From the data created above: a follower that already moved it on (the session's
	// state) keeps its change, and the status message is found again by its text.
	if err := h.o.Store.UpdateLinkData(ctx, Source, key, created, raw); err != nil {
		log.Warn("record slack status message failed", "error", err)
	}
	h.follower.Add(sess.ID)
}

// followUp sends a reply in a followed thread to its session.
func (h *Handler) followUp(ctx context.Context, log hclog.Logger, link *store.IntegrationLink, ev event, threadTS string) {
	prompt := ParseText(ev.Text).Prompt
	if prompt == "" {
		return
	}
	user, why, err := h.resolveUser(ctx, ev.User)
	if err != nil {
		log.Error("map slack user failed", "user", ev.User, "error", err)
		h.reply(ctx, log, ev.Channel, threadTS, "I could not look you up just now; please try again in a minute.")
		return
	}
	if user == nil {
		h.reply(ctx, log, ev.Channel, threadTS, why)
		return
	}
	sess, err := h.o.Store.GetSession(ctx, link.SessionID)
	if errors.Is(err, store.ErrNotFound) {
		h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("Session %s was deleted; mention me in a new message to start another.", link.SessionID))
		return
	} else if err != nil {
		log.Error("read linked session failed", "session", link.SessionID, "error", err)
		return
	}
	id := identity(user)
	if !auth.IsOwner(id, sess) && !user.Admin {
		allowed := false
		if !sess.Private && h.o.Authorizer != nil {
			allowed, _, err = h.o.Authorizer.AuthorizeSession(ctx, id, apiv1.VerbAttach, sess.ID)
			if err != nil {
				log.Error("authorization check failed", "user", id.Username, "error", err)
			}
		} else if !sess.Private {
			allowed = true
		}
		if !allowed {
			h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("Only the owner of session %s may send it prompts.", sess.ID))
			return
		}
	}
	if sess.State != apiv1.StateRunning {
		h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("Session %s is %s, not Running, so I did not send that. Start it with `kubectl agents session start %s`, or wait until it runs, then reply again.", sess.ID, sess.State, sess.ID))
		return
	}
	if err := h.o.Conversation.Send(ctx, sess, prompt); err != nil {
		log.Warn("slack prompt delivery failed", "session", sess.ID, "error", err)
		h.reply(ctx, log, ev.Channel, threadTS, fmt.Sprintf("I could not reach session %s just now; reply again in a minute.", sess.ID))
		return
	}
	h.o.Sessions.Touch(ctx, sess.ID, "slack")
	h.audit(ctx, func(r *audit.Recorder) { r.Success(ctx, id.Display(), "session.message", sess.ID, "from Slack") })
	h.follower.Add(sess.ID)
}

func (h *Handler) audit(_ context.Context, f func(*audit.Recorder)) {
	if h.o.Audit != nil {
		f(h.o.Audit)
	}
}

// title is a session title from the prompt's first words.
func title(prompt string) string {
	t := strings.Join(strings.Fields(prompt), " ")
	if utf8.RuneCountInString(t) > 60 {
		t = string([]rune(t)[:57]) + "..."
	}
	return t
}

// statusText is the status message of a session.
func (h *Handler) statusText(s *store.Session) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Session `%s` is *%s*", s.ID, s.State)
	if s.Repo != "" {
		fmt.Fprintf(&b, " on %s", s.Repo)
	}
	b.WriteString(".")
	if s.State == apiv1.StateFailed && s.Message != "" {
		fmt.Fprintf(&b, " %s", s.Message)
	}
	fmt.Fprintf(&b, "\nAttach: `kubectl agents attach %s`", s.ID)
	if h.o.ExternalURL != "" {
		fmt.Fprintf(&b, "\nWeb: %s/sessions/%s", strings.TrimSuffix(h.o.ExternalURL, "/"), s.ID)
	}
	b.WriteString("\nReply in this thread to send it more.")
	return b.String()
}
