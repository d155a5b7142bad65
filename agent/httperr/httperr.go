// Package httperr writes the agent API's error answers: the apiv1.Error envelope
// {"error":{"code":"...","message":"..."}} that pkg/client decodes, with the headers
// every such answer carries. The server's handlers, the authentication middleware, the
// session proxy and the conversation relay all answer through Write, so an error looks
// the same whichever layer refused the request.
//
// Renderer is the same answer as a function of the request, for middleware that also
// guards the web UI: the UI passes its own renderer and shows an HTML page instead.
package httperr

import (
	"encoding/json"
	"net/http"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// RetryAfter is the Retry-After of a 503 whose writer set none: the database or the
// Kubernetes API is out of reach, and a client should try again in a moment rather
// than fail.
const RetryAfter = "2"

// Challenge is the WWW-Authenticate of every 401: the API takes bearer tokens (personal
// access tokens and Kubernetes tokens), and HTTP requires a 401 to name a scheme.
const Challenge = `Bearer realm="cake-agents"`

// Write answers with status and an apiv1.Error of code and msg. Errors are never cached;
// a 503 says when to retry (RetryAfter unless the caller set Retry-After already); a
// 401 carries Challenge.
func Write(w http.ResponseWriter, status int, code, msg string) {
	h := w.Header()
	switch status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", Challenge)
	case http.StatusServiceUnavailable:
		if h.Get("Retry-After") == "" {
			h.Set("Retry-After", RetryAfter)
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// Indented like the API's other answers, which people read with curl.
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(apiv1.Error{Body: apiv1.ErrorBody{Code: code, Message: msg}}) // the client went away; nothing useful to do
}

// Renderer answers a request that middleware refuses, with an HTTP status, one of the
// apiv1 Code constants and a message for people.
type Renderer func(w http.ResponseWriter, r *http.Request, status int, code, msg string)

// JSON is the API's Renderer: it answers with Write.
func JSON(w http.ResponseWriter, _ *http.Request, status int, code, msg string) {
	Write(w, status, code, msg)
}
