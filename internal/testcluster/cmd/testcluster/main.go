// Command testcluster starts and stops the local test cluster for people and for `make test`:
//
//	testcluster up [--dir DIR]      start detached (or find it running); print its env
//	testcluster down [--dir DIR]    stop it (idempotent)
//	testcluster status [--dir DIR]  report whether it runs and is healthy (exit 1 if not)
//	testcluster env [--dir DIR]     print KUBECONFIG and CAKE_TESTCLUSTER_DIR exports
//
// `eval "$(testcluster up)"` leaves the shell pointed at the cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

const usage = `usage: testcluster <up|down|status|env> [--dir DIR]

  up      start the local test cluster detached (or find it running) and print its env
  down    stop the cluster recorded in DIR (idempotent)
  status  report whether the cluster runs and is healthy; exit 1 if not
  env     print KUBECONFIG and CAKE_TESTCLUSTER_DIR exports for DIR

DIR defaults to $CACHE_DIR/cluster/run (CACHE_DIR defaults to .cache in the repository).
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd := args[0]
	fs := flag.NewFlagSet("testcluster "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", testcluster.DefaultRunDir(), "state dir of the cluster")
	binDir := fs.String("bin-dir", testcluster.DefaultBinDir(), "folder with the cluster binaries (up only)")
	timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the cluster to be ready (up only)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; see `testcluster --help`", fs.Arg(0))
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	switch cmd {
	case "up":
		return up(ctx, abs, *binDir, *timeout, stdout, stderr)
	case "down":
		if err := testcluster.StopDir(abs); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "test cluster in %s stopped\n", abs)
		return nil
	case "status":
		c, err := testcluster.Attach(ctx, abs)
		if err != nil {
			return err
		}
		st := c.State()
		fmt.Fprintf(stdout, "running: %s (node %s, state in %s)\n", st.Server, st.NodeName, abs)
		for _, p := range st.Processes {
			fmt.Fprintf(stdout, "  %-24s pid %-8d log %s\n", p.Name, p.PID, p.Log)
		}
		return nil
	case "env":
		if _, err := testcluster.ReadState(abs); err != nil {
			return fmt.Errorf("no test cluster in %s; start one with `testcluster up --dir %s`", abs, abs)
		}
		printEnv(stdout, abs)
		return nil
	default:
		return fmt.Errorf("unknown command %q; see `testcluster --help`", cmd)
	}
}

func up(ctx context.Context, dir, binDir string, timeout time.Duration, stdout, stderr io.Writer) error {
	if testcluster.Running(dir) {
		if _, err := testcluster.Attach(ctx, dir); err == nil {
			fmt.Fprintf(stderr, "test cluster already running in %s\n", dir)
			printEnv(stdout, dir)
			return nil
		}
		fmt.Fprintf(stderr, "test cluster in %s is unhealthy; restarting it\n", dir)
		if err := testcluster.StopDir(dir); err != nil {
			return err
		}
	}
	_, err := testcluster.Start(ctx, testcluster.Options{
		Dir:      dir,
		BinDir:   binDir,
		Detached: true,
		Timeout:  timeout,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(stderr, "testcluster: "+format+"\n", args...)
		},
	})
	if err != nil {
		return err
	}
	printEnv(stdout, dir)
	return nil
}

func printEnv(w io.Writer, dir string) {
	fmt.Fprintf(w, "export KUBECONFIG=%s\n", shellQuote(filepath.Join(dir, testcluster.KubeconfigFile)))
	fmt.Fprintf(w, "export %s=%s\n", testcluster.EnvDir, shellQuote(dir))
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
