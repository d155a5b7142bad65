//go:build failpoints

package failpoint

import (
	"os"
	"syscall"
)

// Enabled reports whether this binary honours failpoints (built with -tags failpoints).
const Enabled = true

// armed is the step to crash at, read once: the tests start a process per crash.
var armed = os.Getenv(EnvVar)

// Hit kills this process with SIGKILL when op.step is the armed step.
func Hit(op, step string) {
	if armed == "" || len(armed) != len(op)+1+len(step) || armed[:len(op)] != op || armed[len(op)] != '.' || armed[len(op)+1:] != step {
		return
	}
	crash(armed)
}

// crash is a separate function so the release build's absence of it can be checked in
// the binary's symbol table.
func crash(name string) {
	// One write, so the line is whole in the log even as the process dies.
	_, _ = os.Stderr.Write([]byte(Marker + name + "\n"))
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way; never return into the step
}
