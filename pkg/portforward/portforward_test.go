package portforward

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/streaming/pkg/httpstream"
)

var errReset = errors.New("stream reset")

// fakeStream is one in-memory stream: the client reads what the pod writes to podOut
// and writes what the pod reads from podIn.
type fakeStream struct {
	headers http.Header
	id      uint32

	fromPod *io.PipeReader
	podOut  *io.PipeWriter
	toPod   *io.PipeWriter
	podIn   *io.PipeReader

	closed, reset atomic.Int32
}

func newFakeStream(h http.Header, id uint32) *fakeStream {
	s := &fakeStream{headers: h.Clone(), id: id}
	s.fromPod, s.podOut = io.Pipe()
	s.podIn, s.toPod = io.Pipe()
	return s
}

func (s *fakeStream) Read(b []byte) (int, error)  { return s.fromPod.Read(b) }
func (s *fakeStream) Write(b []byte) (int, error) { return s.toPod.Write(b) }
func (s *fakeStream) Close() error {
	s.closed.Add(1)
	return s.toPod.Close()
}

func (s *fakeStream) Reset() error {
	s.reset.Add(1)
	_ = s.fromPod.CloseWithError(errReset)
	_ = s.toPod.CloseWithError(errReset)
	return nil
}
func (s *fakeStream) Headers() http.Header { return s.headers }
func (s *fakeStream) Identifier() uint32   { return s.id }

// fakeConnection hands out fakeStreams; failOn makes the n-th CreateStream (1-based) fail.
type fakeConnection struct {
	failOn int

	mu      sync.Mutex
	streams []*fakeStream
	removed []httpstream.Stream
}

func (c *fakeConnection) CreateStream(h http.Header) (httpstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.streams)+1 == c.failOn {
		c.failOn = 0
		return nil, errors.New("connection broken")
	}
	s := newFakeStream(h, uint32(len(c.streams)+1))
	c.streams = append(c.streams, s)
	return s, nil
}

func (c *fakeConnection) Close() error                 { return nil }
func (c *fakeConnection) CloseChan() <-chan bool       { return make(chan bool) }
func (c *fakeConnection) SetIdleTimeout(time.Duration) {}
func (c *fakeConnection) RemoveStreams(s ...httpstream.Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = append(c.removed, s...)
}

// open opens a Conn on a fresh fakeConnection and returns the pod's ends of its error
// and data streams.
func open(t *testing.T, opts Options) (*Conn, *fakeConnection, *fakeStream, *fakeStream) {
	t.Helper()
	fc := &fakeConnection{}
	c, err := Open(fc, 8080, 7, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if len(fc.streams) != 2 {
		t.Fatalf("Open created %d streams, want 2", len(fc.streams))
	}
	return c, fc, fc.streams[0], fc.streams[1]
}

func TestOpenCreatesTheErrorAndDataStreamPair(t *testing.T) {
	_, _, errs, data := open(t, Options{})
	for _, tc := range []struct {
		s    *fakeStream
		want string
	}{{errs, corev1.StreamTypeError}, {data, corev1.StreamTypeData}} {
		h := tc.s.Headers()
		if got := h.Get(corev1.StreamType); got != tc.want {
			t.Errorf("stream %d: type %q, want %q", tc.s.id, got, tc.want)
		}
		if got := h.Get(corev1.PortHeader); got != "8080" {
			t.Errorf("stream %d: port %q, want 8080", tc.s.id, got)
		}
		if got := h.Get(corev1.PortForwardRequestIDHeader); got != "7" {
			t.Errorf("stream %d: request id %q, want 7", tc.s.id, got)
		}
	}
	// The error stream is read-only for the client: its write side is closed at once.
	if errs.closed.Load() != 1 {
		t.Error("the error stream was not closed for writing")
	}
	if data.closed.Load() != 0 {
		t.Error("the data stream was closed for writing")
	}
}

func TestOpenFailures(t *testing.T) {
	fc := &fakeConnection{failOn: 1}
	if _, err := Open(fc, 80, 1, Options{}); err == nil || !strings.HasPrefix(err.Error(), "create error stream: ") {
		t.Fatalf("error stream refused: err = %v", err)
	}

	fc = &fakeConnection{failOn: 2}
	closed := false
	_, err := Open(fc, 80, 1, Options{OnClose: func() { closed = true }})
	if err == nil || !strings.HasPrefix(err.Error(), "create data stream: ") {
		t.Fatalf("data stream refused: err = %v", err)
	}
	errs := fc.streams[0]
	if errs.reset.Load() != 1 || len(fc.removed) != 1 || fc.removed[0] != errs {
		t.Fatalf("data stream refused: error stream reset %d times, removed %v; want it reset and removed",
			errs.reset.Load(), fc.removed)
	}
	if closed {
		t.Fatal("OnClose called for a conn that was never returned")
	}
}

func TestReadReturnsTheKubeletError(t *testing.T) {
	const msg = "error forwarding port 8080 to pod: nothing listens on that port"
	for _, dataFirst := range []bool{false, true} {
		var got []error
		c, _, errs, data := open(t, Options{
			RemoteAddr:    "ns/pod:8080",
			OnRemoteError: func(err error) { got = append(got, err) },
		})
		go func() {
			// The kubelet writes the message and closes both streams, in either order.
			if dataFirst {
				_ = data.podOut.Close()
				time.Sleep(20 * time.Millisecond)
			}
			_, _ = io.WriteString(errs.podOut, msg)
			_ = errs.podOut.Close()
			_ = data.podOut.Close()
		}()
		_, err := io.ReadAll(c)
		want := "port-forward to ns/pod:8080: " + msg
		if err == nil || err.Error() != want {
			t.Fatalf("data stream closed first %v: err = %v, want %q", dataFirst, err, want)
		}
		if len(got) != 1 || !errors.Is(got[0], err) {
			t.Fatalf("data stream closed first %v: OnRemoteError got %v, want one call with %v", dataFirst, got, err)
		}
	}
}

func TestReadReturnsEOFWithoutAKubeletError(t *testing.T) {
	called := false
	c, _, errs, data := open(t, Options{OnRemoteError: func(error) { called = true }})
	go func() {
		_, _ = io.WriteString(data.podOut, "hello")
		_ = errs.podOut.Close()
		_ = data.podOut.Close()
	}()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("ReadAll = %q, %v; want \"hello\", nil", b, err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read after the end = %d, %v; want 0, io.EOF", n, err)
	}
	if called {
		t.Fatal("OnRemoteError called without a kubelet error")
	}
}

func TestCustomErrors(t *testing.T) {
	broken := errors.New("boom")
	c, _, errs, data := open(t, Options{
		RemoteError: func(msg string) error { return errors.New("custom: " + msg) },
		ReadError:   func(err error) error { return errors.Join(errors.New("read failed"), err) },
	})
	_ = errs.podOut.CloseWithError(broken)
	_ = data.podOut.Close()
	if _, err := io.ReadAll(c); !errors.Is(err, broken) || !strings.HasPrefix(err.Error(), "read failed") {
		t.Fatalf("error stream broken: err = %v, want ReadError's", err)
	}

	c, _, errs, data = open(t, Options{RemoteError: func(msg string) error { return errors.New("custom: " + msg) }})
	_, _ = io.WriteString(errs.podOut, "refused")
	_ = errs.podOut.Close()
	_ = data.podOut.Close()
	if _, err := io.ReadAll(c); err == nil || err.Error() != "custom: refused" {
		t.Fatalf("kubelet error: err = %v, want RemoteError's", err)
	}
}

func TestDefaultReadError(t *testing.T) {
	broken := errors.New("boom")
	c, _, errs, data := open(t, Options{RemoteAddr: "ns/pod:8080"})
	_ = errs.podOut.CloseWithError(broken)
	_ = data.podOut.Close()
	_, err := io.ReadAll(c)
	if !errors.Is(err, broken) || err.Error() != "port-forward to ns/pod:8080: read error stream: boom" {
		t.Fatalf("error stream broken: err = %v", err)
	}

	// A (wrapped) io.EOF on the error stream is no error.
	c, _, errs, data = open(t, Options{})
	_ = errs.podOut.CloseWithError(errors.Join(errors.New("wrapped"), io.EOF))
	_ = data.podOut.Close()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("error stream ended with a wrapped io.EOF: err = %v, want nil", err)
	}
}

