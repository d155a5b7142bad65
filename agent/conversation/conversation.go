// Package conversation talks to the OpenCode server inside each running session,
// through the agent's port-forward pool and with the session's own password: it is the
// API's server.Conversation (prompts, the conversation so far, the event relay, the
// proxy to OpenCode's own UI), the sessions controller's health check for a session
// turning Running, and the delivery of a session's initial prompt once it runs.
//
// It records no activity: the API's handlers decide what counts as a user's activity
// on a session (see Relay.Proxy).
package conversation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/util/retry"

	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/opencode"
	"github.com/cakeai/cake-agents/agent/proxy"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Passwords reads a session's OpenCode password; *sessions.Controller is one.
type Passwords interface {
	Password(ctx context.Context, s *store.Session) (string, error)
}

// Relay reaches each session's OpenCode through the port-forward pool. It is safe for
// concurrent use.
type Relay struct {
	pool      proxy.Pool
	passwords Passwords
	st        store.Store
	proxy     *proxy.Proxy
	log       hclog.Logger
}

// New returns a Relay reaching pods through pool (a *tunnel.Pool). stripHeaders are the
// identity headers the authenticating proxy sets, which must never reach a session's
// OpenCode.
func New(pool proxy.Pool, passwords Passwords, st store.Store, log hclog.Logger, stripHeaders ...string) *Relay {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Relay{pool: pool, passwords: passwords, st: st, proxy: proxy.New(pool, log.Named("proxy"), proxy.WithStripHeaders(stripHeaders...)), log: log}
}

// client returns an OpenCode client for the session's pod, authenticated with the
// session's own password.
func (c *Relay) client(ctx context.Context, s *store.Session) (*opencode.Client, error) {
	pw, err := c.passwords.Password(ctx, s)
	if err != nil {
		return nil, err
	}
	return opencode.NewForTransport(c.pool.Transport(s.PodNamespace, s.PodName, apiv1.OpenCodePort), pw), nil
}

// Healthy asks the session's OpenCode for its health once, through the tunnel pool,
// with the session's password: the path attach, send and the proxy take. The sessions
// controller calls it before it reports a session Running.
func (c *Relay) Healthy(ctx context.Context, s *store.Session) error {
	oc, err := c.client(ctx, s)
	if err != nil {
		return err
	}
	_, err = oc.Health(ctx)
	return err
}

// SetModelKey gives the session's OpenCode key as the API key of provider (see
// opencode.Client.SetAPIKey): how a session started on a warm pool pod gets its own
// LiteLLM key, which did not exist when that OpenCode started.
func (c *Relay) SetModelKey(ctx context.Context, s *store.Session, provider, key string) error {
	oc, err := c.client(ctx, s)
	if err != nil {
		return err
	}
	return oc.SetAPIKey(ctx, provider, key)
}

// PrepareWorkspace runs argv in dir ("" OpenCode's own) of the session's OpenCode
// container, with env added to the container's, through OpenCode's own terminals (see
// opencode.Client.Run), and fails unless it exits 0; then OpenCode's instance is
// restarted so it looks at the workspace afresh (a repository cloned into it becomes
// OpenCode's git project). It is how a session started on a warm pool pod gets its
// repository at claim.
func (c *Relay) PrepareWorkspace(ctx context.Context, s *store.Session, dir string, env map[string]string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("prepare the workspace: no command")
	}
	oc, err := c.client(ctx, s)
	if err != nil {
		return err
	}
	code, err := oc.Run(ctx, opencode.Command{Path: argv[0], Args: argv[1:], Dir: dir, Env: env, Title: "prepare the workspace"})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s in the session's workspace exited with status %d", argv[0], code)
	}
	return oc.Dispose(ctx)
}

// Branch returns the branch the session's workspace is on ("" when detached), asking
// its OpenCode through the tunnel pool.
func (c *Relay) Branch(ctx context.Context, s *store.Session) (string, error) {
	oc, err := c.client(ctx, s)
	if err != nil {
		return "", err
	}
	return oc.Branch(ctx)
}

