//go:build !failpoints

package failpoint

// Enabled reports whether this binary honours failpoints (built with -tags failpoints).
const Enabled = false

// Hit marks a step; without the failpoints build tag it does nothing.
func Hit(op, step, id string) {}
