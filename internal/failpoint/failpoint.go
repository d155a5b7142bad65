// Package failpoint lets the reliability tests crash the agent at a named step of a
// session operation, so every step's crash is tried rather than the few a timed kill
// happens to hit.
//
// Code marks a step with Hit("create", "secret", id): the operation, the step within it
// and the session it acts on. In a binary built with the build tag "failpoints", a Hit
// that matches the environment variable CAKE_AGENT_FAILPOINT writes one line to stderr
// and kills its own process with SIGKILL: no deferred function, no graceful shutdown,
// as if the node died. The variable names "operation.step" (any session) or
// "operation.step@id" (only that session, so the reconciler's work on others does not
// set it off). Without the tag (every release build) Hit is an empty function the
// compiler inlines away, and the variable is never read.
package failpoint

// EnvVar names the step a failpoints build crashes at.
const EnvVar = "CAKE_AGENT_FAILPOINT"

// Marker starts the line a failpoints build writes before it crashes, followed by the
// armed step; tests look for it in the agent's log.
const Marker = "failpoint: crashing at "

// Name is the value of EnvVar that arms op.step, for session id when id is not empty.
func Name(op, step, id string) string {
	if id == "" {
		return op + "." + step
	}
	return op + "." + step + "@" + id
}
