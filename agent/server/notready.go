package server

import (
	"net/http"

	"github.com/cakeai/cake-agents/agent/httperr"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// NotReady serves while the agent is still starting (the database not reached yet):
// /healthz answers 200 because the process is alive, /readyz 503 with the pending
// checks, and everything else 503 so clients retry rather than fail hard.
func NotReady(pending func() map[string]error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("ok\n"))
		case "/readyz":
			out := apiv1.Readiness{Checks: map[string]string{}}
			for k, err := range pending() {
				out.Checks[k] = err.Error()
			}
			writeJSON(w, http.StatusServiceUnavailable, out)
		default:
			w.Header().Set("Retry-After", "2")
			httperr.Write(w, http.StatusServiceUnavailable, apiv1.CodeUnavailable, "the agent is starting (waiting for its database): retry in a few seconds")
		}
	})
}
