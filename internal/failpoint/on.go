//go:build failpoints

package failpoint

import (
	"os"
	"strings"
	"syscall"
)

// Enabled reports whether this binary honours failpoints (built with -tags failpoints).
const Enabled = true

// The step to crash at, read once: the tests start a process per crash.
var armed, armedID = parse(os.Getenv(EnvVar))

func parse(v string) (name, id string) {
	name, id, _ = strings.Cut(v, "@")
	return name, id
}

// Hit kills this process with SIGKILL when op.step (for session id) is armed.
func Hit(op, step, id string) {
	if armed == "" || (armedID != "" && id != armedID) ||
		len(armed) != len(op)+1+len(step) || armed[:len(op)] != op || armed[len(op)] != '.' || armed[len(op)+1:] != step {
		return
	}
	crash()
}

// crash is a function of its own so that its absence from a release binary can be
// checked in the symbol table.
func crash() {
	// One write, so the line is whole in the log even as the process dies.
	_, _ = os.Stderr.Write([]byte(Marker + os.Getenv(EnvVar) + "\n"))
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way; never return into the step
}
