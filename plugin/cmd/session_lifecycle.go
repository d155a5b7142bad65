package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// SessionLifecycleOptions are the inputs of `session stop` and `session start`, which
// differ only in the call they make.
type SessionLifecycleOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	IDs     []string
	// Verb is "stop" or "start".
	Verb string
}

func newCmdLifecycle(f *Factory, streams genericiooptions.IOStreams, verb, short, long, example string) *cobra.Command {
	o := &SessionLifecycleOptions{IOStreams: streams, Factory: f, Verb: verb}
	return &cobra.Command{
		Use:               verb + " SESSION...",
		Short:             short,
		Long:              long,
		Example:           example,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeSessions(f, true),
		RunE:              runOptions(o),
	}
}

// Complete takes the sessions from the arguments.
func (o *SessionLifecycleOptions) Complete(_ *cobra.Command, args []string) error {
	o.IDs = args
	return nil
}

// Validate checks the arguments.
func (o *SessionLifecycleOptions) Validate() error {
	if len(o.IDs) == 0 {
		return fmt.Errorf("name the sessions to %s", o.Verb)
	}
	if o.Verb != "stop" && o.Verb != "start" {
		return fmt.Errorf("unknown lifecycle verb %q", o.Verb)
	}
	return checkSessionIDs(o.IDs...)
}

// Run calls stop or start on each session, going on past failures and reporting them all
// at the end.
func (o *SessionLifecycleOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range o.IDs {
		var s *apiv1.Session
		var err error
		if o.Verb == "stop" {
			s, err = c.StopSession(ctx, id)
		} else {
			s, err = c.StartSession(ctx, id)
		}
		if err != nil {
			errs = append(errs, sessionError(err, o.Verb, id))
			continue
		}
		fmt.Fprintf(o.Out, "%s %s (%s)\n", sessionRef(id), pastTense(o.Verb), s.State)
		if o.Verb == "start" && !s.Persistent {
			// Said where the user looks: the OpenCode they attach to next is a new one.
			fmt.Fprintf(o.ErrOut, "note: %s has no persistent volume, so its workspace and OpenCode start afresh; the agent begins a new conversation seeded with a digest of the recorded one (the full transcript: kubectl agents session logs %s)\n", sessionRef(id), id)
		}
	}
	return errors.Join(errs...)
}

func pastTense(verb string) string {
	if verb == "stop" {
		return "stopped"
	}
	return "started"
}
