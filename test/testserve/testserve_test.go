package testserve

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// A request in flight when the context ends still gets its whole answer, and Serve
// returns nil after that clean shutdown.
func TestServeFinishesRequestsInFlight(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, srv, l) }()

	body := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + l.Addr().String())
		if err != nil {
			body <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body <- string(b)
	}()
	<-entered
	cancel()
	time.Sleep(50 * time.Millisecond) // let Shutdown start while the handler still runs
	close(release)
	if got := <-body; got != "done" {
		t.Fatalf("in-flight request got %q, want its whole answer", got)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after shutdown: %v, want nil", err)
	}
}

// A server that stops by itself (its listener closed) returns that error at once.
func TestServeReturnsTheServersOwnError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	err = Serve(context.Background(), &http.Server{ReadHeaderTimeout: time.Second}, l)
	if err == nil {
		t.Fatal("Serve on a closed listener returned nil")
	}
}
