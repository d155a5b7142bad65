package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/plugin/tunnel"
)

// startWait is how long attach and port-forward wait for a session that is still
// starting before giving up.
const startWait = 3 * time.Minute

// SessionTunnelOptions are what attach and port-forward share: a local listener that
// reaches OpenCode in a session, through the agent's proxy or (Direct) a port-forward
// to the session pod.
type SessionTunnelOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	ID      string
	Direct  bool
	// Address and Port are where the local listener binds; port 0 picks a free one.
	Address string
	Port    int

	client *client.Client
}

// Complete connects to the agent.
func (o *SessionTunnelOptions) Complete(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	o.client = c
	return err
}

// Validate checks the arguments.
func (o *SessionTunnelOptions) Validate() error {
	if o.ID == "" {
		return errors.New("name the session")
	}
	if err := checkSessionIDs(o.ID); err != nil {
		return err
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("local port %d is not a port number", o.Port)
	}
	if ip := net.ParseIP(o.Address); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--address %q must be a loopback address: the listener relays your credentials to anyone who connects with the password", o.Address)
	}
	return nil
}

// localTunnel is a running local listener.
type localTunnel struct {
	URL      string
	Password string
	done     chan error
}

// open checks the session, binds the listener and starts relaying until ctx ends.
func (o *SessionTunnelOptions) open(ctx context.Context) (*localTunnel, error) {
	s, err := o.client.GetSession(ctx, o.ID)
	if err != nil {
		if client.IsNotFound(err) {
			return nil, fmt.Errorf("session %q not found: list yours with `kubectl agents session list`", o.ID)
		}
		return nil, fmt.Errorf("get %s: %w", sessionRef(o.ID), err)
	}
	switch s.State {
	case apiv1.StateRunning:
	case apiv1.StatePending, apiv1.StateStarting:
		if _, err := waitRunning(ctx, o.client, o.ErrOut, s, startWait, time.Second); err != nil {
			return nil, err
		}
	case apiv1.StateStopped:
		return nil, fmt.Errorf("%s is Stopped: start it with `kubectl agents session start %s`", sessionRef(s.ID), s.ID)
	default:
		return nil, fmt.Errorf("%s is %s, not Running: see `kubectl agents session why %s`", sessionRef(s.ID), s.State, s.ID)
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(o.Address, strconv.Itoa(o.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen on %s port %d (choose another local port): %w", o.Address, o.Port, err)
	}
	lt := &localTunnel{URL: "http://" + ln.Addr().String(), done: make(chan error, 1)}
	errLog := log.New(o.ErrOut, "", 0)

	if o.Direct {
		info, err := o.client.Attach(ctx, o.ID)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("get the attach credentials of %s (only its owner may attach directly): %w", sessionRef(o.ID), err)
		}
		_, cfg, err := o.Factory.Kube()
		if err != nil {
			ln.Close()
			return nil, err
		}
		fwd, err := tunnel.NewForwarder(cfg, info.PodNamespace, info.PodName)
		if err != nil {
			ln.Close()
			return nil, err
		}
		lt.Password = info.Password
		go func() {
			defer fwd.Close()
			lt.done <- tunnel.ServeTCP(ctx, ln, func(ctx context.Context) (net.Conn, error) {
				return fwd.DialContext(ctx, apiv1.OpenCodePort)
			}, func(err error) {
				errLog.Printf("warning: %v (the next connection tries again)", err)
			})
		}()
		return lt, nil
	}

	password, err := tunnel.RandomPassword()
	if err != nil {
		ln.Close()
		return nil, err
	}
	lt.Password = password
	proxy := &tunnel.LocalProxy{
		Password:  password,
		Upstream:  o.client.BaseURL(),
		Path:      strings.TrimSuffix(client.ProxyPath(o.ID, "/"), "/"),
		Transport: o.client.HTTPClient().Transport,
		Authorize: o.client.Authorize,
		ErrorLog:  errLog,
	}
	go func() { lt.done <- tunnel.Serve(ctx, ln, proxy.Handler()) }()
	return lt, nil
}

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
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ID = args[0]
			if err := o.Validate(); err != nil {
				return err
			}
			if err := o.Complete(cmd.Context()); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
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

// printAccess tells the user how to reach OpenCode through the tunnel.
func printAccess(out interface{ Write([]byte) (int, error) }, id string, lt *localTunnel) {
	fmt.Fprintf(out, "Forwarding %s to %s (OpenCode)\n", lt.URL, sessionRef(id))
	fmt.Fprintf(out, "  user:     %s\n", tunnel.LocalUser)
	fmt.Fprintf(out, "  password: %s\n", lt.Password)
	fmt.Fprintf(out, "  TUI:      OPENCODE_SERVER_PASSWORD=%s opencode attach %s\n", lt.Password, lt.URL)
	fmt.Fprintf(out, "  web UI:   %s/?auth_token=%s\n", lt.URL, tunnel.AuthToken(lt.Password))
}

// waitTunnel keeps the tunnel open until ctx ends (Ctrl-C) or the listener fails.
func waitTunnel(ctx context.Context, lt *localTunnel) error {
	err := <-lt.done
	if err != nil && !tunnel.IsClosed(err) && ctx.Err() == nil {
		return fmt.Errorf("local tunnel: %w", err)
	}
	return nil
}