// ensureConversation returns the session's OpenCode conversation id, creating the
// conversation on first use and recording it so every client shares it. A recorded
// conversation the session's OpenCode does not know (a pod started without the state of
// the one before: no persistent volume, or a volume from before OpenCode's state lived
// on it) is replaced by a new one, seeded with a digest of the recorded transcript so
// the model still knows what came before.
func (c *Relay) ensureConversation(ctx context.Context, s *store.Session, oc *opencode.Client) (string, error) {
	old := s.OpenCodeSessionID
	if old != "" {
		_, err := oc.GetSession(ctx, old)
		if err == nil {
			return old, nil
		}
		if !opencode.IsNotFound(err) {
			return "", fmt.Errorf("look up the OpenCode conversation: %w", err)
		}
		c.log.Info("the session's OpenCode does not know its conversation; starting a new one from the transcript", "session", s.ID, "conversation", old)
	}
	created, err := oc.CreateSession(ctx, s.Title)
	if err != nil {
		return "", fmt.Errorf("create the OpenCode conversation: %w", err)
	}
	id := created.ID
	if seed := c.seed(ctx, s); seed != "" {
		if err := oc.AddContext(ctx, id, seed); err != nil {
			return "", fmt.Errorf("give the new OpenCode conversation the transcript so far: %w", err)
		}
	}
	err = retry.OnError(retry.DefaultRetry, isConflict, func() error {
		cur, err := c.st.GetSession(ctx, s.ID)
		if err != nil {
			return err
		}
		if cur.OpenCodeSessionID != old {
			id = cur.OpenCodeSessionID // another replica or request won the race
			*s = *cur
			return nil
		}
		cur.OpenCodeSessionID = id
		if err := c.st.UpdateSession(ctx, cur); err != nil {
			return err
		}
		*s = *cur
		return nil
	})
	return id, err
}

// ResumeConversation runs when a session turns Running again (the ready hook): a
// session with a recorded transcript whose OpenCode lost the conversation (no
// persistent volume) gets its new, seeded conversation now, so whoever attaches finds
// the digest there. A session with nothing recorded is left alone.
func (c *Relay) ResumeConversation(ctx context.Context, s *store.Session) {
	// A fork without a prompt begins its seeded conversation now (one with a prompt
	// does when the prompt is delivered).
	fork := s.ForkedFrom != "" && s.OpenCodeSessionID == "" && s.Prompt == ""
	if !fork {
		if s.OpenCodeSessionID == "" && !s.PromptSent {
			return // a first start: the initial prompt makes the conversation
		}
		if _, msgs, err := c.st.GetTranscript(ctx, s.ID); err != nil || len(msgs) == 0 {
			return
		}
	}
	oc, err := c.client(ctx, s)
	if err == nil {
		err = waitHealthy(ctx, oc, 2*time.Minute, c.stillRunning(s.ID))
	}
	if err == nil {
		_, err = c.ensureConversation(ctx, s, oc)
	}
	if err != nil && ctx.Err() == nil {
		c.log.Warn("resume the session's conversation failed; the next prompt tries again", "session", s.ID, "error", err)
	}
}

// seedBytes bounds the digest a new conversation is seeded with; the newest messages
// are kept when the transcript is longer.
const seedBytes = 12 << 10

// seed returns what a new conversation of s begins with: the digest of its recorded
// transcript, or for a fork with nothing recorded yet, of the transcript of the
// session it was forked from ("" when there is none).
func (c *Relay) seed(ctx context.Context, s *store.Session) string {
	_, msgs, err := Transcript(ctx, c.st, s.ID)
	if err == nil && len(msgs) > 0 {
		return Digest(s.ID, msgs, seedBytes)
	}
	if s.ForkedFrom == "" {
		return ""
	}
	_, msgs, err = Transcript(ctx, c.st, s.ForkedFrom)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("read the transcript a fork starts from failed", "session", s.ID, "source", s.ForkedFrom, "error", err)
	}
	// A running source's latest words may not be recorded yet: ask its OpenCode too.
	if src, err := c.st.GetSession(ctx, s.ForkedFrom); err == nil && src.State == apiv1.StateRunning {
		if live, err := c.Messages(ctx, src); err == nil {
			msgs = Merge(msgs, live)
		}
	}
	if len(msgs) == 0 {
		return ""
	}
	return ForkDigest(s.ForkedFrom, msgs, seedBytes)
}

// Digest renders msgs as the context a new conversation of session id starts with: who
// said what, oldest first, each tool call as one line, cut to about limit bytes by
// leaving out the oldest messages.
func Digest(id string, msgs []apiv1.Message, limit int) string {
	return digest(fmt.Sprintf("This conversation continues an earlier one of session %s: its OpenCode was restarted without the earlier state (the session has no persistent volume). The earlier conversation, from the agent's transcript", id), msgs, limit)
}

// ForkDigest is Digest for the first conversation of a fork of session src.
func ForkDigest(src string, msgs []apiv1.Message, limit int) string {
	return digest(fmt.Sprintf("This session is a fork of session %s, on the same repository and branch, starting from its conversation so far. That conversation, from the agent's transcript", src), msgs, limit)
}

