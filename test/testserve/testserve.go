// Package testserve runs the HTTP servers of the test fixtures' commands (fakemodel,
// fakelitellm, gitserver) the same way: until SIGINT or SIGTERM, then a graceful shutdown,
// so a test or the demo that stops one never cuts a response it is still reading.
package testserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// ShutdownGrace bounds how long Serve waits for requests in flight once told to stop.
const ShutdownGrace = 5 * time.Second

// Main runs run with a context that ends on SIGINT or SIGTERM and exits 1 with the error
// on stderr when it fails; it is the whole main function of a fixture command.
func Main(run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

// Serve serves srv on l (over TLS when srv.TLSConfig is set, with its certificates) until
// ctx ends, then shuts srv down within ShutdownGrace. It returns the server's own error when
// it stops by itself, and nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(l, "", "")
			return
		}
		errc <- srv.Serve(l)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
