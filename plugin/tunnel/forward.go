// Package tunnel gets the plugin's bytes to pods through the Kubernetes API server:
// it finds the agent by its labels, port-forwards to it with client-go's port-forward
// dialers (WebSocket first, SPDY as fallback, like kubectl), verifies the agent's TLS
// certificate against the CA the agent publishes in a ConfigMap, and runs the local
// listeners that `attach` and `port-forward` hand to OpenCode.
//
// Connections are port-forward streams dialed on demand over one upgraded connection
// per pod rather than client-go's PortForwarder with its local listener: every HTTP
// request of the plugin becomes a stream pair on the existing connection, a failure
// inside the pod surfaces as an error to the caller instead of a log line, and when the
// connection drops (laptop sleep, API server restart, agent rollout) the next dial
// simply opens a new one — which is what makes `attach` reconnect.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"k8s.io/client-go/rest"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	pf "github.com/cakeai/cake-agents/pkg/portforward"
)

// ErrForbidden marks port-forward failures caused by missing RBAC, so callers can name
// the permission.
var ErrForbidden = errors.New("forbidden")

// Forwarder dials ports of one pod through the API server's pods/portforward
// subresource. It keeps one upgraded connection and reopens it after it drops.
// It is safe for concurrent use.
type Forwarder struct {
	Namespace, Pod string

	connect func() (streamhttp.Connection, error)
	// onRemoteError, when set, is called when the pod side refuses a forwarded
	// connection (nothing listening, pod gone), so a caller can look for another pod.
	onRemoteError func(error)

	mu     sync.Mutex
	conn   streamhttp.Connection
	closed bool
	reqID  atomic.Int64
}

// NewForwarder returns a Forwarder to namespace/pod using the caller's kube credentials.
func NewForwarder(cfg *rest.Config, namespace, pod string) (*Forwarder, error) {
	d, err := pf.NewDialer(cfg)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{Namespace: namespace, Pod: pod}
	f.connect = func() (streamhttp.Connection, error) {
		conn, err := d.Dial(namespace, pod)
		if err != nil {
			return nil, classify(err, namespace, pod)
		}
		return conn, nil
	}
	return f, nil
}

// classify turns an upgrade failure into an error that says what to do about it.
func classify(err error, namespace, pod string) error {
	msg := err.Error()
	if strings.Contains(msg, "forbidden") || strings.Contains(msg, "Forbidden") {
		return fmt.Errorf("%w: you may not port-forward to pod %s/%s: missing permission \"create pods/portforward\" in namespace %q "+
			"(check with `kubectl auth can-i create pods --subresource=portforward -n %s`; the chart's cake-agents-user ClusterRole grants it): %v",
			ErrForbidden, namespace, pod, namespace, namespace, err)
	}
	return fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
}

// get returns the open connection, dialing one when there is none. The dial takes no
// context (client-go's dialers don't), so a cancelled caller stops waiting and the
// connection, once open, is kept for the next caller.
func (f *Forwarder) get(ctx context.Context) (streamhttp.Connection, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, net.ErrClosed
	}
	if c := f.conn; c != nil {
		select {
		case <-c.CloseChan():
			// Closed but not yet dropped by adopt's goroutine: a stream on it would
			// wait for its 30 s reply timeout, so dial afresh now.
			f.conn = nil
		default:
			f.mu.Unlock()
			return c, nil
		}
	}
	f.mu.Unlock()

	type result struct {
		conn streamhttp.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := f.connect()
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				f.adopt(r.conn)
			}
		}()
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, r.err
	}
	return f.adopt(r.conn), nil
}

// adopt makes c the forwarder's connection unless another dial won the race, and
// forgets it when it closes so the next dial reconnects.
func (f *Forwarder) adopt(c streamhttp.Connection) streamhttp.Connection {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return c
	}
	if f.conn != nil {
		_ = c.Close()
		return f.conn
	}
	f.conn = c
	go func() {
		<-c.CloseChan()
		f.drop(c)
	}()
	return c
}

func (f *Forwarder) drop(c streamhttp.Connection) {
	f.mu.Lock()
	if f.conn == c {
		f.conn = nil
	}
	f.mu.Unlock()
	_ = c.Close()
}

// DialContext opens a connection to port of the pod. A connection refused inside the
// pod surfaces as an error from the first Read.
func (f *Forwarder) DialContext(ctx context.Context, port int) (net.Conn, error) {
	// A connection may have died without its close notification having arrived yet;
	// one retry on a fresh connection covers that race.
	for attempt := 0; ; attempt++ {
		conn, err := f.get(ctx)
		if err != nil {
			return nil, err
		}
		c, err := f.open(conn, port)
		if err == nil {
			return c, nil
		}
		f.drop(conn)
		if attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("port-forward to pod %s/%s port %d: %w", f.Namespace, f.Pod, port, err)
		}
	}
}

func (f *Forwarder) open(conn streamhttp.Connection, port int) (net.Conn, error) {
	c, err := pf.Open(conn, port, f.reqID.Add(1), pf.Options{
		RemoteAddr:    fmt.Sprintf("%s/%s:%d", f.Namespace, f.Pod, port),
		OnRemoteError: f.onRemoteError,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the pod connection; later dials fail.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	c := f.conn
	f.conn = nil
	f.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}
