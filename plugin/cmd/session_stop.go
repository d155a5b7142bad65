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

// SessionLifecycleOptions are the inputs of `session stop` and `session start`, which
// differ only in the call they make.
type SessionLifecycleOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	IDs     []string
	// Verb is "stop" or "start".
	Verb string

	client *client.Client
}

// NewCmdSessionStop returns `session stop`.
func NewCmdSessionStop(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdLifecycle(f, streams, "stop", "Stop sessions, keeping them to start again",
		`Stop sessions: the agent deletes the pod but keeps the session, its conversation
and (with --persistent) its workspace, so "session start" resumes it.`,
		`  kubectl agents session stop SESSION
  kubectl agents session stop SESSION1 SESSION2`)
}

// Complete connects to the agent.
func (o *SessionLifecycleOptions) Complete(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	o.client = c
	return err
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

// Run calls stop or start on each session.
func (o *SessionLifecycleOptions) Run(ctx context.Context) error {
	var errs []error
	for _, id := range o.IDs {
		var s *apiv1.Session
		var err error
		if o.Verb == "stop" {
			s, err = o.client.StopSession(ctx, id)
		} else {
			s, err = o.client.StartSession(ctx, id)
		}
		if err != nil {
			if client.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("session %q not found", id))
			} else {
				errs = append(errs, fmt.Errorf("%s %s: %w", o.Verb, sessionRef(id), err))
			}
			continue
		}
		fmt.Fprintf(o.Out, "%s %s (%s)\n", sessionRef(id), pastTense(o.Verb), s.State)
	}
	return errors.Join(errs...)
}

func pastTense(verb string) string {
	if verb == "stop" {
		return "stopped"
	}
	return "started"
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
		RunE: func(cmd *cobra.Command, args []string) error {
			o.IDs = args
			if err := o.Validate(); err != nil {
				return err
			}
			if err := o.Complete(cmd.Context()); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
}
