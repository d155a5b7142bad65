package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/conversation"
	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.drivableSession(w, r, "session.message", "send prompts to")
	if !ok {
		return
	}
	var req apiv1.SendMessageRequest
	if !decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "text: the prompt is empty")
		return
	}
	if len(req.Text) > apiv1.MaxPromptBytes {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("text: %d bytes is more than the maximum %d", len(req.Text), apiv1.MaxPromptBytes))
		return
	}
	if err := s.opts.Conversation.Send(r.Context(), sess, req.Text); err != nil {
		s.record(r, "session.message", sess.ID, "error", err.Error())
		// A stop or delete (through any replica) may have won the race since the
		// session was read: then the answer is that, not an unreachable OpenCode.
		if cur, gerr := s.opts.Store.GetSession(r.Context(), sess.ID); errors.Is(gerr, store.ErrNotFound) {
			httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "session "+sess.ID+" not found: it was deleted")
			return
		} else if gerr == nil && cur.State != apiv1.StateRunning {
			httperr.Write(w, http.StatusConflict, apiv1.CodeNotRunning, fmt.Sprintf("session %s is %s, not Running, so the message was not delivered: start it with `kubectl agents session start %s`", sess.ID, cur.State, sess.ID))
			return
		}
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	s.opts.Sessions.Touch(r.Context(), sess.ID, "message")
	s.record(r, "session.message", sess.ID, "success", "by "+id.Display())
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
}