func digest(head string, msgs []apiv1.Message, limit int) string {
	lines := make([]string, 0, len(msgs))
	for _, m := range msgs {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s", m.Role, strings.TrimSpace(m.Text))
		for _, t := range m.Tools {
			fmt.Fprintf(&b, "\n  (ran %s", t.Tool)
			if t.Title != "" {
				fmt.Fprintf(&b, ": %s", t.Title)
			}
			fmt.Fprintf(&b, ", %s)", t.Status)
		}
		lines = append(lines, b.String())
	}
	first, size := len(lines), 0
	for first > 0 && size+len(lines[first-1]) <= limit {
		first--
		size += len(lines[first]) + 2
	}
	if first > 0 {
		head += fmt.Sprintf(" (its %d oldest messages left out)", first)
	}
	return head + ":\n\n" + strings.Join(lines[first:], "\n\n")
}

// Send delivers text to the session's conversation, creating the conversation on first
// use and waiting up to a minute for an OpenCode that is still starting.
func (c *Relay) Send(ctx context.Context, s *store.Session, text string) error {
	oc, err := c.client(ctx, s)
	if err != nil {
		return err
	}
	// Right after a (re)start OpenCode may still be coming up behind a Ready pod; give
	// it a moment instead of failing the user's prompt — unless the session stops
	// meanwhile (a stop through any replica), which no wait will cure.
	if err := waitHealthy(ctx, oc, time.Minute, c.stillRunning(s.ID)); err != nil {
		return err
	}
	id, err := c.ensureConversation(ctx, s, oc)
	if err != nil {
		return err
	}
	return oc.PromptAsync(ctx, id, text)
}

// Messages returns the session's conversation so far (none before the first prompt).
func (c *Relay) Messages(ctx context.Context, s *store.Session) ([]apiv1.Message, error) {
	if s.OpenCodeSessionID == "" {
		return []apiv1.Message{}, nil
	}
	oc, err := c.client(ctx, s)
	if err != nil {
		return nil, err
	}
	return oc.Messages(ctx, s.OpenCodeSessionID)
}

// Busy reports whether the session's conversation is working on a prompt (OpenCode's
// /session/status lists it); false before the first prompt.
func (c *Relay) Busy(ctx context.Context, s *store.Session) (bool, error) {
	if s.OpenCodeSessionID == "" {
		return false, nil
	}
	st, err := c.status(ctx, s)
	if err != nil {
		return false, err
	}
	_, busy := st[s.OpenCodeSessionID]
	return busy, nil
}

// Working reports whether the session's OpenCode is working on anything: any of its
// conversations, the agent's or one a user started in the TUI, is busy or retrying the
// model (OpenCode's /session/status lists only those).
func (c *Relay) Working(ctx context.Context, s *store.Session) (bool, error) {
	st, err := c.status(ctx, s)
	if err != nil {
		return false, err
	}
	return len(st) > 0, nil
}

// status is the session's OpenCode's /session/status: the conversations not idle.
func (c *Relay) status(ctx context.Context, s *store.Session) (map[string]opencode.SessionStatus, error) {
	oc, err := c.client(ctx, s)
	if err != nil {
		return nil, err
	}
	return oc.Status(ctx)
}

// Events relays OpenCode's /event stream verbatim as server-sent events. It writes the
// header (200, text/event-stream) once the stream to OpenCode is open, and nothing
// before: an error returned without a header written can still be answered.
func (c *Relay) Events(ctx context.Context, s *store.Session, w http.ResponseWriter) error {
	oc, err := c.client(ctx, s)
	if err != nil {
		return err
	}
	stream, err := oc.Events(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = stream.Close() }()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	// Events are read in their own goroutine so a quiet stream still gets keep-alive
	// comments: through port-forwards a client cannot otherwise tell a quiet stream
	// from a dead connection.
	type next struct {
		ev  *opencode.Event
		err error
	}
	evs := make(chan next)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			ev, err := stream.Next()
			select {
			case evs <- next{ev, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	keepAlive := time.NewTicker(KeepAliveInterval)
	defer keepAlive.Stop()
	for {
		var n next
		select {
		case <-ctx.Done():
			return nil
		case <-keepAlive.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return err
			}
			if err := rc.Flush(); err != nil {
				return err
			}
			continue
		case n = <-evs:
		}
		if errors.Is(n.err, io.EOF) {
			return nil
		}
		if n.err != nil {
			return n.err
		}
		b, err := json.Marshal(n.ev)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", n.ev.Type, b); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		keepAlive.Reset(KeepAliveInterval)
	}
}

// KeepAliveInterval is how often Events writes an SSE comment on a stream that is
// otherwise quiet (apiv1.EventKeepAlive, which clients time out against); a variable
// for tests.
var KeepAliveInterval = apiv1.EventKeepAlive

// Proxy forwards r to path rest of the session's OpenCode (see proxy.Proxy.Serve),
// calling onActivity (when set) as proxy.Target.OnActivity describes: once for the
// request, and as the caller keeps sending on a long-lived stream.
func (c *Relay) Proxy(w http.ResponseWriter, r *http.Request, s *store.Session, rest string, onActivity func()) {
	pw, err := c.passwords.Password(r.Context(), s)
	if err != nil {
		// In the API's JSON error shape, like every other answer under /api/v1.
		c.log.Warn("read session password failed", "session", s.ID, "error", err)
		// The Secret is usually just being created: retry a little later than usual.
		w.Header().Set("Retry-After", "5")
		httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable,
			fmt.Sprintf("the password of session %s is not readable yet; retry shortly, or restart the session if this persists", s.ID))
		return
	}
	c.proxy.Serve(w, r, proxy.Target{
		SessionID:  s.ID,
		Namespace:  s.PodNamespace,
		Pod:        s.PodName,
		Password:   pw,
		OnActivity: onActivity,
	}, rest)
}

