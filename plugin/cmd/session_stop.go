package cmd

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// NewCmdSessionStop returns `session stop`.
func NewCmdSessionStop(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdLifecycle(f, streams, "stop", "Stop sessions, keeping them to start again",
		`Stop sessions: the agent deletes the pod but keeps the session, its conversation
and (with --persistent) its workspace, so "session start" resumes it.`,
		`  kubectl agents session stop SESSION
  kubectl agents session stop SESSION1 SESSION2`)
}
