package cmd

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// SessionGetOptions are the inputs of `session get`.
type SessionGetOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags
	IDs        []string
}

// NewCmdSessionGet returns `session get`.
func NewCmdSessionGet(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionGetOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	cmd := &cobra.Command{
		Use:   "get SESSION...",
		Short: "Show sessions",
		Long: `Show one or more sessions by name, as a table or in full with -o yaml or -o json.
With -o wide (or modelSpend in -o json) it shows what the session's own LiteLLM key has
spent, when the agent gives sessions LiteLLM keys, the branch the session's workspace is
on (currentBranch) and the pull request the agent opened from it on GitHub
(pullRequestURL), looked up with the session's own token; a stopped session shows what
was last seen.`,
		Example: `  kubectl agents session get SESSION
  kubectl agents session get SESSION -o wide
  kubectl agents session get SESSION -o yaml
  kubectl agents session get SESSION -o jsonpath='{.state}'
  kubectl agents session get SESSION -o jsonpath='{.pullRequestURL}'`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeSessions(f, true),
		RunE:              runOptions(o),
	}
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Complete takes the sessions from the arguments.
func (o *SessionGetOptions) Complete(_ *cobra.Command, args []string) error {
	o.IDs = args
	return nil
}

// Validate checks the arguments.
func (o *SessionGetOptions) Validate() error {
	if len(o.IDs) == 0 {
		return errors.New("name at least one session: kubectl agents session get SESSION")
	}
	if err := checkSessionIDs(o.IDs...); err != nil {
		return err
	}
	return o.PrintFlags.Validate()
}

// Run fetches and prints the sessions; missing ones are reported after the others
// print, like kubectl get.
func (o *SessionGetOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	var found []apiv1.Session
	var errs []error
	for _, id := range o.IDs {
		s, err := c.GetSession(ctx, id)
		if err != nil {
			errs = append(errs, sessionError(err, "get", id))
			continue
		}
		found = append(found, *s)
	}
	if len(found) > 0 {
		o.PrintFlags.single = true
		if err := o.PrintFlags.Print(o.Out, found, len(o.IDs) > 1); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
