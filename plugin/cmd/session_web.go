package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cakeai/cake-agents/pkg/client"
)

// SessionWebOptions are the inputs of `session web`.
type SessionWebOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	ID      string
	Output  string
}

// NewCmdSessionWeb returns `session web`.
func NewCmdSessionWeb(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionWebOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "web SESSION",
		Short: "Print a single-use link that opens the session's OpenCode web UI in a browser",
		Long: `Print a short-lived link to the session's own OpenCode web UI, served by the agent on the
session's host (<session>.<domain>, controlPlane.sessionWeb in the chart). The link works
once, within 30 seconds; opening it signs the browser in to that host alone, as you. Open it
yourself rather than sharing it: whoever opens it first is signed in as you.

Without session hosts, kubectl agents port-forward SESSION serves the same UI on a local port.`,
		Example: `  kubectl agents session web SESSION
  xdg-open "$(kubectl agents session web SESSION)"`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSessions(f, true),
		RunE:              runOptions(o),
	}
	addStructuredOutputFlag(cmd, &o.Output, "Output format: json or yaml (the URL and when it expires)")
	return cmd
}

// Complete takes the session from the arguments.
func (o *SessionWebOptions) Complete(_ *cobra.Command, args []string) error {
	o.ID = args[0]
	return nil
}

// Validate checks the session id and -o.
func (o *SessionWebOptions) Validate() error {
	if err := validateStructuredOutput(o.Output); err != nil {
		return err
	}
	return checkSessionIDs(o.ID)
}

// Run asks the agent for the link and prints it; when to open it goes to stderr, so the
// URL alone can be piped to a browser.
func (o *SessionWebOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	w, err := c.SessionWeb(ctx, o.ID)
	if client.IsNotFound(err) {
		// Not found is also how an agent without session hosts answers; its message says
		// how to enable them, which is the one to show when the session exists.
		if _, gerr := c.GetSession(ctx, o.ID); gerr == nil {
			return fmt.Errorf("open the web UI of %s: %w", sessionRef(o.ID), err)
		}
	}
	if err != nil {
		return sessionError(err, "open the web UI of", o.ID)
	}
	return printStructured(o.Out, o.Output, w, func() error {
		fmt.Fprintln(o.Out, w.URL)
		fmt.Fprintf(o.ErrOut, "Open it within %s (until %s); it signs in whoever opens it, as you: do not share it.\n", time.Until(w.ExpiresAt).Round(time.Second), w.ExpiresAt.Local().Format(time.TimeOnly))
		return nil
	})
}