// DeliverInitialPrompt runs when a session turns Running (the sessions controller's
// ready hook): it creates the OpenCode conversation and sends the session's prompt once
// (PromptSent survives restarts), retrying while OpenCode comes up.
func (c *Relay) DeliverInitialPrompt(ctx context.Context, s *store.Session) {
	if s.PromptSent || s.Prompt == "" {
		return
	}
	log := c.log.With("session", s.ID)
	var lastErr error
	// OpenCode may need a moment after the readiness probe before it accepts prompts.
	for attempt := 0; attempt < 10; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		cur, err := c.st.GetSession(ctx, s.ID)
		if err != nil || cur.PromptSent || cur.State != apiv1.StateRunning {
			return
		}
		oc, err := c.client(ctx, cur)
		if err != nil {
			lastErr = err
			continue
		}
		// OpenCode takes seconds to start (more on a busy node); wait for it rather
		// than burn the attempts.
		if err := waitHealthy(ctx, oc, 2*time.Minute, c.stillRunning(s.ID)); err != nil {
			lastErr = err
			continue
		}
		id, err := c.ensureConversation(ctx, cur, oc)
		if err != nil {
			lastErr = err
			continue
		}
		if err := oc.PromptAsync(ctx, id, cur.Prompt); err != nil {
			lastErr = err
			continue
		}
		err = retry.OnError(retry.DefaultRetry, isConflict, func() error {
			cur, err := c.st.GetSession(ctx, s.ID)
			if err != nil {
				return err
			}
			cur.PromptSent = true
			return c.st.UpdateSession(ctx, cur)
		})
		if err != nil {
			log.Warn("record prompt delivery failed", "error", err)
		}
		log.Info("initial prompt delivered", "conversation", id)
		return
	}
	log.Error("initial prompt delivery failed", "error", lastErr)
}

// stillRunning returns a check that the stored session is still Running: an error
// only when it is certainly not (another state, or deleted), never for a database
// hiccup, which is no reason to give up a wait.
func (c *Relay) stillRunning(id string) func(context.Context) error {
	return func(ctx context.Context) error {
		cur, err := c.st.GetSession(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("session %s was deleted", id)
		case err != nil:
			return nil //nolint:nilerr // a database hiccup is no reason to give up the wait
		case cur.State != apiv1.StateRunning:
			return fmt.Errorf("session %s is %s, no longer Running", id, cur.State)
		}
		return nil
	}
}

// waitHealthy waits up to total for the session's OpenCode to answer its health probe,
// giving up early once alive fails (checked every second): a session stopped or deleted
// meanwhile, through any replica, will not come up.
func waitHealthy(ctx context.Context, oc *opencode.Client, total time.Duration, alive func(context.Context) error) error {
	ctx, abandon := context.WithCancelCause(ctx)
	defer abandon(nil)
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := alive(ctx); err != nil && ctx.Err() == nil {
					abandon(err)
					return
				}
			}
		}
	}()
	if _, err := oc.WaitHealthy(ctx, time.Second); err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
			return fmt.Errorf("the session's OpenCode is not answering: %w", cause)
		}
		return fmt.Errorf("the session's OpenCode is not answering: %w", err)
	}
	return nil
}

func isConflict(err error) bool { return err != nil && errors.Is(err, store.ErrConflict) }
