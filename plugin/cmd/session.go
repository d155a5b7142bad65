package cmd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// NewCmdSession groups the session commands.
func NewCmdSession(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "session",
		Aliases: []string{"sessions", "s"},
		Short:   "Create, list and manage sessions",
		Long: `A session is one OpenCode coding agent working on one repository in its own pod.
The agent owns its state: Pending → Starting → Running → Stopping → Stopped,
Failed, Deleting. Private sessions (the default) are visible only to their owner
and admins.`,
		Example: `  kubectl agents session create --repo https://github.com/org/repo --prompt "fix the flaky test" --wait
  kubectl agents session list
  kubectl agents session logs SESSION -f`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q; see %q", args[0], cmd.CommandPath(), cmd.CommandPath()+" --help")
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(
		NewCmdSessionCreate(f, streams),
		NewCmdSessionList(f, streams),
		NewCmdSessionGet(f, streams),
		NewCmdSessionDelete(f, streams),
		NewCmdSessionStop(f, streams),
		NewCmdSessionStart(f, streams),
		NewCmdSessionLogs(f, streams),
		NewCmdSessionSend(f, streams),
		NewCmdSessionWhy(f, streams),
	)
	return cmd
}

// completionTimeout bounds the agent round trip of a shell completion: a slow answer is
// worse than none.
const completionTimeout = 5 * time.Second

// completeSessions completes session ids (with their titles as descriptions) for the
// first argument, or for every argument when multi is set.
func completeSessions(f *Factory, multi bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 && !multi {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		c, err := f.Agent(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		sessions, err := c.ListAllSessions(ctx, client.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		seen := map[string]bool{}
		for _, a := range args {
			seen[a] = true
		}
		var out []string
		for _, s := range sessions {
			if seen[s.ID] || !strings.HasPrefix(s.ID, toComplete) {
				continue
			}
			desc := string(s.State)
			if s.Title != "" {
				desc += " " + s.Title
			}
			out = append(out, s.ID+"\t"+desc)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeNamespaces completes --agent-namespace from the cluster.
func completeNamespaces(f *Factory) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		kube, _, err := f.Kube()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var out []string
		for _, ns := range list.Items {
			if strings.HasPrefix(ns.Name, toComplete) {
				out = append(out, ns.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func stateNames() []string {
	out := make([]string, len(apiv1.AllStates))
	for i, s := range apiv1.AllStates {
		out[i] = string(s)
	}
	return out
}

// sessionRef is how commands name a session in status lines, like kubectl's "pod/x".
func sessionRef(id string) string { return "session/" + id }