func TestCloseWriteHalfCloses(t *testing.T) {
	c, _, _, data := open(t, Options{})
	go func() {
		_, _ = io.WriteString(c, "question")
		_ = c.CloseWrite()
	}()
	q, err := io.ReadAll(data.podIn)
	if err != nil || string(q) != "question" {
		t.Fatalf("pod read %q, %v; want \"question\" and EOF", q, err)
	}
	go func() {
		_, _ = io.WriteString(data.podOut, "answer")
		_ = data.podOut.Close()
	}()
	b := make([]byte, 6)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "answer" {
		t.Fatalf("read after CloseWrite = %q, %v; want \"answer\"", b, err)
	}
}

func TestCloseResetsAndRemovesTheStreamsOnce(t *testing.T) {
	closes := 0
	c, fc, errs, data := open(t, Options{OnClose: func() { closes++ }})
	for range 2 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if closes != 1 {
		t.Fatalf("OnClose called %d times, want 1", closes)
	}
	if errs.reset.Load() != 1 || data.reset.Load() != 1 {
		t.Fatalf("resets: error stream %d, data stream %d; want 1 each", errs.reset.Load(), data.reset.Load())
	}
	if len(fc.removed) != 2 || fc.removed[0] != data || fc.removed[1] != errs {
		t.Fatalf("removed streams %v, want the data and error streams", fc.removed)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read after Close succeeded")
	}
}

func TestAddrsAndDeadlines(t *testing.T) {
	c, _, _, _ := open(t, Options{RemoteAddr: "ns/pod:8080"})
	if got := c.RemoteAddr(); got.Network() != "port-forward" || got.String() != "ns/pod:8080" {
		t.Errorf("RemoteAddr = %s %s", got.Network(), got)
	}
	if got := c.LocalAddr(); got.Network() != "port-forward" || got.String() != "port-forward" {
		t.Errorf("LocalAddr = %s %s", got.Network(), got)
	}
	c, _, _, _ = open(t, Options{RemoteAddr: "x", Network: "portforward"})
	if got := c.RemoteAddr().Network(); got != "portforward" {
		t.Errorf("RemoteAddr network = %q with Options.Network set, want portforward", got)
	}
	past := time.Now().Add(-time.Hour)
	for _, set := range []func(time.Time) error{c.SetDeadline, c.SetReadDeadline, c.SetWriteDeadline} {
		if err := set(past); err != nil {
			t.Errorf("setting a deadline: %v, want it ignored", err)
		}
	}
}
