package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// SessionWhyOptions are the inputs of `session why`.
type SessionWhyOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	ID      string
	// Now is the clock (tests pin it).
	Now func() time.Time
}

// NewCmdSessionWhy returns `session why`.
func NewCmdSessionWhy(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionWhyOptions{IOStreams: streams, Factory: f, Now: time.Now}
	cmd := &cobra.Command{
		Use:   "why SESSION",
		Short: "Explain a session's state: what keeps it alive and when it will stop",
		Long: `Explain why a session is in its state: what last kept it alive, when the idle
timeout will stop it, when its TTL will delete it, and why it failed or stopped.`,
		Example:           `  kubectl agents session why SESSION`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(o),
	}
	return cmd
}

// Complete takes the session from the arguments.
func (o *SessionWhyOptions) Complete(_ *cobra.Command, args []string) error {
	o.ID = args[0]
	return nil
}

// Validate checks the arguments.
func (o *SessionWhyOptions) Validate() error {
	if o.ID == "" {
		return errors.New("name the session: kubectl agents session why SESSION")
	}
	return checkSessionIDs(o.ID)
}

// Run prints the explanation.
func (o *SessionWhyOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	s, err := c.GetSession(ctx, o.ID)
	if err != nil {
		return sessionError(err, "get", o.ID)
	}
	fmt.Fprint(o.Out, explainSession(s, o.Now()))
	return nil
}

func ago(now, t time.Time) string { return duration.HumanDuration(now.Sub(t)) + " ago" }

func in(now, t time.Time) string {
	if !t.After(now) {
		return "now"
	}
	return "in " + duration.HumanDuration(t.Sub(now))
}

// explainSession renders what `session why` prints.
func explainSession(s *apiv1.Session, now time.Time) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, "  "+format+"\n", args...) }
	state := string(s.State)
	if s.Reason != "" {
		state += " (" + s.Reason + ")"
	}
	fmt.Fprintf(&b, "%s is %s.\n", sessionRef(s.ID), state)
	if s.Message != "" {
		line("%s", s.Message)
	}
	switch s.State {
	case apiv1.StatePending, apiv1.StateStarting:
		line("The agent is starting its pod%s; wait with `kubectl agents session create --wait` or check again.", podSuffix(s))
	case apiv1.StateRunning:
		if s.StartedAt != nil {
			line("Running since %s%s.", ago(now, *s.StartedAt), podSuffix(s))
		}
	case apiv1.StateStopped:
		line("Start it again with `kubectl agents session start %s`.", s.ID)
	case apiv1.StateFailed:
		line("Delete it with `kubectl agents session delete %s`, or try `kubectl agents session start %s`.", s.ID, s.ID)
	}
	if !s.LastActivityAt.IsZero() {
		src := ""
		if s.LastActivitySource != "" {
			src = " (" + s.LastActivitySource + ")"
			switch s.LastActivitySource {
			case apiv1.ActivityOpenCodeBusy:
				src = " (opencode-busy: OpenCode was working, a model answering or a tool running)"
			case apiv1.ActivityAttached:
				src = " (attached: a client held a connection open)"
			case apiv1.ActivityReady:
				src = " (ready: the session became Running; the idle timer counts from then)"
			case apiv1.ActivityPromptPending:
				src = " (prompt-pending: its initial prompt was still being delivered)"
			}
		}
		line("Last activity %s%s.", ago(now, s.LastActivityAt), src)
	}
	if s.State.Active() {
		switch {
		case s.IdleDeadline != nil:
			line("Idle timeout %s: it stops %s (%s) unless something keeps it busy: OpenCode working, an attached TUI, a message, or requests through the proxy.",
				s.IdleTimeout.Duration, in(now, *s.IdleDeadline), s.IdleDeadline.UTC().Format(time.RFC3339))
		case s.IdleTimeout.Duration == 0:
			line("No idle timeout: it runs until stopped or deleted.")
		}
	}
	if s.ExpiresAt != nil {
		line("TTL %s: it will be deleted %s (%s).", s.TTL.Duration, in(now, *s.ExpiresAt), s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if s.Persistent {
		line("Its workspace is on a volume: it survives stop and start, and is deleted with the session.")
	} else {
		line("Its workspace is ephemeral: stopping the session discards it (use --persistent to keep it).")
	}
	return b.String()
}

func podSuffix(s *apiv1.Session) string {
	if s.PodName == "" {
		return ""
	}
	return " in pod " + s.PodNamespace + "/" + s.PodName
}
