package failpoint_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/cakeai/cake-agents/internal/failpoint"
)

// childEnv makes the test binary, run again by TestHit, act as a process with failpoints.
const childEnv = "CAKE_FAILPOINT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		failpoint.Hit("some", "other.step", "s1")
		failpoint.Hit("armed", "other", "s1")
		failpoint.Hit("armed.step", "", "s1")
		failpoint.Hit("armed", "step", "s2") // another session
		fmt.Println("passed some.other.step")
		failpoint.Hit("armed", "step", "s1")
		fmt.Println("passed armed.step")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHit runs a process with armed.step@s1 armed: a release build (no tag) must pass every
// step as if the variable were not there; a failpoints build must die of SIGKILL at
// exactly the armed step. `go test ./...` checks the first, `go test -tags failpoints`
// the second.
func TestHit(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", failpoint.EnvVar+"="+failpoint.Name("armed", "step", "s1"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()

	if !failpoint.Enabled {
		if err != nil {
			t.Fatalf("a build without the failpoints tag must ignore %s, but the process failed: %v\n%s", failpoint.EnvVar, err, stderr.String())
		}
		if got, want := stdout.String(), "passed some.other.step\npassed armed.step\n"; got != want {
			t.Fatalf("output %q, want %q", got, want)
		}
		if strings.Contains(stderr.String(), failpoint.Marker) {
			t.Fatalf("a release build wrote the failpoint marker: %s", stderr.String())
		}
		return
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the armed step did not crash the process: %v\n%s", err, stdout.String())
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("process ended with %v, want death by SIGKILL", ee)
	}
	if got, want := stdout.String(), "passed some.other.step\n"; got != want {
		t.Fatalf("output %q, want %q: only the armed step may crash", got, want)
	}
	if want := failpoint.Marker + "armed.step@s1\n"; stderr.String() != want {
		t.Fatalf("stderr %q, want %q", stderr.String(), want)
	}
}
