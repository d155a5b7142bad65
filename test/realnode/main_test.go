// Package realnode runs the product as shipped on a real node: the chart installed by helm with
// the install guide's values, the agent in its own image answering its probes, the in-chart
// Postgres, `helm test`, and sessions whose init container clones for real and whose OpenCode
// runs from the data-plane image — on a kubelet with containerd and runc (shared/DESIGN §8.4),
// inside network and mount namespaces the test binary makes for itself.
//
// kwok, the fast tier, never starts a container: whatever must be shown to start is shown here.
package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/test/nodeenv"
)

// cluster is the real-node cluster every test of this package shares.
var cluster *testcluster.Cluster

// TestMain re-executes the test binary inside network and mount namespaces of its own (pod and
// bridge addresses are private-range: they must only exist there), starts one control plane
// with a real node and the images, runs the tests and stops it all.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// flag.Parse has not run yet: testing.Short() is only known after it.
	if shortFlag() {
		return m.Run() // every test skips itself under -short
	}
	if why := testcluster.CanRunRealNode(); why != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "realnode: cannot run in CI: %v\n", why)
			return 1
		}
		fmt.Fprintf(os.Stderr, "realnode: skipped: %v\n", why)
		skipReason = why.Error()
		return m.Run()
	}
	if inside, err := testcluster.InPrivateNamespaces(); err != nil {
		fmt.Fprintf(os.Stderr, "realnode: %v\n", err)
		return 1
	} else if !inside {
		code, err := testcluster.ReexecInPrivateNamespaces()
		if err != nil {
			fmt.Fprintf(os.Stderr, "realnode: %v\n", err)
			return 1
		}
		return code
	}
	imgs, err := nodeenv.LoadImages(nodeenv.DefaultIndex())
	if err != nil {
		fmt.Fprintf(os.Stderr, "realnode: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "cake-realnode-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "realnode: %v\n", err)
		return 1
	}
	began := time.Now()
	c, err := testcluster.Start(context.Background(), testcluster.Options{
		Dir:     dir,
		Timeout: 5 * time.Minute,
		Logf:    func(format string, args ...any) { fmt.Fprintf(os.Stderr, "realnode: "+format+"\n", args...) },
		RealNode: &testcluster.RealNodeOptions{
			Images:     imgs.Archives(),
			PauseImage: imgs.Name(nodeenv.ImgPause),
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "realnode: start the cluster (state and logs kept in %s): %v\n", dir, err)
		return 1
	}
	cluster = c
	images = imgs
	figure("cluster", "control plane + kubelet + containerd + kube-proxy + CoreDNS Ready in %s", time.Since(began).Round(time.Second))
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "realnode: stop: %v (state and logs kept in %s)\n", err, dir)
		if code == 0 {
			code = 1
		}
		return code
	}
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "realnode: logs kept in %s\n", filepath.Join(dir, "logs"))
	}
	return code
}

// skipReason is set when this machine cannot run a real node outside CI.
var skipReason string

// node returns the shared real-node cluster, skipping under -short (the unit tier) and where
// the machine cannot run one (never in CI: TestMain fails there).
func node(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("the real-node tier does not run with -short")
	}
	if skipReason != "" {
		t.Skip(skipReason)
	}
	return cluster
}

func shortFlag() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" || a == "--test.short" || a == "--test.short=true" {
			return true
		}
	}
	return false
}
