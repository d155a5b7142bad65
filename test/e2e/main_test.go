// Package e2e drives the whole product the way people meet it: the chart installed on
// the local cluster, the real agent binary, `kubectl agents` found by kubectl's plugin
// lookup, session pods served by the real `opencode serve` talking to the fake model —
// once with SQLite and once with Postgres.
package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
)

// tools are the binaries the tests run, built or installed once per test binary.
type tools struct {
	root, bin                        string
	agent, plugin, kubectl, helm, oc string
}

var tl *tools

func TestMain(m *testing.M) {
	code := m.Run()
	_ = testcluster.Shutdown()
	_ = testpg.Shutdown()
	os.Exit(code)
}

// setup builds the agent and plugin from this tree (so a stale bin/ can't mislead),
// and finds kubectl, helm and OpenCode through the project's own install scripts.
func setup(t *testing.T) *tools {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests need the local cluster, OpenCode and helm (run without -short)")
	}
	if tl != nil {
		return tl
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	// Not t.TempDir: the binaries serve every test of this run.
	bin, err := os.MkdirTemp("", "cake-e2e-bin-")
	if err != nil {
		t.Fatal(err)
	}
	x := &tools{root: root, bin: bin}
	build := func(out, pkg, cgo string) {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED="+cgo)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	x.agent, x.plugin = filepath.Join(bin, "agent"), filepath.Join(bin, "kubectl-agents")
	build(x.agent, "./cmd/agent", "1")
	build(x.plugin, "./cmd/kubectl-agents", "0")
	script := func(args ...string) string {
		cmd := exec.Command(filepath.Join(root, args[0]), args[1:]...)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	x.helm = script("hack/tools.sh", "helm")
	x.oc = script("hack/install-opencode.sh")
	x.kubectl = filepath.Join(testcluster.DefaultBinDir(), "kubectl")
	if _, err := os.Stat(x.kubectl); err != nil {
		t.Fatalf("kubectl missing: run `make cluster-binaries`: %v", err)
	}
	if _, err := exec.LookPath("rg"); err != nil {
		t.Fatal("ripgrep (rg) is missing: OpenCode needs it; apt-get install ripgrep")
	}
	tl = x
	return x
}

// path is the PATH the plugin runs with: the built plugin, kubectl and OpenCode first.
func (x *tools) path() string {
	return strings.Join([]string{x.bin, filepath.Dir(x.kubectl), filepath.Dir(x.oc), os.Getenv("PATH")}, string(os.PathListSeparator))
}

// kubectlAgents runs `kubectl agents args...` as the user of kubeconfig, through
// kubectl's plugin lookup.
func (x *tools) kubectlAgents(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.kubectl, append([]string{"agents"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+x.path(), "KUBECONFIG="+kubeconfig, "HOME="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s: %v", what, timeout, err)
}

func lastField(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "/")+1:]
}
