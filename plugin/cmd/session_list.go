package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// SessionListOptions are the inputs of `session list`.
type SessionListOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags

	AllUsers bool
	State    string
	Owner    string
	// ChunkSize is the page size asked of the agent; every page is fetched.
	ChunkSize int
}

// NewSessionListOptions returns options with defaults.
func NewSessionListOptions(f *Factory, streams genericiooptions.IOStreams) *SessionListOptions {
	return &SessionListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), ChunkSize: 100}
}

// NewCmdSessionList returns `session list`.
func NewCmdSessionList(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewSessionListOptions(f, streams)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sessions",
		Long: `List your sessions and the sessions others share (--private=false). Admins see
every user's sessions with --all-users.`,
		Example: `  kubectl agents session list
  kubectl agents session list --state Running -o wide
  kubectl agents session list -A --owner USER_ID
  kubectl agents session list -o custom-columns=NAME:.id,STATE:.state,POD:.podName`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().BoolVarP(&o.AllUsers, "all-users", "A", false, "List every user's sessions (admins only)")
	cmd.Flags().StringVar(&o.State, "state", "", "Only sessions in this state")
	cmd.Flags().StringVar(&o.Owner, "owner", "", `Only sessions of this owner: "me" or a user id`)
	cmd.Flags().IntVar(&o.ChunkSize, "chunk-size", o.ChunkSize, "Sessions asked of the agent per request")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(stateNames(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.FixedCompletions([]string{"me"}, cobra.ShellCompDirectiveNoFileComp))
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Validate checks the filters.
func (o *SessionListOptions) Validate() error {
	if o.State != "" && !apiv1.SessionState(o.State).Valid() {
		return fmt.Errorf("--state %q is not a session state: use one of %v", o.State, stateNames())
	}
	if o.ChunkSize < 0 {
		return fmt.Errorf("--chunk-size must not be negative")
	}
	return o.PrintFlags.Validate()
}

// Run lists and prints.
func (o *SessionListOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	sessions, err := c.ListAllSessions(ctx, client.ListOptions{
		Limit: o.ChunkSize, State: apiv1.SessionState(o.State), Owner: o.Owner, AllUsers: o.AllUsers,
	})
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	if len(sessions) == 0 && (o.PrintFlags.IsDefault() || o.PrintFlags.format() == "wide") {
		fmt.Fprintln(o.ErrOut, "No sessions found.")
		return nil
	}
	return o.PrintFlags.Print(o.Out, sessions, true)
}

// stateNames lists the session states, for --state's help, errors and completion.
func stateNames() []string {
	out := make([]string, len(apiv1.AllStates))
	for i, s := range apiv1.AllStates {
		out[i] = string(s)
	}
	return out
}
