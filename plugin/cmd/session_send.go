package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// SessionSendOptions are the inputs of `session send`.
type SessionSendOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	ID      string
	Text    string
}

// NewCmdSessionSend returns `session send`.
func NewCmdSessionSend(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionSendOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "send SESSION [TEXT... | -]",
		Short: "Send a prompt to a session",
		Long: `Send a message to the agent in a running session, as if typed in its TUI. The
text comes from the arguments, or from standard input when there are none or the
only one is "-". The agent works on it in the background; follow its answer with
"kubectl agents session logs SESSION -f".`,
		Example: `  kubectl agents session send SESSION "now add a test for it"
  git diff | kubectl agents session send SESSION -
  kubectl agents session send SESSION "explain this" && kubectl agents session logs SESSION -f`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(o),
	}
	return cmd
}

// Complete takes the session and the text from the arguments, or the text from standard
// input when there is none or it is "-".
func (o *SessionSendOptions) Complete(_ *cobra.Command, args []string) error {
	o.ID = args[0]
	o.Text = strings.Join(args[1:], " ")
	if len(args) == 1 || o.Text == "-" {
		b, err := io.ReadAll(io.LimitReader(o.In, apiv1.MaxPromptBytes+1))
		if err != nil {
			return fmt.Errorf("read the prompt from standard input: %w", err)
		}
		o.Text = string(b)
	}
	return nil
}

// Validate checks the prompt.
func (o *SessionSendOptions) Validate() error {
	if err := checkSessionIDs(o.ID); err != nil {
		return err
	}
	if strings.TrimSpace(o.Text) == "" {
		return errors.New("the prompt is empty: pass it as arguments or on standard input")
	}
	if len(o.Text) > apiv1.MaxPromptBytes {
		return fmt.Errorf("the prompt is more than %d bytes, the most the agent accepts: split it into several messages", apiv1.MaxPromptBytes)
	}
	return nil
}

// Run sends the message.
func (o *SessionSendOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	if err := c.SendMessage(ctx, o.ID, o.Text); err != nil {
		if isNotRunning(err) {
			return fmt.Errorf("send to %s: %w; start it with `kubectl agents session start %s`", sessionRef(o.ID), err, o.ID)
		}
		return sessionError(err, "send to", o.ID)
	}
	fmt.Fprintf(o.Out, "%s: message sent\n", sessionRef(o.ID))
	return nil
}
