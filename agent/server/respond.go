package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/httperr"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// Compact: indenting a page of sessions cost a fifth of a list's CPU, and every
	// client (the plugin, the web UI, jq) formats it for people itself.
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing useful to do
}

// storeError maps a store error to an HTTP answer; unexpected errors are logged and
// reported without detail so no internal state leaks.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error, what string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		httperr.Write(w, http.StatusNotFound, apiv1.CodeNotFound, what+" not found")
	case errors.Is(err, store.ErrConflict):
		httperr.Write(w, http.StatusConflict, apiv1.CodeConflict, what+" was changed by someone else: fetch it again and retry")
	case errors.Is(err, store.ErrQuotaExceeded):
		httperr.Write(w, http.StatusTooManyRequests, apiv1.CodeQuotaExceeded, fmt.Sprintf("you already have the maximum of %d active sessions: stop or delete one first", s.opts.MaxActiveSessions))
	case errors.Is(err, store.ErrInvalid):
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "the database is unavailable: try again shortly")
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		// The client went away; nothing to answer.
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		httperr.Write(w, http.StatusInternalServerError, apiv1.CodeInternal, "internal error: see the agent's log")
	}
}

// decode reads a JSON body strictly: bounded size, no unknown fields, one value. A
// rejected body gets an answer that says what to fix: 413 past apiv1.MaxBodyBytes
// (whether or not a JSON value ended before the limit), 400 naming an unknown or
// mistyped field, 415 for another Content-Type.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		httperr.Write(w, http.StatusUnsupportedMediaType, apiv1.CodeBadRequest, "Content-Type must be application/json")
		return false
	}
	tooLarge := func() bool {
		httperr.Write(w, http.StatusRequestEntityTooLarge, apiv1.CodeTooLarge, fmt.Sprintf("request body is larger than %d bytes", apiv1.MaxBodyBytes))
		return false
	}
	if r.ContentLength > apiv1.MaxBodyBytes {
		return tooLarge() // refused before reading a byte of it
	}
	body := http.MaxBytesReader(w, r.Body, apiv1.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			tooBig  *http.MaxBytesError
			typeErr *json.UnmarshalTypeError
			syntax  *json.SyntaxError
		)
		switch {
		case errors.As(err, &tooBig):
			return tooLarge()
		case errors.Is(err, io.EOF):
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "request body is empty: send a JSON object")
		case errors.As(err, &typeErr) && typeErr.Field != "":
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("invalid JSON body: field %q: want %s, got %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value))
		case errors.As(err, &typeErr):
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("invalid JSON body: want a JSON object, got %s", typeErr.Value))
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "invalid JSON body: "+err.Error())
		default:
			if field, ok := unknownField(err); ok {
				httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, fmt.Sprintf("invalid JSON body: unknown field %q; the fields are %s", field, strings.Join(jsonFields(v), ", ")))
				return false
			}
			// A field's own decoder (durations) refused its value.
			httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "invalid JSON body: "+err.Error())
		}
		return false
	}
	// The rest must be white space: a second value is an error, and so is a body that
	// goes past the limit after a value ended.
	rest, err := io.ReadAll(io.MultiReader(dec.Buffered(), body))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return tooLarge()
	case err != nil:
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "reading the request body failed: "+err.Error())
		return false
	case len(bytes.TrimLeft(rest, " \t\r\n")) > 0:
		httperr.Write(w, http.StatusBadRequest, apiv1.CodeBadRequest, "invalid JSON body: more than one value")
		return false
	}
	return true
}

// unknownField returns the field named by encoding/json's error for a field the target
// type does not have (it has no error type of its own).
func unknownField(err error) (string, bool) {
	const prefix = "json: unknown field "
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return "", false
	}
	field, uerr := strconv.Unquote(msg[len(prefix):])
	if uerr != nil {
		return msg[len(prefix):], true
	}
	return field, true
}

// jsonFields lists the JSON names of the fields of the struct v points to, for an
// error message that shows what is accepted.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// jsonKind names the JSON form a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
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
				httperr.Write(w, http.StatusInternalServerError, apiv1.CodeInternal, "internal error: see the agent's log")
			}
		}()
		next.ServeHTTP(w, r)
	})
}
