package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// fakeKubelet speaks the server side of the port-forward protocol the way the API
// server and kubelet do: it accepts a SPDY upgrade on .../pods/{pod}/portforward
// (refusing WebSocket so the client's fallback is exercised), pairs each error stream
// with its data stream by request id, and connects the data stream to targets[port].
type fakeKubelet struct {
	t       *testing.T
	srv     *httptest.Server
	targets map[string]string // remote port -> local address

	upgrades  atomic.Int32
	wsRefused atomic.Int32
	paths     chan string

	mu    sync.Mutex
	conns []streamhttp.Connection
}

func newFakeKubelet(t *testing.T, targets map[string]string) *fakeKubelet {
	t.Helper()
	f := &fakeKubelet{t: t, targets: targets, paths: make(chan string, 100)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.closeConns()
		f.srv.Close()
	})
	return f
}

func (f *fakeKubelet) serve(w http.ResponseWriter, r *http.Request) {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		f.wsRefused.Add(1)
		http.Error(w, "websocket port-forward not supported here", http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/portforward") {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	f.paths <- r.URL.Path
	if _, err := streamhttp.Handshake(r, w, []string{portforward.PortForwardProtocolV1Name}); err != nil {
		return
	}
	type pair struct{ errs, data streamhttp.Stream }
	var mu sync.Mutex
	pairs := map[string]*pair{}
	streams := make(chan streamhttp.Stream, 16)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s streamhttp.Stream, replySent <-chan struct{}) error {
		streams <- s
		return nil
	})
	if conn == nil {
		return
	}
	f.upgrades.Add(1)
	f.mu.Lock()
	f.conns = append(f.conns, conn)
	f.mu.Unlock()
	go func() {
		for {
			select {
			case <-conn.CloseChan():
				return
			case s := <-streams:
				id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
				mu.Lock()
				p := pairs[id]
				if p == nil {
					p = &pair{}
					pairs[id] = p
				}
				if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
					p.errs = s
				} else {
					p.data = s
				}
				complete := p.errs != nil && p.data != nil
				if complete {
					delete(pairs, id)
				}
				mu.Unlock()
				if complete {
					go f.forward(p.errs, p.data)
				}
			}
		}
	}()
}

func (f *fakeKubelet) forward(errs, data streamhttp.Stream) {
	defer errs.Close()
	defer data.Close()
	port := data.Headers().Get(corev1.PortHeader)
	target, ok := f.targets[port]
	if !ok {
		fmt.Fprintf(errs, "error forwarding port %s to pod: nothing listens on that port", port)
		return
	}
	c, err := net.Dial("tcp", target)
	if err != nil {
		fmt.Fprintf(errs, "error forwarding port %s to pod: %v", port, err)
		return
	}
	defer c.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, data)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(data, c)
	_ = data.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (f *fakeKubelet) closeConns() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
}

