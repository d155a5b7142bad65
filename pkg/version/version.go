// Package version holds build information stamped in with -ldflags, shared by the
// plugin and the agent so each can report its own version and detect skew.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// These are set at link time, e.g.
//
//	-X github.com/cakeai/cake-agents/pkg/version.Version=v0.1.0
var (
	// Version is the semantic version of the build ("dev" when not stamped).
	Version = "dev"
	// Commit is the git commit the binary was built from.
	Commit = "unknown"
	// Date is the build date in RFC 3339.
	Date = "unknown"
)

// Info describes one binary's build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	// CGO reports whether the binary was built with cgo; the agent refuses to run
	// without it because go-sqlite3 silently compiles to a stub otherwise.
	CGO bool `json:"cgo"`
}

// Get returns the build information of the running binary.
func Get() Info {
	info := Info{
		Version:   Version,
		Commit:    Commit,
		Date:      Date,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "CGO_ENABLED" {
				info.CGO = s.Value == "1"
			}
		}
	}
	return info
}

// String renders the info on one line, as `version` commands print it.
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s, %s)", i.Version, i.Commit, i.Date, i.GoVersion, i.Platform)
}
