package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

// Every command's options run in kubectl's order: o.Complete fills in what the flags and
// arguments leave open, o.Validate refuses mistakes in them, o.Run does the work. Complete
// never calls the network and Run is the first to reach for the agent, so a typo is
// reported as such, without waiting for a port-forward or failing on a missing kubeconfig.
// Complete and Validate are optional: a command with nothing to fill in or check has none.

// runner is the part every command's options have.
type runner interface {
	Run(ctx context.Context) error
}

// completer fills in options from the arguments (and, for a few, standard input or which
// flags were given); no network calls.
type completer interface {
	Complete(cmd *cobra.Command, args []string) error
}

// validator checks options before anything is sent.
type validator interface {
	Validate() error
}

// runOptions returns the RunE of a command whose options are o.
func runOptions(o runner) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if c, ok := o.(completer); ok {
			if err := c.Complete(cmd, args); err != nil {
				return err
			}
		}
		if v, ok := o.(validator); ok {
			if err := v.Validate(); err != nil {
				return err
			}
		}
		return o.Run(cmd.Context())
	}
}

// runGroup is the RunE of a command that only groups others: help without arguments, and
// an unknown subcommand named as such rather than ignored.
func runGroup(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q for %q; see %q", args[0], cmd.CommandPath(), cmd.CommandPath()+" --help")
	}
	return cmd.Help()
}
