package realnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/test/nodeenv"
)

// images are the built images imported into the node.
var images nodeenv.Images

// figure records a real-node figure for the run's summary and logs it.
func figure(scenario, format string, args ...any) {
	line, err := figures.Record("real-node", scenario, format, args...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "realnode: record figure: %v\n", err)
	}
	fmt.Fprintln(os.Stderr, line)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// tool finds a built tool: helm from hack/tools.sh's cache, kubectl beside the cluster.
func tool(t testing.TB, name string) string {
	t.Helper()
	var p string
	switch name {
	case "helm":
		p = filepath.Join(testcluster.DefaultCacheDir(), "tools", "bin", "helm")
	case "kubectl":
		p = filepath.Join(testcluster.DefaultBinDir(), "kubectl")
	case "kubectl-agents":
		p = filepath.Join(repoRoot(t), "bin", "kubectl-agents")
	default:
		t.Fatalf("unknown tool %s", name)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built (hack/test.sh all builds it before the tests): %v", name, err)
	}
	return p
}

// env is the environment of commands run against the cluster: its admin kubeconfig, helm's
// state in a temp dir, and bin/ (kubectl-agents), kubectl's folder and the pinned OpenCode
// (attach runs the user's local `opencode attach`, as on a laptop) on PATH.
func env(t testing.TB) []string {
	t.Helper()
	home := t.TempDir()
	path := strings.Join([]string{
		filepath.Join(repoRoot(t), "bin"),
		testcluster.DefaultBinDir(),
		filepath.Join(testcluster.DefaultCacheDir(), "opencode", "bin"),
		os.Getenv("PATH"),
	}, ":")
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") && !strings.HasPrefix(kv, "PATH=") {
			out = append(out, kv)
		}
	}
	return append(out,
		"KUBECONFIG="+cluster.Kubeconfig(),
		"PATH="+path,
		"HOME="+home,
		"HELM_CACHE_HOME="+filepath.Join(home, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "helm-config"),
		"HELM_DATA_HOME="+filepath.Join(home, "helm-data"),
	)
}

// run runs a command in the repository root and fails the test with its output on error.
func run(t testing.TB, env []string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, env, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t testing.TB, env []string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// namespace creates a namespace for one scenario, enforcing the restricted Pod Security
// Standard like a production session namespace, and deletes it (waiting) at the end.
func namespace(t *testing.T, name string, restricted bool) string {
	t.Helper()
	labels := map[string]string{}
	if restricted {
		labels["pod-security.kubernetes.io/enforce"] = "restricted"
	}
	ctx := context.Background()
	kube := cluster.AdminClient()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNamespace(t, name) })
	return name
}

func deleteNamespace(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube := cluster.AdminClient()
	if err := kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", name, err)
		return
	}
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("namespace %s still there after 3 minutes", name)
	}
}

// podLogs returns the state and logs of the pods matching selector in ns, for failure
// messages.
func podLogs(ns, selector string) string { return nodeenv.PodLogs(cluster.AdminClient(), ns, selector) }
