package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// PortForwardOptions are the inputs of `port-forward`.
type PortForwardOptions struct {
	SessionTunnelOptions
}

// NewCmdPortForward returns `port-forward`.
func NewCmdPortForward(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &PortForwardOptions{SessionTunnelOptions{IOStreams: streams, Factory: f, Address: "127.0.0.1"}}
	cmd := &cobra.Command{
		Use:   "port-forward SESSION [LOCAL_PORT]",
		Short: "Reach a session's OpenCode server on a local port",
		Long: `Listen on a local port and relay it to OpenCode in the session until Ctrl-C, for
OpenCode's web UI, its HTTP API or your own tools. Like attach, it goes through the
agent unless --direct, and the listener requires the password it prints.`,
		Example: `  # On a free port
  kubectl agents port-forward SESSION

  # On port 4096, then open the printed web UI link
  kubectl agents port-forward SESSION 4096`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(o),
	}
	cmd.Flags().BoolVar(&o.Direct, "direct", false, "Port-forward to the session pod with your own RBAC instead of going through the agent")
	cmd.Flags().StringVar(&o.Address, "address", o.Address, "Local loopback address to listen on")
	return cmd
}

// Run relays until ctx ends.
func (o *PortForwardOptions) Run(ctx context.Context) error {
	lt, err := o.open(ctx)
	if err != nil {
		return err
	}
	printAccess(o.Out, o.ID, lt)
	fmt.Fprintln(o.ErrOut, "Press Ctrl-C to stop forwarding.")
	return waitTunnel(ctx, lt)
}