func (f *fakeKubelet) pool(t *testing.T, opts ...Option) *Pool {
	t.Helper()
	p, err := NewPool(&rest.Config{Host: f.srv.URL}, hclog.NewNullLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// echoServer answers every line with "echo: <line>".
func echoServer(t *testing.T) string { return testcluster.EchoServer(t, "echo: ").Addr().String() }

func roundTrip(t *testing.T, c net.Conn, line string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := "echo: " + line + "\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestPoolSharesOneConnectionPerPod(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{"4096": echoServer(t)})
	p := f.pool(t)
	ctx := context.Background()

	var conns []net.Conn
	for i := range 5 {
		c, err := p.DialContext(ctx, "ns1", "cake-session-a", 4096)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		roundTrip(t, c, fmt.Sprintf("hello %d", i))
	}
	if got := f.upgrades.Load(); got != 1 {
		t.Fatalf("five dials to one pod made %d port-forward connections, want 1", got)
	}
	if f.wsRefused.Load() == 0 {
		t.Fatal("the WebSocket dialer was not tried first")
	}
	if path := <-f.paths; path != "/api/v1/namespaces/ns1/pods/cake-session-a/portforward" {
		t.Fatalf("port-forward went to %q", path)
	}
	for _, c := range conns {
		c.Close()
	}

	// Another pod gets its own connection.
	c, err := p.DialContext(ctx, "ns1", "cake-session-b", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "b")
	if got := f.upgrades.Load(); got != 2 {
		t.Fatalf("a second pod made %d connections in total, want 2", got)
	}
	if p.Len() != 2 {
		t.Fatalf("Len = %d, want 2", p.Len())
	}
}

func TestPoolConcurrentDialsShareOneUpgrade(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{"4096": echoServer(t)})
	p := f.pool(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			c, err := p.DialContext(context.Background(), "ns", "pod", 4096)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			line := fmt.Sprintf("n%d", i)
			fmt.Fprintf(c, "%s\n", line)
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != "echo: "+line+"\n" {
				errs <- fmt.Errorf("got %q, %v", got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := f.upgrades.Load(); got != 1 {
		t.Fatalf("20 concurrent dials made %d connections, want 1", got)
	}
}

func TestPoolReportsRemoteError(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{})
	p := f.pool(t)
	c, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = io.ReadAll(c)
	if err == nil || !strings.Contains(err.Error(), "nothing listens on that port") {
		t.Fatalf("read from a closed pod port: err = %v, want the kubelet's message", err)
	}
	// The error retires the connection: the next dial reconnects.
	if p.Len() != 0 {
		t.Fatal("a connection that reported a kubelet error still serves new dials")
	}
	c2, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if got := f.upgrades.Load(); got != 2 {
		t.Fatalf("%d port-forward connections after a kubelet error, want 2", got)
	}
}

func TestPoolReconnectsAfterConnectionLoss(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{"4096": echoServer(t)})
	p := f.pool(t)
	c, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "before")
	f.closeConns()
	// The stream must end (with EOF or an error) once its connection is gone.
	_, _ = io.ReadAll(c)
	c.Close()

	deadline := time.Now().Add(5 * time.Second)
	for p.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c2, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	roundTrip(t, c2, "after")
	if got := f.upgrades.Load(); got != 2 {
		t.Fatalf("after losing the connection the pool made %d connections in total, want 2", got)
	}
}

func TestPoolClosesIdleConnections(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{"4096": echoServer(t)})
	p := f.pool(t, WithIdleTimeout(100*time.Millisecond))
	c, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "x")
	// An open stream keeps the connection however long it lasts.
	time.Sleep(300 * time.Millisecond)
	if p.Len() != 1 {
		t.Fatal("a connection with an open stream was reaped")
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection was never closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPoolDialFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `pods "pod" not found`, http.StatusNotFound)
	}))
	defer srv.Close()
	p, err := NewPool(&rest.Config{Host: srv.URL}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.DialContext(context.Background(), "ns", "pod", 4096)
	if err == nil || !strings.Contains(err.Error(), "ns/pod") {
		t.Fatalf("err = %v, want a port-forward error naming the pod", err)
	}
	if p.Len() != 0 {
		t.Fatal("a failed dial stayed in the pool")
	}
}

func TestPoolCloseRefusesDials(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{"4096": echoServer(t)})
	p := f.pool(t)
	p.Close()
	if _, err := p.DialContext(context.Background(), "ns", "pod", 4096); !errors.Is(err, ErrClosed) {
		t.Fatalf("dial after Close: err = %v, want ErrClosed", err)
	}
}

func TestTransportRoundTrip(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s", r.URL.Path)
	}))
	defer backend.Close()
	f := newFakeKubelet(t, map[string]string{"4096": backend.Listener.Addr().String()})
	p := f.pool(t)
	client := &http.Client{Transport: p.Transport("ns", "pod", 4096)}
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("http://opencode/x%d", i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("path=/x%d", i); string(b) != want {
			t.Fatalf("body %q, want %q", b, want)
		}
	}
	if p.Transport("ns", "pod", 4096) != client.Transport {
		t.Fatal("Transport is not cached per pod and port")
	}
	if got := f.upgrades.Load(); got != 1 {
		t.Fatalf("three requests made %d connections, want 1", got)
	}
}

func TestPoolForget(t *testing.T) {
	f := newFakeKubelet(t, map[string]string{"4096": echoServer(t)})
	p := f.pool(t)
	c, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "before")
	p.Forget("ns", "pod")
	// The forgotten connection is closed: its streams end.
	done := make(chan struct{})
	go func() {
		_, _ = io.ReadAll(c)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a stream of a forgotten pod stayed open")
	}
	c.Close()
	c2, err := p.DialContext(context.Background(), "ns", "pod", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	roundTrip(t, c2, "after")
	if got := f.upgrades.Load(); got != 2 {
		t.Fatalf("%d connections after Forget, want 2", got)
	}
}
