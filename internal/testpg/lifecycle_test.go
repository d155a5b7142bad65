package testpg

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "CAKE_TESTPG_CHILD"

// TestNoStrayServer starts a server from a child process (this test binary again),
// SIGKILLs the child, and expects the postmaster and its backends to die with it.
func TestNoStrayServer(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		s, err := StartServer(context.Background(), Options{Prefix: ownedPrefix})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		writeOwner(s.Dir) //nolint:errcheck
		fmt.Println("pid", s.PID, s.Dir)
		time.Sleep(time.Hour)
	}
	if testing.Short() {
		t.Skip("starts a PostgreSQL server; skipped with -short")
	}
	if _, err := FindBinaries(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoStrayServer$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pid ") {
		cmd.Process.Kill()
		t.Fatalf("child said %q, %v", line, err)
	}
	fields := strings.Fields(line)
	pid, _ := strconv.Atoi(fields[1])
	dir := fields[2]
	if !isPostgres(pid) {
		t.Fatalf("pid %d is not postgres", pid)
	}
	cmd.Process.Kill()
	cmd.Wait() //nolint:errcheck
	deadline := time.Now().Add(30 * time.Second)
	for isPostgres(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck
			t.Fatalf("postmaster %d outlived its test binary", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The next run sweeps the abandoned dir.
	sweepAbandoned()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		os.RemoveAll(dir)
		t.Errorf("abandoned dir %s not swept: %v", dir, err)
	}
}
