package version

import (
	"fmt"
	"strconv"
	"strings"
)

// Headers by which the plugin and the agent tell each other their versions on every request:
// the plugin sends HeaderClient, the agent answers with HeaderAgent and, when the two are
// outside the supported window, a Warning header (RFC 9111's code 299, as kube-apiserver
// warns kubectl) with Skew's one line, which the plugin prints once.
const (
	HeaderClient = "X-Cake-Client-Version"
	HeaderAgent  = "X-Cake-Agent-Version"
)

// SupportedMinorSkew is how many minor versions a plugin may be ahead of or behind the agent
// within one major version: the window the v1 API promises to keep working.
const SupportedMinorSkew = 1

// Skew returns one line saying which side to upgrade when plugin and agent are outside the
// supported window (same major version, minor versions at most SupportedMinorSkew apart),
// and "" when they are within it or either is not a release (a dev build).
func Skew(plugin, agent string) string {
	pMaj, pMin, ok1 := majorMinor(plugin)
	aMaj, aMin, ok2 := majorMinor(agent)
	if !ok1 || !ok2 {
		return ""
	}
	d := pMin - aMin
	if d < 0 {
		d = -d
	}
	if pMaj == aMaj && d <= SupportedMinorSkew {
		return ""
	}
	window := SupportedClients(agent)
	if pMaj < aMaj || pMaj == aMaj && pMin < aMin {
		return fmt.Sprintf("kubectl-agents %s is too old for the agent %s (it supports plugins %s): upgrade the plugin with `kubectl krew upgrade agents`", plugin, agent, window)
	}
	return fmt.Sprintf("kubectl-agents %s is too new for the agent %s (it supports plugins %s): ask your platform team to upgrade the agent (helm upgrade of the cake-agents chart), or install plugin %d.%d from https://github.com/cakeai/cake-agents/releases", plugin, agent, window, aMaj, aMin)
}

// SupportedClients is the range of plugin versions an agent of version agent supports, as
// "0.2 to 0.4"; "" when agent is not a release (a development agent supports any).
func SupportedClients(agent string) string {
	aMaj, aMin, ok := majorMinor(agent)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d.%d to %d.%d", aMaj, max(aMin-SupportedMinorSkew, 0), aMaj, aMin+SupportedMinorSkew)
}

// majorMinor parses "v1.2.3", "1.2" or "1.2.0-rc.1"; anything else (such as "dev" or a
// commit) is not a release.
func majorMinor(v string) (int, int, bool) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}

// WarningHeader is the value of a Warning header carrying text (code 299, no agent name).
func WarningHeader(text string) string {
	return "299 - " + strconv.Quote(text)
}

// ParseWarningHeader returns the text of a Warning header value of code 299 ("" for any other).
func ParseWarningHeader(v string) string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "299 ")
	if !ok {
		return ""
	}
	_, quoted, ok := strings.Cut(rest, " ")
	if !ok {
		return ""
	}
	text, err := strconv.Unquote(strings.TrimSpace(quoted))
	if err != nil {
		return ""
	}
	return text
}
