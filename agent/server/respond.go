package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing useful to do
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiv1.Error{Body: apiv1.ErrorBody{Code: code, Message: msg}})
}

// storeError maps a store error to an HTTP answer; unexpected errors are logged and
// reported without detail so no internal state leaks.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error, what string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, what+" not found")
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, apiv1.CodeConflict, what+" was changed by someone else: fetch it again and retry")
	case errors.Is(err, store.ErrQuotaExceeded):
		writeError(w, http.StatusTooManyRequests, apiv1.CodeQuotaExceeded, fmt.Sprintf("you already have the maximum of %d active sessions: stop or delete one first", s.opts.MaxActiveSessions))
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "the database is unavailable: try again shortly")
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		// The client went away; nothing to answer.
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, apiv1.CodeInternal, "internal error: see the agent's log")
	}
}

// decode reads a JSON body strictly: bounded size, no unknown fields, one value.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, apiv1.CodeBadRequest, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, apiv1.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, apiv1.CodeTooLarge, fmt.Sprintf("request body is larger than %d bytes", apiv1.MaxBodyBytes))
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "request body is empty: send a JSON object")
		default:
			writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "invalid JSON body: "+err.Error())
		}
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, apiv1.CodeBadRequest, "invalid JSON body: more than one value")
		return false
	}
	return true
}

// recoverer turns a handler panic into a 500 and a log line instead of a dropped connection.
func recoverer(log hclog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeError(w, http.StatusInternalServerError, apiv1.CodeInternal, "internal error: see the agent's log")
			}
		}()
		next.ServeHTTP(w, r)
	})
}
