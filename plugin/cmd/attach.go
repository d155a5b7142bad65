package cmd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cakeai/cake-agents/plugin/tunnel"
)

// AttachOptions are the inputs of `attach`.
type AttachOptions struct {
	SessionTunnelOptions
	// OpenCode is the program to run ("opencode", found on PATH).
	OpenCode string
}

// NewCmdAttach returns `attach`.
func NewCmdAttach(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &AttachOptions{SessionTunnelOptions: SessionTunnelOptions{IOStreams: streams, Factory: f, Address: "127.0.0.1"}, OpenCode: "opencode"}
	cmd := &cobra.Command{
		Use:   "attach SESSION",
		Short: "Open the OpenCode TUI on a session",
		Long: `Attach your terminal to the OpenCode agent of a session.

A local listener on 127.0.0.1 relays OpenCode's API — HTTP, event streams and
WebSockets — to the session through the agent, which checks that you may attach.
The listener requires a random password that only this command knows; it runs
"opencode attach http://127.0.0.1:PORT" with that password in the environment
(OPENCODE_SERVER_PASSWORD), never on the command line.

If opencode is not installed, the command prints the URL, the credentials and a link
to OpenCode's web UI instead, and keeps the tunnel open until Ctrl-C.

--direct port-forwards to the session pod with your own RBAC (create pods/portforward
in the session namespace) instead of going through the agent; only the session's
owner gets the credentials for it. Either way a dropped tunnel (laptop sleep, agent
restart) is reopened on the next request.`,
		Example: `  # Open the TUI
  kubectl agents attach SESSION

  # Through a direct port-forward to the session pod
  kubectl agents attach SESSION --direct

  # On a fixed local port (the TUI connects to it)
  kubectl agents attach SESSION --port 4096

  # For OpenCode's web UI in a browser, use port-forward instead
  kubectl agents port-forward SESSION 4096`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(o),
	}
	cmd.Flags().BoolVar(&o.Direct, "direct", false, "Port-forward to the session pod with your own RBAC instead of going through the agent")
	cmd.Flags().IntVar(&o.Port, "port", 0, "Local port to listen on (default: a free one)")
	cmd.Flags().StringVar(&o.Address, "address", o.Address, "Local loopback address to listen on")
	return cmd
}

// Run opens the tunnel and runs OpenCode against it, or prints how to reach it.
func (o *AttachOptions) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lt, err := o.open(ctx)
	if err != nil {
		return err
	}
	path, lookErr := exec.LookPath(o.OpenCode)
	if lookErr != nil {
		fmt.Fprintf(o.ErrOut, "%s was not found on your PATH: install it (npm install -g opencode-ai) to get the TUI here.\n", o.OpenCode)
		printAccess(o.Out, o.ID, lt)
		fmt.Fprintln(o.ErrOut, "Press Ctrl-C to close the tunnel.")
		return waitTunnel(ctx, lt)
	}
	// `opencode attach` exits at once if the server does not answer; a session that has
	// just started (or an agent that reports Running as soon as the pod is Ready) may
	// need a few more seconds.
	if err := waitOpenCode(ctx, o.ErrOut, o.ID, lt, startWait); err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "Attaching to %s through %s ...\n", sessionRef(o.ID), lt.URL)
	c := exec.CommandContext(ctx, path, "attach", lt.URL)
	c.Env = append(os.Environ(), "OPENCODE_SERVER_PASSWORD="+lt.Password)
	c.Stdin, c.Stdout, c.Stderr = o.In, o.Out, o.ErrOut
	runErr := c.Run()
	cancel()
	if err := <-lt.done; err != nil && !tunnel.IsClosed(err) {
		return fmt.Errorf("local tunnel: %w", err)
	}
	if runErr != nil && ctx.Err() == nil {
		return fmt.Errorf("%s attach: %w", o.OpenCode, runErr)
	}
	return nil
}

// waitOpenCode waits until the session's OpenCode answers its health endpoint through
// the local tunnel, saying so once if it has to wait. Each try has its own deadline: a
// request sent before the server listens can stall inside a port-forward.
func waitOpenCode(ctx context.Context, errOut io.Writer, id string, lt *localTunnel, timeout time.Duration) error {
	hc := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(timeout)
	said := false
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, lt.URL+"/global/health", nil)
		if err != nil {
			return err
		}
		req.SetBasicAuth(tunnel.LocalUser, lt.Password)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health check answered %s", resp.Status)
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
				return fmt.Errorf("reach the OpenCode of %s: %w", sessionRef(id), err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the OpenCode of %s did not answer within %s (%v): see `kubectl agents session why %s`", sessionRef(id), timeout, err, id)
		}
		if !said {
			fmt.Fprintf(errOut, "Waiting for the OpenCode server of %s to answer ...\n", sessionRef(id))
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
