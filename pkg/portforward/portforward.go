// Package portforward is the client side of the Kubernetes port-forward protocol
// (pods/portforward), shared by the agent's tunnel pool and the kubectl plugin's
// forwarder. Dialer opens the upgraded connection to a pod through the API server with
// client-go's dialers (WebSocket first, SPDY as fallback, like kubectl); Open creates
// the error and data stream pair the protocol requires for a port on it, and the
// returned Conn is a net.Conn over the data stream that reports the kubelet's error
// (nothing listening on the port, pod gone) instead of a bare io.EOF.
//
// Keeping and pooling the upgraded connections is left to the callers, whose needs
// differ (one connection per session pod for many users, one to the agent for one
// user); this package imports neither and stays free of cgo so the plugin can use it.
package portforward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/streaming/pkg/httpstream"
)

// errorStreamWait bounds how long Read, once the data stream has ended, waits for the
// kubelet's explanation on the error stream (the kubelet writes it and closes both
// streams, in either order).
const errorStreamWait = 2 * time.Second

// defaultNetwork is what the conn's addresses report when Options.Network is empty.
const defaultNetwork = "port-forward"

// Options configures the Conn returned by Open. The zero value is usable.
type Options struct {
	// RemoteAddr is the string Conn.RemoteAddr reports, conventionally
	// "namespace/pod:port".
	RemoteAddr string
	// Network is what the Network method of the conn's addresses reports;
	// "port-forward" when empty.
	Network string
	// RemoteError builds the error Read returns from the kubelet's message on the
	// error stream. When nil it is "port-forward to <RemoteAddr>: <message>".
	RemoteError func(msg string) error
	// ReadError builds the error Read returns when reading the error stream fails; a
	// nil result means Read reports the data stream's own error. When nil, io.EOF is
	// ignored and other failures become
	// "port-forward to <RemoteAddr>: read error stream: <err>".
	ReadError func(err error) error
	// OnRemoteError, when set, is called once with the error built by RemoteError when
	// the kubelet reports one, before Read can return it. It runs on the goroutine that
	// reads the error stream and must not block on the Conn.
	OnRemoteError func(error)
	// OnClose, when set, is called once by the first Close, after both streams are
	// reset and removed from the connection.
	OnClose func()
}

// Open creates the error and data streams of one forwarded connection to port on conn,
// tagged with requestID (which must be unique among the connection's open pairs), and
// returns a Conn over them. When the data stream cannot be created, the error stream is
// reset and removed again.
func Open(conn httpstream.Connection, port int, requestID int64, opts Options) (*Conn, error) {
	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, strconv.Itoa(port))
	headers.Set(corev1.PortForwardRequestIDHeader, strconv.FormatInt(requestID, 10))
	errs, err := conn.CreateStream(headers)
	if err != nil {
		return nil, fmt.Errorf("create error stream: %w", err)
	}
	// The protocol's error stream is read-only for the client.
	_ = errs.Close()

	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(headers)
	if err != nil {
		_ = errs.Reset()
		conn.RemoveStreams(errs)
		return nil, fmt.Errorf("create data stream: %w", err)
	}

	c := &Conn{
		conn:    conn,
		data:    data,
		errs:    errs,
		opts:    opts,
		errDone: make(chan struct{}),
	}
	if c.opts.Network == "" {
		c.opts.Network = defaultNetwork
	}
	go c.readErrors()
	return c, nil
}

// Conn is a net.Conn over one port-forward data stream. It is safe for one reader and
// one writer at a time, like a TCP connection, and for concurrent Close.
type Conn struct {
	conn httpstream.Connection
	data httpstream.Stream
	errs httpstream.Stream
	opts Options

	// errDone is closed once the error stream is read to its end; remoteErr then holds
	// the error Read should report, if any.
	errDone   chan struct{}
	remoteErr error

	closeOnce sync.Once
}

var _ net.Conn = (*Conn)(nil)

func (c *Conn) readErrors() {
	defer close(c.errDone)
	msg, err := io.ReadAll(c.errs)
	switch {
	case len(msg) > 0:
		c.remoteErr = c.remoteError(string(msg))
		if c.opts.OnRemoteError != nil {
			c.opts.OnRemoteError(c.remoteErr)
		}
	case err != nil:
		c.remoteErr = c.readError(err)
	}
}

func (c *Conn) remoteError(msg string) error {
	if c.opts.RemoteError != nil {
		return c.opts.RemoteError(msg)
	}
	return fmt.Errorf("port-forward to %s: %s", c.opts.RemoteAddr, msg)
}

func (c *Conn) readError(err error) error {
	if c.opts.ReadError != nil {
		return c.opts.ReadError(err)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("port-forward to %s: read error stream: %w", c.opts.RemoteAddr, err)
}

// Read reads from the pod. When the pod side ends the stream because of an error (for
// example nothing listens on the port), Read returns that error instead of io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.data.Read(b)
	if err != nil {
		select {
		case <-c.errDone:
		case <-time.After(errorStreamWait):
		}
		select {
		case <-c.errDone:
			if c.remoteErr != nil {
				return n, c.remoteErr
			}
		default:
		}
	}
	return n, err
}

// Write writes to the pod.
func (c *Conn) Write(b []byte) (int, error) { return c.data.Write(b) }

// CloseWrite half-closes the connection: the pod sees EOF while its reply still
// arrives.
func (c *Conn) CloseWrite() error { return c.data.Close() }

// Close resets both streams, removes them from the connection and calls
// Options.OnClose; only the first call does anything. It always returns nil.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.data.Reset()
		_ = c.errs.Reset()
		c.conn.RemoveStreams(c.data, c.errs)
		if c.opts.OnClose != nil {
			c.opts.OnClose()
		}
	})
	return nil
}

// LocalAddr reports "port-forward": the local end is the upgraded connection.
func (c *Conn) LocalAddr() net.Addr { return addr{c.opts.Network, "port-forward"} }

// RemoteAddr reports Options.RemoteAddr.
func (c *Conn) RemoteAddr() net.Addr { return addr{c.opts.Network, c.opts.RemoteAddr} }

// SetDeadline and friends accept and ignore deadlines: port-forward streams have none.
// Users of these conns (an http.Transport, a reverse proxy, a local listener) bound
// their work with contexts and Close instead, which do interrupt a blocked Read or
// Write.
func (c *Conn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline accepts and ignores the deadline; see SetDeadline.
func (c *Conn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline accepts and ignores the deadline; see SetDeadline.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }
