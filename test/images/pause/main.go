// Command pause is the pod sandbox's process for the real-node test tier (containerd's
// sandbox_image): it holds the pod's namespaces open by doing nothing until SIGTERM or SIGINT,
// and, as PID 1 of a pod that shares its PID namespace, reaps orphaned children. A static Go
// binary (CGO_ENABLED=0) on an empty image, built by hack/imagebuild from the Dockerfile beside it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	// Said only once the handlers are in place, so a caller knows a signal is now handled.
	_, _ = os.Stderr.WriteString("pause: waiting for SIGTERM or SIGINT\n")
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
