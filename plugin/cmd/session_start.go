package cmd

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// NewCmdSessionStart returns `session start`.
func NewCmdSessionStart(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdLifecycle(f, streams, "start", "Start stopped sessions again",
		`Start stopped sessions: the agent creates a new pod for each, with the same
repository, settings and (for persistent sessions) workspace.`,
		`  kubectl agents session start SESSION
  kubectl agents session start SESSION && kubectl agents attach SESSION`)
}
