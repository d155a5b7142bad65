package version

import (
	"strings"
	"testing"
)

func TestSkew(t *testing.T) {
	for _, c := range []struct {
		plugin, agent, want string
	}{
		{"0.3.0", "0.3.1", ""},
		{"v0.2.0", "0.3.0", ""},
		{"0.4.5", "0.3.0", ""},
		{"dev", "0.3.0", ""},
		{"0.3.0", "9171744", ""},
		{"0.1.0", "0.3.0", "too old for the agent 0.3.0 (it supports plugins 0.2 to 0.4): upgrade the plugin"},
		{"0.5.0-rc.1", "0.3.0", "too new for the agent 0.3.0 (it supports plugins 0.2 to 0.4): ask your platform team to upgrade the agent"},
		{"1.0.0", "0.9.0", "too new"},
		{"0.9.0", "1.0.0", "upgrade the plugin with `kubectl krew upgrade agents`"},
	} {
		got := Skew(c.plugin, c.agent)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("Skew(%q, %q) = %q, want one containing %q", c.plugin, c.agent, got, c.want)
		}
		if strings.Contains(got, "\n") {
			t.Errorf("Skew(%q, %q) is more than one line: %q", c.plugin, c.agent, got)
		}
	}
}

func TestWarningHeader(t *testing.T) {
	text := `upgrade "the plugin"`
	if got := ParseWarningHeader(WarningHeader(text)); got != text {
		t.Errorf("round trip: %q", got)
	}
	for _, v := range []string{`199 - "misc"`, `299 -`, `garbage`} {
		if got := ParseWarningHeader(v); got != "" {
			t.Errorf("ParseWarningHeader(%q) = %q", v, got)
		}
	}
	if got := ParseWarningHeader(`299 kube-apiserver "deprecated"`); got != "deprecated" {
		t.Errorf("an agent name: %q", got)
	}
}
