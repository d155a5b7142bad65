// Command fakemodel serves the fake OpenAI-compatible model (package fakemodel) for the
// demo and end-to-end tests that run OpenCode out of process. It prints its base URL
// (the value for a provider's baseURL) on stdout once it listens, and serves
// GET /_requests so those tests can see what the model received.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/test/fakemodel"
	"github.com/cakeai/cake-agents/test/testserve"
)

func main() {
	testserve.Main(func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Stdout)
	})
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fakemodel", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free one)")
	delay := fs.Duration("chunk-delay", 0, "pause between streamed chunks, to make streaming visible")
	keyFile := fs.String("require-key-file", "", "file holding the only API key accepted (Bearer); other requests get 401")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (pick another address with -listen)", *listen, err)
	}
	model := fakemodel.New()
	model.ChunkDelay = *delay
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("-require-key-file: %w", err)
		}
		model.RequireKey = strings.TrimSpace(string(b))
	}
	srv := &http.Server{Handler: model, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(out, "http://%s/v1\n", l.Addr())
	return testserve.Serve(ctx, srv, l)
}
