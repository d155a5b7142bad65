package realnode

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
)

// Image keys of the index hack/build-images.sh writes.
const (
	imgPause     = "pause"
	imgWeb       = "control-plane"
	imgData      = "data-plane"
	imgInit      = "data-plane-init"
	imgPostgres  = "postgres"
	imgBusybox   = "busybox"
	imgFakeModel = "fakemodel"
	imgGitServer = "gitserver"
)

// imageSet maps an image key to its name and docker-save archive.
type imageSet map[string]struct{ name, archive string }

var images imageSet

// loadImages reads the index of built images: $CAKE_REALNODE_IMAGES, else
// $CACHE_DIR/images/index.tsv, one `key<TAB>name<TAB>archive` per line.
func loadImages() (imageSet, error) {
	path := os.Getenv("CAKE_REALNODE_IMAGES")
	if path == "" {
		path = filepath.Join(testcluster.DefaultCacheDir(), "images", "index.tsv")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the real-node images are not built (run hack/build-images.sh): %w", err)
	}
	defer f.Close()
	set := imageSet{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 3 {
			continue
		}
		set[fields[0]] = struct{ name, archive string }{fields[1], fields[2]}
	}
	var missing []string
	for _, k := range []string{imgPause, imgWeb, imgData, imgInit, imgPostgres, imgBusybox, imgFakeModel, imgGitServer} {
		if _, ok := set[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks images %s: run hack/build-images.sh", path, strings.Join(missing, ", "))
	}
	return set, sc.Err()
}

func (s imageSet) name(key string) string { return s[key].name }

func (s imageSet) archives() []string {
	var out []string
	for _, v := range s {
		out = append(out, v.archive)
	}
	sort.Strings(out)
	return out
}

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

// podLogs returns the logs of every container of the pods matching selector in ns, for
// failure messages.
func podLogs(ns, selector string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kube := cluster.AdminClient()
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s: phase %s\n", p.Name, p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "  container %s: ready=%v restarts=%d state=%+v last=%+v\n", cs.Name, cs.Ready, cs.RestartCount, cs.State, cs.LastTerminationState)
		}
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			tail := int64(40)
			data, err := kube.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: &tail}).DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(&b, "  logs of %s: %v\n", c.Name, err)
				continue
			}
			fmt.Fprintf(&b, "  --- logs of %s ---\n%s\n", c.Name, data)
		}
	}
	events, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type != corev1.EventTypeNormal {
				fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}