// sessionLogs answers the conversation: the agent's recorded transcript, merged with
// what the session's OpenCode has now while it runs. A stopped session answers its
// transcript, and so does a deleted one (to its owner, admins, and anyone when it was
// not private) until the retention pruner removes it.
func (s *Server) sessionLogs(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("id")
	if err := apiv1.ValidateSessionID(sid); err != nil {
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
		return
	}
	id, ok := s.authorize(w, r, apiv1.VerbGet, sid)
	if !ok {
		return
	}
	ctx := r.Context()
	sess, err := s.opts.Store.GetSession(ctx, sid)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.storeError(w, r, err, "session "+sid)
		return
	}
	head, recorded, terr := conversation.Transcript(ctx, s.opts.Store, sid)
	if terr != nil && !errors.Is(terr, store.ErrNotFound) {
		s.storeError(w, r, terr, "the transcript of session "+sid)
		return
	}
	// Visibility as for the session itself; a deleted one's is the transcript's.
	owner := sess
	if owner == nil && head != nil {
		owner = &store.Session{ID: sid, OwnerID: head.OwnerID, Private: head.Private}
	}
	if owner == nil || !auth.CanView(id, owner) {
		if owner != nil {
			s.record(r, "session.get", sid, "denied", "private session of another user")
		}
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, "session "+sid+" not found (and no transcript of it is kept)")
		return
	}
	out := apiv1.MessageList{Items: recorded, Source: apiv1.TranscriptRecorded}
	if sess == nil {
		out.Deleted = head.DeletedAt
	}
	if sess != nil && sess.State == apiv1.StateRunning {
		live, err := s.opts.Conversation.Messages(ctx, sess)
		switch {
		case err == nil:
			out.Items, out.Source = conversation.Merge(recorded, live), apiv1.TranscriptLive
		case len(recorded) == 0:
			httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode, and nothing of its conversation is recorded yet: "+err.Error())
			return
		default:
			// What was recorded is the best answer there is; Source says so.
			s.log.Warn("read the live conversation failed; answering the recorded one", "session", sid, "error", err)
		}
	}
	if out.Items == nil {
		out.Items = []apiv1.Message{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) sessionEvents(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	// Opening the stream is activity; what streams afterwards is not, or a browser tab
	// left open would keep the session from ever reaching its idle timeout.
	tw := &startedWriter{ResponseWriter: w, onStart: func() { s.opts.Sessions.Touch(r.Context(), sess.ID, "events") }}
	// The stream ends when the session stops (through any replica): a client then
	// learns it at once instead of holding a stream that only carries keep-alives.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go s.cancelWhenNotRunning(ctx, sess.ID, runningCheckEvery, cancel) // read here: the goroutine may outlive a test that changes it
	err := s.opts.Conversation.Events(ctx, sess, tw)
	if err == nil || ctx.Err() != nil {
		return
	}
	if !tw.started {
		// Nothing sent yet: without this the client would get an empty 200.
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	s.log.Warn("event stream ended", "session", sess.ID, "error", err)
}

// runningCheckEvery is how often an open event stream checks its session still runs.
var runningCheckEvery = 2 * time.Second

// cancelWhenNotRunning calls cancel (checking every every) once session id is deleted or leaves Running (a
// database hiccup is not taken for either), or when ctx ends.
func (s *Server) cancelWhenNotRunning(ctx context.Context, id string, every time.Duration, cancel func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := s.opts.Store.GetSession(ctx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && cur.State != apiv1.StateRunning) {
			cancel()
			return
		}
	}
}

// startedWriter remembers whether a response was started, so a handler can still
// answer an error when the streaming call it delegated to failed before writing, and
// calls onStart (when set) as it starts.
type startedWriter struct {
	http.ResponseWriter
	started bool
	onStart func()
}

func (w *startedWriter) start() {
	if !w.started {
		w.started = true
		if w.onStart != nil {
			w.onStart()
		}
	}
}

func (w *startedWriter) WriteHeader(code int) {
	w.start()
	w.ResponseWriter.WriteHeader(code)
}

func (w *startedWriter) Write(b []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController flush the underlying writer.
func (w *startedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) attachSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	if !auth.CanSeePassword(id, sess) {
		s.record(r, "session.attach-direct", sess.ID, "denied", "not the owner")
		httperr.Write(w, http.StatusForbidden, apiv1.CodeForbidden, "a direct attach needs the session's password, which only its owner gets: attach without --direct to go through the agent")
		return
	}
	pw, err := s.opts.Sessions.Password(r.Context(), sess)
	if err != nil {
		httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "the session's password is not available yet: "+err.Error())
		return
	}
	s.opts.Sessions.Touch(r.Context(), sess.ID, "attach")
	s.record(r, "session.attach-direct", sess.ID, "success", "")
	writeJSON(w, http.StatusOK, apiv1.AttachInfo{Password: pw, PodName: sess.PodName, PodNamespace: sess.PodNamespace})
}

func (s *Server) proxySession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.drivableSession(w, r, "session.proxy", "attach to")
	if !ok {
		return
	}
	// The request, and later what the caller sends on a long-lived stream, is activity;
	// so is the stream staying open (an attached TUI's events, however quiet).
	defer s.touchWhileOpen(r.Context(), sess.ID, ActivityAttached)()
	s.opts.Conversation.Proxy(w, r, sess, "/"+r.PathValue("rest"), func() {
		s.opts.Sessions.Touch(context.WithoutCancel(r.Context()), sess.ID, "proxy")
	})
}

// ActivityAttached is the activity source recorded while a client holds a proxied
// request to the session open.
const ActivityAttached = apiv1.ActivityAttached

// attachedTouchEvery is how often a session is recorded active while a proxied request
// to it stays open; well under the shortest idle timeout (a minute). The record goes to
// the store, so whichever replica stops idle sessions sees it.
var attachedTouchEvery = 30 * time.Second

// touchWhileOpen records activity of session id every attachedTouchEvery until the
// returned stop is called or ctx ends; a request that ends sooner records nothing.
// Once stop returns, nothing more is recorded.
func (s *Server) touchWhileOpen(ctx context.Context, id, source string) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	t := time.NewTicker(attachedTouchEvery)
	go func() {
		defer close(exited)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				s.opts.Sessions.Touch(context.WithoutCancel(ctx), id, source)
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
