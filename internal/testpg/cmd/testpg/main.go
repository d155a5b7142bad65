// Command testpg starts and stops one throwaway PostgreSQL server shared by every test
// package of a run:
//
//	eval "$(testpg up --dir DIR)"   # starts it (or finds it running); prints export lines
//	go test ./...                   # tests use $CAKE_TEST_POSTGRES_URL, one database each
//	testpg down --dir DIR           # stops it and removes its data
//
// DIR keeps only the state file; the data lives in a temp dir the postgres OS user can
// reach.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/cakeai/cake-agents/internal/testpg"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

const usage = "usage: testpg up|down [--dir DIR] [--durable]"

func run(args []string, out, errOut io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("testpg "+args[0], flag.ContinueOnError)
	fs.SetOutput(errOut)
	dir := fs.String("dir", filepath.Join(os.TempDir(), "cake-testpg-state"), "state directory of the shared server")
	durable := fs.Bool("durable", false, "up: keep production durability (fsync, synchronous_commit, full_page_writes on), for benchmarks")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	state := filepath.Join(*dir, "state.json")
	switch args[0] {
	case "up":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if r, err := load(state); err == nil && r.Alive() {
			printExports(out, r)
			return nil
		}
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return err
		}
		s, err := testpg.StartServer(ctx, testpg.Options{Detached: true, Prefix: "cake-testpg-shared-", Durable: *durable})
		if err != nil {
			return err
		}
		r := s.Record()
		data, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(state, data, 0o644); err != nil {
			_ = r.Stop()
			return err
		}
		fmt.Fprintf(errOut, "testpg: postgres running at %s (data in %s)\n", r.URL, r.Dir)
		printExports(out, r)
		return nil
	case "down":
		r, err := load(state)
		if errors.Is(err, os.ErrNotExist) {
			return nil // nothing to stop
		}
		if err != nil {
			return err
		}
		if err := r.Stop(); err != nil {
			return err
		}
		return os.Remove(state)
	}
	return errors.New(usage)
}

func load(path string) (testpg.Record, error) {
	var r testpg.Record
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func printExports(out io.Writer, r testpg.Record) {
	fmt.Fprintf(out, "export %s='%s'\n", testpg.EnvURL, r.URL)
}
