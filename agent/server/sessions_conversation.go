package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/auth"
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

func (s *Server) sessionLogs(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	msgs, err := s.opts.Conversation.Messages(r.Context(), sess)
	if err != nil {
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	if msgs == nil {
		msgs = []apiv1.Message{}
	}
	writeJSON(w, http.StatusOK, apiv1.MessageList{Items: msgs})
}

func (s *Server) sessionEvents(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.runningSession(w, r, apiv1.VerbGet)
	if !ok {
		return
	}
	// Opening the stream is activity; what streams afterwards is not, or a browser tab
	// left open would keep the session from ever reaching its idle timeout.
	tw := &startedWriter{ResponseWriter: w, onStart: func() { s.opts.Sessions.Touch(r.Context(), sess.ID, "events") }}
	err := s.opts.Conversation.Events(r.Context(), sess, tw)
	if err == nil || r.Context().Err() != nil {
		return
	}
	if !tw.started {
		// Nothing sent yet: without this the client would get an empty 200.
		httperr.Write(w, http.StatusBadGateway, apiv1.CodeUnavailable, "could not reach the session's OpenCode: "+err.Error())
		return
	}
	s.log.Warn("event stream ended", "session", sess.ID, "error", err)
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
