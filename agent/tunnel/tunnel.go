// Package tunnel reaches ports of session pods through the Kubernetes API server's
// pods/portforward subresource, the way `kubectl port-forward` does, so the agent never
// needs pod IPs, a Service per session, or network policy holes between itself and the
// session pods: if the API server can reach the kubelet, the agent can reach OpenCode.
//
// A Pool keeps one upgraded connection per pod and opens a pair of streams (error and
// data, as the port-forward protocol requires) for every dialed net.Conn, so many HTTP
// requests, SSE streams and WebSockets to one session share a single API-server
// connection. Connections with no open streams are closed after an idle timeout; a
// connection that breaks is dropped and the next dial opens a fresh one.
//
// The pool uses streams directly instead of client-go's PortForwarder with a local
// listener: there is no loopback port for other processes in the agent pod to reach, no
// extra copy through the kernel, and a failure to connect inside the pod is reported to
// the caller instead of only being logged.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	pf "github.com/cakeai/cake-agents/pkg/portforward"
)

// DefaultIdleTimeout is how long a pod connection with no open streams is kept.
const DefaultIdleTimeout = 2 * time.Minute

// transportIdleTimeout bounds how long an HTTP keep-alive connection (one open stream)
// may sit unused in a Transport; it is shorter than the pool's idle timeout so that idle
// keep-alives do not keep pod connections open forever.
const transportIdleTimeout = 30 * time.Second

// ErrClosed is returned by DialContext after Close.
var ErrClosed = errors.New("tunnel pool is closed")

// Option configures a Pool.
type Option func(*Pool)

// WithIdleTimeout sets how long a pod connection with no open streams is kept open.
func WithIdleTimeout(d time.Duration) Option {
	return func(p *Pool) { p.idleTimeout = d }
}

// connector opens one upgraded port-forward connection to a pod.
type connector func(namespace, pod string) (streamhttp.Connection, error)

// Pool multiplexes connections to pod ports over one port-forward connection per pod.
// It is safe for concurrent use.
type Pool struct {
	log         hclog.Logger
	connect     connector
	idleTimeout time.Duration

	mu         sync.Mutex
	conns      map[podKey]*podConn
	transports map[transportKey]*http.Transport
	closed     bool
	stop       chan struct{}
	reaperDone chan struct{}
}

type podKey struct{ namespace, pod string }

func (k podKey) String() string { return k.namespace + "/" + k.pod }

type transportKey struct {
	podKey
	port int
}

// NewPool returns a Pool that port-forwards through the API server described by
// restConfig with pkg/portforward's Dialer: WebSocket first, SPDY as fallback, like
// kubectl (API servers before 1.31 or proxies that refuse WebSocket upgrades).
func NewPool(restConfig *rest.Config, log hclog.Logger, opts ...Option) (*Pool, error) {
	if restConfig == nil {
		return nil, errors.New("tunnel: a Kubernetes REST config is required")
	}
	d, err := pf.NewDialer(restConfig)
	if err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	return newPool(d.Dial, log, opts...), nil
}

func newPool(connect connector, log hclog.Logger, opts ...Option) *Pool {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	p := &Pool{
		log:         log,
		connect:     connect,
		idleTimeout: DefaultIdleTimeout,
		conns:       map[podKey]*podConn{},
		transports:  map[transportKey]*http.Transport{},
		stop:        make(chan struct{}),
		reaperDone:  make(chan struct{}),
	}
	for _, o := range opts {
		o(p)
	}
	go p.reap()
	return p
}

// podConn is one port-forward connection to a pod; conn is set once ready is closed
// and err is nil.
type podConn struct {
	key   podKey
	ready chan struct{}
	conn  streamhttp.Connection
	err   error

	requestID atomic.Int64
	// active counts open streams; idleSince is when it last dropped to zero; retired
	// means new dials use another connection and this one closes with its last stream.
	// All three are guarded by Pool.mu.
	active    int
	idleSince time.Time
	retired   bool
}

