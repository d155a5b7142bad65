package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/pkg/version"
)

// asUser is a transport that signs requests in as a test user.
type asUser struct {
	name string
	next http.RoundTripper
}

func (a asUser) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-User", a.name)
	return a.next.RoundTrip(r)
}

// TestVersionSkew: the plugin's client and the agent tell each other their versions; a
// plugin outside the agent's window gets one line saying which to upgrade, once however
// many requests it makes, and one inside it gets none. The version endpoint reports the
// chart's version and the window.
func TestVersionSkew(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.Version, o.ChartVersion = "0.3.0", "0.3.1" })
	hc := &http.Client{Transport: asUser{"alice", http.DefaultTransport}}
	ctx := context.Background()
	for _, c := range []struct {
		plugin string
		want   string
	}{
		{"0.1.4", "kubectl-agents 0.1.4 is too old for the agent 0.3.0 (it supports plugins 0.2 to 0.4): upgrade the plugin with `kubectl krew upgrade agents`"},
		{"0.5.0", "kubectl-agents 0.5.0 is too new for the agent 0.3.0 (it supports plugins 0.2 to 0.4): ask your platform team to upgrade the agent"},
		{"0.4.2", ""},
		{"dev", ""},
	} {
		var warnings []string
		cl, err := client.New(e.srv.URL, hc, client.WithVersion(c.plugin, func(text string) { warnings = append(warnings, text) }))
		if err != nil {
			t.Fatal(err)
		}
		var info *struct{ v, chart, window string }
		for range 3 {
			v, err := cl.Version(ctx)
			if err != nil {
				t.Fatal(err)
			}
			info = &struct{ v, chart, window string }{v.Version, v.ChartVersion, v.SupportedClients}
			if _, err := cl.WhoAmI(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if *info != (struct{ v, chart, window string }{"0.3.0", "0.3.1", "0.2 to 0.4"}) {
			t.Errorf("version endpoint: %+v", *info)
		}
		switch {
		case c.want == "" && len(warnings) != 0:
			t.Errorf("plugin %s: warned %q", c.plugin, warnings)
		case c.want != "" && (len(warnings) != 1 || !strings.HasPrefix(warnings[0], c.want)):
			t.Errorf("plugin %s: warnings %q, want one line starting %q", c.plugin, warnings, c.want)
		}
	}

	// Every answer names the agent's version; a client that says nothing gets no warning.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.Header.Get(version.HeaderAgent) != "0.3.0" || resp.Header.Get("Warning") != "" {
		t.Errorf("/healthz headers: %s=%q Warning=%q", version.HeaderAgent, resp.Header.Get(version.HeaderAgent), resp.Header.Get("Warning"))
	}
}
