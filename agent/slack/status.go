package slack

import (
	"context"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Status reports the Slack integration's state for GET /api/v1/integrations.
type Status struct {
	// Enabled: the events endpoint is served. Configured: the bot token and the signing
	// secret are both set.
	Enabled, Configured bool
	// Client checks the token with auth.test (nil when no token is set).
	Client *Client
}

// Name is the integration's name.
func (s *Status) Name() string { return Source }

// Check implements server.Integration: configured, enabled, and whether auth.test
// succeeds with the bot token.
func (s *Status) Check(ctx context.Context) apiv1.Integration {
	st := apiv1.Integration{Name: Source, Enabled: s.Enabled, Configured: s.Configured}
	switch {
	case !s.Configured && !s.Enabled:
		st.Detail = "off: set slack.enabled and slack.secret in the chart's values"
		return st
	case !s.Enabled:
		st.Detail = "configured but not enabled: set slack.enabled=true in the chart's values"
	}
	if s.Client == nil || s.Client.Token == "" {
		if st.Detail == "" {
			st.Detail = "no bot token is set"
		}
		return st
	}
	at, err := s.Client.AuthTest(ctx)
	if err != nil {
		st.Detail = "auth.test failed: " + err.Error()
		return st
	}
	st.Reachable = true
	if s.Enabled {
		st.Detail = "bot @" + at.User + " in workspace " + at.Team
	} else {
		st.Detail += " (the token works: bot @" + at.User + " in workspace " + at.Team + ")"
	}
	return st
}
