package testcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cakeai/cake-agents/internal/ownedproc"
)

// EnvPrivateNamespaces is set in the environment of a process that ReexecInPrivateNamespaces
// started, so it does not re-execute itself again.
const EnvPrivateNamespaces = "CAKE_TESTCLUSTER_PRIVATE_NS"

// EnvOuterNamespaces carries the namespaces ReexecInPrivateNamespaces was called from, so the
// re-executed process can check that it really left them.
const EnvOuterNamespaces = "CAKE_TESTCLUSTER_OUTER_NS"

// InPrivateNamespaces reports whether this process was started by ReexecInPrivateNamespaces and
// runs in network and mount namespaces other than those of the process that called it. A real
// node is only started there: its bridge and pod addresses are private-range, and traffic to
// them must stay inside a namespace the test run made; its mounts (faked sysctls, a tmpfs over
// /run/containerd) must vanish with it. (PID 1's namespaces are not readable on every machine,
// so the caller's are the reference.)
func InPrivateNamespaces() (bool, error) {
	if os.Getenv(EnvPrivateNamespaces) != "1" {
		return false, nil
	}
	self, err := currentNamespaces()
	if err != nil {
		return false, err
	}
	outer := os.Getenv(EnvOuterNamespaces)
	if outer == "" || outer == self {
		return false, fmt.Errorf("%s is set but the namespaces did not change (%s)", EnvPrivateNamespaces, self)
	}
	for _, a := range strings.Split(self, ",") {
		for _, b := range strings.Split(outer, ",") {
			if a == b {
				return false, fmt.Errorf("still in namespace %s of the caller", a)
			}
		}
	}
	return true, nil
}

// currentNamespaces returns "net:[N],mnt:[M]" of this process.
func currentNamespaces() (string, error) {
	var ids []string
	for _, ns := range []string{"net", "mnt"} {
		id, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			return "", err
		}
		ids = append(ids, id)
	}
	return strings.Join(ids, ","), nil
}

// CanRunRealNode reports why a real node cannot run on this machine, or nil. It needs root
// (namespaces, cgroups, mounts) and unshare from util-linux.
func CanRunRealNode() error {
	if os.Geteuid() != 0 {
		return errors.New("a real node needs root (network and mount namespaces, cgroups, containerd)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return errors.New("unshare (util-linux) is not installed: run hack/install-deps.sh")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("ip (iproute2) is not installed: run hack/install-deps.sh")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return errors.New("iptables is not installed (kube-proxy needs it): run hack/install-deps.sh")
	}
	return nil
}

// ReexecInPrivateNamespaces runs this program again, with the same arguments and environment,
// inside new network and mount namespaces (`unshare --net --mount --propagation private`), and
// returns its exit code. The child dies with this process (--kill-child), and it sees
// EnvPrivateNamespaces so it does not re-execute itself. Call it first thing in a TestMain when
// InPrivateNamespaces reports false; nothing inside can reach the network, so build before.
func ReexecInPrivateNamespaces() (int, error) {
	return Reexec(ReexecOptions{})
}

// ReexecOptions tune Reexec.
type ReexecOptions struct {
	// ExtraFiles are passed to the child as file descriptors 3, 4, ... A listening socket
	// opened here stays in this network namespace: the child can serve this side through it
	// (the demo reaches the apiserver inside from the host's loopback this way).
	ExtraFiles []*os.File
	// ForwardInterrupt starts the child in a process group of its own, with unshare ignoring
	// SIGINT, and turns SIGINT or SIGTERM received here into SIGINT to that group. Without it
	// a Ctrl-C kills unshare, which SIGKILLs the child (--kill-child) before it can stop what
	// it started.
	ForwardInterrupt bool
}

// Reexec is ReexecInPrivateNamespaces with options.
func Reexec(o ReexecOptions) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	args := append([]string{"--net", "--mount", "--propagation", "private", "--kill-child", "--", self}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = o.ExtraFiles
	outer, err := currentNamespaces()
	if err != nil {
		return 0, err
	}
	if os.Getenv(EnvPrivateNamespaces) != "" {
		return 0, errors.New("already re-executed once and still not in private namespaces")
	}
	cmd.Env = append(os.Environ(), EnvPrivateNamespaces+"=1", EnvOuterNamespaces+"="+outer)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var signals chan os.Signal
	if o.ForwardInterrupt {
		cmd.SysProcAttr.Setpgid = true
		// A signal ignored at exec stays ignored in unshare; the child's signal.Notify turns
		// SIGINT back on for itself.
		signal.Ignore(os.Interrupt)
	}
	err = ownedproc.Start(cmd)
	if o.ForwardInterrupt {
		signals = make(chan os.Signal, 1)
		signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(signals)
	}
	if err != nil {
		return 0, fmt.Errorf("unshare: %w", err)
	}
	if o.ForwardInterrupt {
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case <-signals:
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
				case <-done:
					return
				}
			}
		}()
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("unshare: %w", err)
	}
	return 0, nil
}
