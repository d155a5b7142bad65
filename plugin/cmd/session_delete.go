package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cakeai/cake-agents/pkg/client"
)

// SessionDeleteOptions are the inputs of `session delete`.
type SessionDeleteOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	IDs     []string
	All     bool
	Yes     bool
}

// NewCmdSessionDelete returns `session delete`.
func NewCmdSessionDelete(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionDeleteOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "delete (SESSION... | --all)",
		Short: "Delete sessions and their pods",
		Long: `Delete sessions: the agent removes the pod, the workspace (also a persistent
one) and the session's secrets. Only the owner or an admin may delete a session.

--all deletes every session you own, after asking for confirmation unless --yes.`,
		Example: `  kubectl agents session delete SESSION
  kubectl agents session delete SESSION1 SESSION2
  kubectl agents session delete --all --yes`,
		ValidArgsFunction: completeSessions(f, true),
		RunE:              runOptions(o),
	}
	cmd.Flags().BoolVar(&o.All, "all", false, "Delete every session you own")
	cmd.Flags().BoolVarP(&o.Yes, "yes", "y", false, "Do not ask for confirmation with --all")
	return cmd
}

// Complete takes the sessions from the arguments.
func (o *SessionDeleteOptions) Complete(_ *cobra.Command, args []string) error {
	o.IDs = args
	return nil
}

// Validate checks that exactly one of names and --all was given.
func (o *SessionDeleteOptions) Validate() error {
	switch {
	case o.All && len(o.IDs) > 0:
		return errors.New("name sessions or pass --all, not both")
	case !o.All && len(o.IDs) == 0:
		return errors.New("name the sessions to delete, or pass --all to delete all of yours")
	}
	return checkSessionIDs(o.IDs...)
}

// Run deletes the sessions, going on past failures and reporting them all at the end.
func (o *SessionDeleteOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	ids := o.IDs
	if o.All {
		sessions, err := c.ListAllSessions(ctx, client.ListOptions{Owner: "me"})
		if err != nil {
			return fmt.Errorf("list your sessions: %w", err)
		}
		if len(sessions) == 0 {
			fmt.Fprintln(o.ErrOut, "No sessions found.")
			return nil
		}
		for _, s := range sessions {
			ids = append(ids, s.ID)
		}
		if !o.Yes {
			if !o.confirm(fmt.Sprintf("Delete %d session(s): %s? [y/N]: ", len(ids), strings.Join(ids, ", "))) {
				return errors.New("nothing deleted: not confirmed (pass --yes to skip the question)")
			}
		}
	}
	var errs []error
	for _, id := range ids {
		if _, err := c.DeleteSession(ctx, id); err != nil {
			errs = append(errs, sessionError(err, "delete", id))
			continue
		}
		fmt.Fprintf(o.Out, "%s deleted\n", sessionRef(id))
	}
	return errors.Join(errs...)
}

// confirm asks a yes/no question; anything but yes (or no answer at all) is no.
func (o *SessionDeleteOptions) confirm(question string) bool {
	answer, _ := ask(o.IOStreams, question)
	answer = strings.ToLower(answer)
	return answer == "y" || answer == "yes"
}
