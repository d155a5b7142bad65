package cmd

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
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
		RunE: runGroup,
	}
	cmd.AddCommand(
		NewCmdSessionCreate(f, streams),
		NewCmdSessionFork(f, streams),
		NewCmdSessionList(f, streams),
		NewCmdSessionGet(f, streams),
		NewCmdSessionDelete(f, streams),
		NewCmdSessionStop(f, streams),
		NewCmdSessionStart(f, streams),
		NewCmdSessionLogs(f, streams),
		NewCmdSessionSend(f, streams),
		NewCmdSessionWhy(f, streams),
		NewCmdSessionWeb(f, streams),
	)
	return cmd
}
