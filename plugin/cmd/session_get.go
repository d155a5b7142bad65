package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// SessionGetOptions are the inputs of `session get`.
type SessionGetOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags
	IDs        []string

	client *client.Client
}

// NewCmdSessionGet returns `session get`.
func NewCmdSessionGet(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionGetOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	cmd := &cobra.Command{
		Use:   "get SESSION...",
		Short: "Show sessions",
		Long:  `Show one or more sessions by name, as a table or in full with -o yaml or -o json.`,
		Example: `  kubectl agents session get SESSION
  kubectl agents session get SESSION -o yaml
  kubectl agents session get SESSION -o jsonpath='{.state}'`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeSessions(f, true),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.IDs = args
			// Flags first: a typo is reported without reaching the agent.
			if err := o.Validate(); err != nil {
				return err
			}
			if err := o.Complete(cmd.Context()); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Complete connects to the agent.
func (o *SessionGetOptions) Complete(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	o.client = c
	return err
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
	var found []apiv1.Session
	var errs []error
	for _, id := range o.IDs {
		s, err := o.client.GetSession(ctx, id)
		if err != nil {
			if client.IsNotFound(err) {
				err = fmt.Errorf("session %q not found", id)
			} else {
				err = fmt.Errorf("get %s: %w", sessionRef(id), err)
			}
			errs = append(errs, err)
			continue
		}
		found = append(found, *s)
	}
	if len(found) > 0 {
		if err := o.PrintFlags.Print(o.Out, found, len(o.IDs) > 1); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