// DialContext opens a connection to port of the pod, reusing the pod's port-forward
// connection when one is open. The returned conn is one port-forward stream: a refused
// connection inside the pod surfaces as an error from its first Read.
func (p *Pool) DialContext(ctx context.Context, namespace, pod string, port int) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("tunnel: invalid port %d", port)
	}
	key := podKey{namespace, pod}
	// A pooled connection may have died without us noticing yet (its close
	// notification races with this dial); retry once on a fresh one.
	for attempt := 0; ; attempt++ {
		pc, err := p.get(ctx, key)
		if err != nil {
			return nil, err
		}
		c, err := p.open(pc, port)
		if err == nil {
			return c, nil
		}
		p.drop(pc, err)
		if attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("tunnel: open stream to %s port %d: %w", key, port, err)
		}
	}
}

// get returns the ready connection for key, dialing it when there is none. Concurrent
// callers share one dial; a caller whose ctx ends stops waiting but the dial goes on
// for the others (client-go's dialers take no context).
func (p *Pool) get(ctx context.Context, key podKey) (*podConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	pc, ok := p.conns[key]
	if !ok {
		pc = &podConn{key: key, ready: make(chan struct{}), idleSince: time.Now()}
		p.conns[key] = pc
		go p.dial(pc)
	}
	// Count the caller as active while it waits so the reaper leaves the entry alone.
	pc.active++
	p.mu.Unlock()

	select {
	case <-pc.ready:
	case <-ctx.Done():
		p.release(pc)
		return nil, ctx.Err()
	}
	if pc.err != nil {
		p.release(pc)
		return nil, pc.err
	}
	return pc, nil
}

func (p *Pool) dial(pc *podConn) {
	start := time.Now()
	conn, err := p.connect(pc.key.namespace, pc.key.pod)
	if err != nil {
		p.log.Warn("port-forward failed", "pod", pc.key.String(), "error", err)
		pc.err = fmt.Errorf("tunnel: port-forward to pod %s: %w", pc.key, err)
		p.mu.Lock()
		if p.conns[pc.key] == pc {
			delete(p.conns, pc.key)
		}
		p.mu.Unlock()
		close(pc.ready)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = conn.Close()
		pc.err = ErrClosed
		close(pc.ready)
		return
	}
	pc.conn = conn
	p.mu.Unlock()
	close(pc.ready)
	p.log.Debug("port-forward opened", "pod", pc.key.String(), "duration", time.Since(start))

	go func() {
		select {
		case <-conn.CloseChan():
			p.drop(pc, ErrLostConnection)
		case <-p.stop:
		}
	}()
}

// ErrLostConnection is the reason logged when the API server or kubelet closes a pod's
// port-forward connection (pod deleted, node gone, API server restarted).
var ErrLostConnection = portforward.ErrLostConnectionToPod

// drop forgets pc (if it is still the pool's connection for its pod) and closes it, so
// the next dial reconnects.
func (p *Pool) drop(pc *podConn, reason error) {
	p.mu.Lock()
	current := p.conns[pc.key] == pc
	if current {
		delete(p.conns, pc.key)
	}
	p.mu.Unlock()
	if current {
		p.log.Debug("port-forward dropped", "pod", pc.key.String(), "reason", reason)
	}
	if pc.conn != nil {
		_ = pc.conn.Close()
	}
}

// retire stops new dials from using pc but lets its open streams finish; the
// connection closes with the last of them. It is for errors that say the connection is
// stale (the pod behind it was replaced) without breaking the streams that still work.
func (p *Pool) retire(pc *podConn, reason error) {
	p.mu.Lock()
	if p.conns[pc.key] == pc {
		delete(p.conns, pc.key)
		p.log.Debug("port-forward retired", "pod", pc.key.String(), "reason", reason)
	}
	pc.retired = true
	closeNow := pc.active == 0
	p.mu.Unlock()
	if closeNow {
		_ = pc.conn.Close()
	}
}

func (p *Pool) release(pc *podConn) {
	p.mu.Lock()
	pc.active--
	closeNow := pc.active == 0 && pc.retired && pc.conn != nil
	if pc.active == 0 {
		pc.idleSince = time.Now()
	}
	p.mu.Unlock()
	if closeNow {
		_ = pc.conn.Close()
	}
}

