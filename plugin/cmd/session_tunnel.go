package cmd

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/plugin/tunnel"
)

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
}

// Complete takes the session and, for port-forward, the local port from the arguments.
func (o *SessionTunnelOptions) Complete(_ *cobra.Command, args []string) error {
	o.ID = args[0]
	if len(args) > 1 {
		p, err := strconv.Atoi(args[1])
		if err != nil {
			return fmt.Errorf("LOCAL_PORT %q is not a port number", args[1])
		}
		o.Port = p
	}
	return nil
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
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.GetSession(ctx, o.ID)
	if err != nil {
		return nil, sessionError(err, "get", o.ID)
	}
	switch s.State {
	case apiv1.StateRunning:
	case apiv1.StatePending, apiv1.StateStarting:
		if _, err := waitRunning(ctx, c, o.ErrOut, s, startWait, time.Second); err != nil {
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
		info, err := c.Attach(ctx, o.ID)
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
		Upstream:  c.BaseURL(),
		Path:      strings.TrimSuffix(client.ProxyPath(o.ID, "/"), "/"),
		Transport: c.HTTPClient().Transport,
		Authorize: c.Authorize,
		ErrorLog:  errLog,
	}
	go func() { lt.done <- tunnel.Serve(ctx, ln, proxy.Handler()) }()
	return lt, nil
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
