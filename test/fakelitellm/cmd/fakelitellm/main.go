// Command fakelitellm serves the fake LiteLLM proxy (package fakelitellm) for the demo
// and for tests that run it out of process. The master key is read from the
// FAKELITELLM_MASTER_KEY environment variable (never a flag, so it is not in ps); the
// base URL sessions use (ending in /v1) is printed on stdout once it listens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/cakeai/cake-agents/test/fakelitellm"
	"github.com/cakeai/cake-agents/test/testserve"
)

func main() {
	testserve.Main(func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv("FAKELITELLM_MASTER_KEY"), os.Stdout)
	})
}

func run(ctx context.Context, args []string, masterKey string, out io.Writer) error {
	fs := flag.NewFlagSet("fakelitellm", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free one)")
	cost := fs.Float64("cost-per-request", fakelitellm.DefaultCostPerRequest, "USD charged to a key for each chat completion")
	delay := fs.Duration("chunk-delay", 0, "pause between streamed chunks, to make streaming visible")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if masterKey == "" {
		return errors.New("set FAKELITELLM_MASTER_KEY to the master key the agent will use")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (pick another address with -listen)", *listen, err)
	}
	s := fakelitellm.New(masterKey)
	s.CostPerRequest = *cost
	s.Model.ChunkDelay = *delay
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(out, "http://%s/v1\n", l.Addr())
	return testserve.Serve(ctx, srv, l)
}