// open creates the error and data streams of one forwarded connection. The caller's
// active count taken in get is handed over to the returned conn (released on Close) or
// released here on failure.
func (p *Pool) open(pc *podConn, port int) (net.Conn, error) {
	key := pc.key
	c, err := pf.Open(pc.conn, port, pc.requestID.Add(1), pf.Options{
		RemoteAddr: key.String() + ":" + strconv.Itoa(port),
		Network:    "portforward",
		RemoteError: func(msg string) error {
			return fmt.Errorf("tunnel: forward to %s port %d: %s", key, port, msg)
		},
		ReadError: func(err error) error {
			return fmt.Errorf("tunnel: read error stream of %s port %d: %w", key, port, err)
		},
		// Like client-go's PortForwarder, treat a kubelet error as a sign the connection
		// may be stale (e.g. the pod was recreated under the same name) and make the next
		// dial reconnect; unlike it, let this connection's other streams finish.
		OnRemoteError: func(err error) { p.retire(pc, err) },
		// Closing the conn returns its streams to the pool.
		OnClose: func() { p.release(pc) },
	})
	if err != nil {
		p.release(pc)
		return nil, err
	}
	return c, nil
}

// Forget closes the pod's port-forward connection (streams on it fail) and its cached
// Transports' idle connections; call it when the pod is deleted.
func (p *Pool) Forget(namespace, pod string) {
	key := podKey{namespace, pod}
	p.mu.Lock()
	pc := p.conns[key]
	var ts []*http.Transport
	for tk, t := range p.transports {
		if tk.podKey == key {
			ts = append(ts, t)
			delete(p.transports, tk)
		}
	}
	p.mu.Unlock()
	for _, t := range ts {
		t.CloseIdleConnections()
	}
	if pc != nil {
		select {
		case <-pc.ready:
			p.drop(pc, errors.New("forgotten"))
		default:
			// Still dialing: let the dial finish and the reaper collect it.
		}
	}
}

// Transport returns an http.RoundTripper whose connections are port-forward streams to
// port of the pod; the request URL's host is ignored. Transports are cached per pod
// and port so keep-alive connections are reused.
func (p *Pool) Transport(namespace, pod string, port int) http.RoundTripper {
	key := transportKey{podKey{namespace, pod}, port}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.transports[key]; ok {
		return t
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return p.DialContext(ctx, namespace, pod, port)
		},
		// No environment proxies: the destination is the pod, not the URL's host.
		Proxy:                 nil,
		ForceAttemptHTTP2:     false,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       transportIdleTimeout,
		ResponseHeaderTimeout: 0, // prompts and SSE may take long; callers bound requests with their context
		// Pass encodings through untouched: the proxy relays what OpenCode sent.
		DisableCompression: true,
	}
	p.transports[key] = t
	return t
}

// Close closes every pod connection; dials after Close fail with ErrClosed.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	conns := p.conns
	p.conns = map[podKey]*podConn{}
	ts := p.transports
	p.transports = map[transportKey]*http.Transport{}
	close(p.stop)
	p.mu.Unlock()
	<-p.reaperDone
	for _, t := range ts {
		t.CloseIdleConnections()
	}
	for _, pc := range conns {
		select {
		case <-pc.ready:
			if pc.conn != nil {
				_ = pc.conn.Close()
			}
		default:
			// dial closes it when it finishes and sees p.closed.
		}
	}
}

// Len reports how many pod connections are open or being dialed (for metrics and tests).
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Pool) reap() {
	defer close(p.reaperDone)
	interval := p.idleTimeout / 4
	if interval < 10*time.Millisecond {
		interval = 10 * time.Millisecond
	}
	if interval > 30*time.Second {
		interval = 30 * time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			var idle []*podConn
			p.mu.Lock()
			for k, pc := range p.conns {
				if pc.active == 0 && pc.conn != nil && now.Sub(pc.idleSince) >= p.idleTimeout {
					delete(p.conns, k)
					idle = append(idle, pc)
					// Forget the pod's cached Transports too, so the cache does not grow
					// with every session ever reached; Transports already handed out keep
					// working (they dial through the pool).
					for tk := range p.transports {
						if tk.podKey == k {
							delete(p.transports, tk)
						}
					}
				}
			}
			p.mu.Unlock()
			for _, pc := range idle {
				p.log.Debug("port-forward idle, closing", "pod", pc.key.String())
				_ = pc.conn.Close()
			}
		}
	}
}
