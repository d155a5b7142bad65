// Package failpoint lets the reliability tests crash the agent at a named step of a
// session operation, so every step's crash is tried rather than the few a timed kill
// happens to hit.
//
// Code marks a step with Hit("create", "secret"), the operation and the step within it.
// In a binary built with the build tag "failpoints", a Hit whose "operation.step" equals
// the environment variable CAKE_AGENT_FAILPOINT (e.g. "create.secret") writes one line
// to stderr and kills its own process with SIGKILL: no deferred function, no graceful
// shutdown, as if the node died. Without the tag (every release build) Hit is an empty
// function of two constant strings that the compiler inlines away, and the variable is
// never read.
package failpoint

// EnvVar names the step a failpoints build crashes at.
const EnvVar = "CAKE_AGENT_FAILPOINT"

// Marker starts the line a failpoints build writes before it crashes, followed by the
// step's name; tests look for it in the agent's log.
const Marker = "failpoint: crashing at "
