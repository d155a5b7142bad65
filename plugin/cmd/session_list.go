package cmd

import (
	"context"
	"fmt"
	"sort"
	"time"

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
	// Watch keeps listing, printing the sessions that changed.
	Watch bool
	// WatchEvery is how often a watch lists again.
	WatchEvery time.Duration
}

// NewSessionListOptions returns options with defaults.
func NewSessionListOptions(f *Factory, streams genericiooptions.IOStreams) *SessionListOptions {
	return &SessionListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), ChunkSize: 100, WatchEvery: 2 * time.Second}
}

// NewCmdSessionList returns `session list`.
func NewCmdSessionList(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewSessionListOptions(f, streams)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sessions",
		Long: `List your sessions and the sessions others share (--private=false). Admins see
every user's sessions with --all-users.

With --watch (-w), keep going after the list, like kubectl get -w: every session that
changes is printed again (a deleted one once more, as Deleted), until Ctrl-C. The
agent is asked every --watch-interval.`,
		Example: `  kubectl agents session list
  kubectl agents session list --state Running -o wide
  kubectl agents session list -A --owner USER_ID
  kubectl agents session list -w
  kubectl agents session list -o custom-columns=NAME:.id,STATE:.state,POD:.podName`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().BoolVarP(&o.AllUsers, "all-users", "A", false, "List every user's sessions (admins only)")
	cmd.Flags().StringVar(&o.State, "state", "", "Only sessions in this state")
	cmd.Flags().StringVar(&o.Owner, "owner", "", `Only sessions of this owner: "me" or a user id`)
	cmd.Flags().IntVar(&o.ChunkSize, "chunk-size", o.ChunkSize, "Sessions asked of the agent per request")
	cmd.Flags().BoolVarP(&o.Watch, "watch", "w", false, "After the list, print every session that changes, until interrupted")
	cmd.Flags().DurationVar(&o.WatchEvery, "watch-interval", o.WatchEvery, "How often --watch asks the agent")
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
	if o.Watch && o.WatchEvery < 100*time.Millisecond {
		return fmt.Errorf("--watch-interval %s is too short: use 100ms or more", o.WatchEvery)
	}
	return o.PrintFlags.Validate()
}

// Run lists and prints.
func (o *SessionListOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	list := func() ([]apiv1.Session, error) {
		return c.ListAllSessions(ctx, client.ListOptions{
			Limit: o.ChunkSize, State: apiv1.SessionState(o.State), Owner: o.Owner, AllUsers: o.AllUsers,
		})
	}
	sessions, err := list()
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	table := o.PrintFlags.IsDefault() || o.PrintFlags.format() == "wide"
	if len(sessions) == 0 && table {
		fmt.Fprintln(o.ErrOut, "No sessions found.")
		if !o.Watch {
			return nil
		}
	} else if err := o.PrintFlags.Print(o.Out, sessions, !o.Watch); err != nil {
		return err
	}
	if !o.Watch {
		return nil
	}
	return o.watch(ctx, list, sessions, table)
}

// watch lists every WatchEvery and prints the sessions that are new or changed since,
// and those gone (once more, as Deleted), until ctx ends. A failed list (an agent
// restarting) is reported and tried again.
func (o *SessionListOptions) watch(ctx context.Context, list func() ([]apiv1.Session, error), last []apiv1.Session, table bool) error {
	seen := map[string]apiv1.Session{}
	for _, s := range last {
		seen[s.ID] = s
	}
	headers := len(last) > 0 && table // printed once
	t := time.NewTicker(o.WatchEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, err := list()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !failing {
				fmt.Fprintf(o.ErrOut, "# list sessions: %v; retrying\n", err)
			}
			failing = true
			continue
		}
		failing = false
		var changed []apiv1.Session
		now := map[string]bool{}
		for _, s := range cur {
			now[s.ID] = true
			if prev, ok := seen[s.ID]; !ok || prev.ResourceVersion != s.ResourceVersion || prev.State != s.State {
				changed = append(changed, s)
				seen[s.ID] = s
			}
		}
		for id, s := range seen {
			if !now[id] {
				s.State = "Deleted"
				changed = append(changed, s)
				delete(seen, id)
			}
		}
		if len(changed) == 0 {
			continue
		}
		sort.SliceStable(changed, func(i, j int) bool { return changed[i].CreatedAt.Before(changed[j].CreatedAt) })
		pf := *o.PrintFlags
		pf.NoHeaders = pf.NoHeaders || headers
		if err := pf.Print(o.Out, changed, false); err != nil {
			return err
		}
		headers = headers || table
	}
}

// stateNames lists the session states, for --state's help, errors and completion.
func stateNames() []string {
	out := make([]string, len(apiv1.AllStates))
	for i, s := range apiv1.AllStates {
		out[i] = string(s)
	}
	return out
}
