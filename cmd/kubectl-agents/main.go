// Command kubectl-agents is the `kubectl agents` plugin. All of it lives in plugin/cmd;
// this file only wires the process to it: streams, signals, the exit code.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	// Cloud auth providers (OIDC, ...) configured in users' kubeconfigs.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"github.com/cakeai/cake-agents/plugin/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	err := cmd.NewCmdRoot(streams).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: "+err.Error())
		os.Exit(1)
	}
}
