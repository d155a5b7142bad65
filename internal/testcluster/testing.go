package testcluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

// EnvDir names the environment variable that points tests at the state dir of a running cluster
// (started by `testcluster up`), so every test binary of `make test` shares one cluster.
const EnvDir = "CAKE_TESTCLUSTER_DIR"

// ownerFile, inside a state dir a test binary created, holds "PID STARTTIME" of that binary, so a
// later run can tell an abandoned dir (its owner was killed) from one in use.
const ownerFile = "owner"

// tempPrefix names the state dirs test binaries create under os.TempDir().
const tempPrefix = "cake-testcluster-"

var (
	portForwardGVR        = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}
	clusterPortForwardGVR = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "clusterportforwards"}
	logsGVR               = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "logs"}
)

// shared is this test binary's cluster, started by the first Get.
var shared struct {
	mu   sync.Mutex
	done bool
	c    *Cluster
	err  error
}

// Get returns the test binary's cluster: the one named by $CAKE_TESTCLUSTER_DIR, or else one
// started on first use and stopped by Main (or Shutdown). Under -short it skips the test: the
// unit tier runs without a cluster. A cluster that cannot be had fails the test — a missing build
// is a failure naming `make cluster-binaries`, never a silent skip.
func Get(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the local test cluster; skipped with -short")
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.done {
		shared.c, shared.err = obtain(t)
		shared.done = true
	}
	if shared.err != nil {
		t.Fatalf("test cluster: %v", shared.err)
	}
	return shared.c
}

func obtain(t testing.TB) (*Cluster, error) {
	ctx := context.Background()
	if dir := os.Getenv(EnvDir); dir != "" {
		c, err := Attach(ctx, dir)
		if err != nil {
			return nil, fmt.Errorf("%s=%s: %w", EnvDir, dir, err)
		}
		return c, nil
	}
	binDir := DefaultBinDir()
	if err := CheckBinaries(binDir); err != nil {
		return nil, err
	}
	sweepAbandoned()
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return nil, err
	}
	if err := writeOwner(dir); err != nil {
		return nil, err
	}
	began := time.Now()
	c, err := Start(ctx, Options{Dir: dir, BinDir: binDir})
	if err != nil {
		return nil, fmt.Errorf("start (state and logs kept in %s): %w", dir, err)
	}
	t.Logf("test cluster started in %s at %s (state in %s)", time.Since(began).Round(100*time.Millisecond), c.Server(), dir)
	return c, nil
}

// Main runs the tests and then stops the cluster Get started, if any. Use it as
//
//	func TestMain(m *testing.M) { testcluster.Main(m) }
//
// (when TestMain returns, the testing package exits with m.Run's code). Without it the cluster's
// processes still die with the test binary, but its temporary state dir is only removed by a
// later run.
func Main(m *testing.M) {
	m.Run()
	_ = Shutdown()
}

// Shutdown stops the cluster Get started in this test binary and removes its state dir; an
// attached cluster is left running. For a TestMain that does more than Main.
func Shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	c := shared.c
	shared.c, shared.err, shared.done = nil, errors.New("test cluster already shut down"), true
	if c == nil || !c.owned {
		return nil
	}
	if err := c.Stop(); err != nil {
		return err
	}
	return os.RemoveAll(c.dir)
}

func writeOwner(dir string) error {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		return err
	}
	data := strconv.Itoa(os.Getpid()) + " " + strconv.FormatUint(st.startTime, 10) + "\n"
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(data), 0o600)
}

// sweepAbandoned removes state dirs left by test binaries that were killed before Main could
// clean up. Their processes died with them (Pdeathsig); StopDir is only a second line of defence.
func sweepAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being created right now, or not ours
		}
		var pid int
		var start uint64
		if _, err := fmt.Sscan(string(data), &pid, &start); err != nil {
			continue
		}
		if (ProcessRecord{Name: "owner", PID: pid, StartTime: start}).alive() {
			continue
		}
		if StopDir(dir) == nil {
			_ = os.RemoveAll(dir)
		}
	}
}

var nonDNS = regexp.MustCompile(`[^a-z0-9]+`)

// namespaceName derives a DNS-1123 label from a test name plus a random suffix.
func namespaceName(testName string) string {
	base := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(testName), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	if base == "" {
		base = "test"
	}
	return base + "-" + randomSuffix(6)
}

func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// NewNamespace creates a namespace with a fresh name derived from the test's and the given
// labels (e.g. pod-security.kubernetes.io/enforce), waits for its `default` ServiceAccount (pods
// are rejected until the controller-manager made it), and deletes it when the test ends.
func (c *Cluster) NewNamespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	ctx := testContext(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaceName(t.Name()), Labels: labels}}
	created, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	name := created.Name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := c.client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	sas := c.client.CoreV1().ServiceAccounts(name)
	if _, err := waitUntil(ctx, fields.OneTermEqualSelector("metadata.name", "default").String(),
		func(ctx context.Context, o metav1.ListOptions) ([]corev1.ServiceAccount, string, error) {
			l, err := sas.List(ctx, o)
			if err != nil {
				return nil, "", err
			}
			return l.Items, l.ResourceVersion, nil
		},
		sas.Watch,
		func(watch.EventType, *corev1.ServiceAccount) (bool, error) { return true, nil },
	); err != nil {
		t.Fatalf("namespace %s: waiting for its default ServiceAccount: %v", name, err)
	}
	return name
}

// WaitForPod waits until the pod satisfies cond (for example PodRunning) and returns it.
func (c *Cluster) WaitForPod(t testing.TB, ns, name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	ctx := testContext(t)
	pods := c.client.CoreV1().Pods(ns)
	pod, err := waitUntil(ctx, fields.OneTermEqualSelector("metadata.name", name).String(),
		func(ctx context.Context, o metav1.ListOptions) ([]corev1.Pod, string, error) {
			l, err := pods.List(ctx, o)
			if err != nil {
				return nil, "", err
			}
			return l.Items, l.ResourceVersion, nil
		},
		pods.Watch,
		func(ev watch.EventType, p *corev1.Pod) (bool, error) {
			if ev == watch.Deleted {
				return false, fmt.Errorf("pod %s/%s was deleted", ns, name)
			}
			return cond(p), nil
		},
	)
	if err != nil {
		t.Fatalf("waiting for pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// waitUntil lists the objects a field selector picks and then watches them from the list's
// resource version until cond holds for one, re-listing if the watch ends early.
func waitUntil[T any](
	ctx context.Context,
	fieldSelector string,
	list func(context.Context, metav1.ListOptions) ([]T, string, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
	cond func(watch.EventType, *T) (bool, error),
) (*T, error) {
	for {
		items, rv, err := list(ctx, metav1.ListOptions{FieldSelector: fieldSelector})
		if err != nil {
			return nil, err
		}
		for i := range items {
			if ok, err := cond(watch.Added, &items[i]); err != nil || ok {
				return &items[i], err
			}
		}
		w, err := watchFn(ctx, metav1.ListOptions{FieldSelector: fieldSelector, ResourceVersion: rv})
		if err != nil {
			return nil, err
		}
		obj, done, err := func() (*T, bool, error) {
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil, true, ctx.Err()
				case ev, ok := <-w.ResultChan():
					if !ok {
						return nil, false, nil // watch ended: list again
					}
					if ev.Type == watch.Error {
						return nil, false, nil
					}
					obj, ok := any(ev.Object).(*T)
					if !ok {
						continue
					}
					if ok, err := cond(ev.Type, obj); err != nil || ok {
						return obj, true, err
					}
				}
			}
		}()
		if done {
			return obj, err
		}
	}
}

// PodRunning is a WaitForPod condition: phase Running and condition Ready.
func PodRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func forwardEntry(port int32, targetAddr string) (map[string]any, error) {
	host, portStr, err := net.SplitHostPort(targetAddr)
	if err != nil {
		return nil, fmt.Errorf("target address %q: %w", targetAddr, err)
	}
	targetPort, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("target address %q: %w", targetAddr, err)
	}
	return map[string]any{
		"ports":  []any{int64(port)},
		"target": map[string]any{"address": host, "port": int64(targetPort)},
	}, nil
}

// forwardPort reports the single port of a forwards entry, or -1.
func forwardPort(entry any) int64 {
	m, _ := entry.(map[string]any)
	ports, _ := m["ports"].([]any)
	if len(ports) != 1 {
		return -1
	}
	switch p := ports[0].(type) {
	case int64:
		return p
	case float64:
		return int64(p)
	}
	return -1
}

// ForwardPodPort makes port-forwards to port of pod ns/pod reach targetAddr (host:port, e.g. a
// local httptest server), through a kwok PortForward object named after the pod; calls for other
// ports of the same pod add to it. kwok learns of it through a watch, so call this before the pod
// runs, or allow a retry. The forward is removed when the test ends. A PortForward for a pod
// shadows ClusterPortForwards (ForwardNamespacePort) for that pod entirely.
func (c *Cluster) ForwardPodPort(t testing.TB, ns, pod string, port int32, targetAddr string) {
	t.Helper()
	entry, err := forwardEntry(port, targetAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	res := c.dyn.Resource(portForwardGVR).Namespace(ns)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := res.Get(ctx, pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			obj = &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "kwok.x-k8s.io/v1alpha1",
				"kind":       "PortForward",
				"metadata":   map[string]any{"name": pod, "namespace": ns},
				"spec":       map[string]any{"forwards": []any{entry}},
			}}
			_, err = res.Create(ctx, obj, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(portForwardGVR.GroupResource(), pod, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		forwards, _, _ := unstructured.NestedSlice(obj.Object, "spec", "forwards")
		kept := []any{entry}
		for _, f := range forwards {
			if forwardPort(f) != int64(port) {
				kept = append(kept, f)
			}
		}
		if err := unstructured.SetNestedSlice(obj.Object, kept, "spec", "forwards"); err != nil {
			return err
		}
		_, err = res.Update(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("forward %s/%s:%d to %s: %v", ns, pod, port, targetAddr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			obj, err := res.Get(ctx, pod, metav1.GetOptions{})
			if err != nil {
				return err
			}
			forwards, _, _ := unstructured.NestedSlice(obj.Object, "spec", "forwards")
			var kept []any
			for _, f := range forwards {
				if forwardPort(f) != int64(port) {
					kept = append(kept, f)
				}
			}
			if len(kept) == 0 {
				return res.Delete(ctx, pod, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr(obj.GetResourceVersion())}})
			}
			if err := unstructured.SetNestedSlice(obj.Object, kept, "spec", "forwards"); err != nil {
				return err
			}
			_, err = res.Update(ctx, obj, metav1.UpdateOptions{})
			return err
		})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("remove forward %s/%s:%d: %v", ns, pod, port, err)
		}
	})
}

// ForwardNamespacePort makes port-forwards to port of every pod in ns (those without their own
// PortForward) reach targetAddr, through a kwok ClusterPortForward removed when the test ends.
func (c *Cluster) ForwardNamespacePort(t testing.TB, ns string, port int32, targetAddr string) {
	t.Helper()
	entry, err := forwardEntry(port, targetAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	name := ns + "-" + strconv.Itoa(int(port))
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "ClusterPortForward",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"selector": map[string]any{"matchNamespaces": []any{ns}},
			"forwards": []any{entry},
		},
	}}
	res := c.dyn.Resource(clusterPortForwardGVR)
	if _, err := res.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("forward port %d of pods in %s to %s: %v", port, ns, targetAddr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := res.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete ClusterPortForward %s: %v", name, err)
		}
	})
}

// SetPodLogs makes `kubectl logs` of pod ns/pod (the given containers, or all) read logsFile,
// through a kwok Logs object named after the pod, removed when the test ends. The file must be in
// CRI log format: see CRILogLine.
func (c *Cluster) SetPodLogs(t testing.TB, ns, pod, logsFile string, containers ...string) {
	t.Helper()
	abs, err := filepath.Abs(logsFile)
	if err != nil {
		t.Fatal(err)
	}
	entry := map[string]any{"logsFile": abs, "follow": true}
	if len(containers) > 0 {
		cs := make([]any, len(containers))
		for i, name := range containers {
			cs[i] = name
		}
		entry["containers"] = cs
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "Logs",
		"metadata":   map[string]any{"name": pod, "namespace": ns},
		"spec":       map[string]any{"logs": []any{entry}},
	}}
	res := c.dyn.Resource(logsGVR).Namespace(ns)
	if _, err := res.Create(testContext(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("set logs of %s/%s: %v", ns, pod, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := res.Delete(ctx, pod, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete Logs %s/%s: %v", ns, pod, err)
		}
	})
}

// CRILogLine formats one line of a container log the way the kubelet stores it
// ("<RFC3339Nano> <stream> F <text>\n"), the format kwok's Logs files must have.
func CRILogLine(ts time.Time, stream, text string) string {
	return ts.UTC().Format(time.RFC3339Nano) + " " + stream + " F " + text + "\n"
}

// baseConfig is a config for the cluster with no credentials.
func (c *Cluster) baseConfig() *rest.Config {
	return &rest.Config{
		Host:            c.state.Server,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAPEM()},
		QPS:             c.config.QPS,
		Burst:           c.config.Burst,
	}
}

// ServiceAccountConfig creates ServiceAccount ns/name if needed and returns a config that
// authenticates with a fresh token for it (TokenRequest, one hour).
func (c *Cluster) ServiceAccountConfig(t testing.TB, ns, name string) *rest.Config {
	t.Helper()
	ctx := testContext(t)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := c.client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create ServiceAccount %s/%s: %v", ns, name, err)
	}
	tr, err := c.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request token for ServiceAccount %s/%s: %v", ns, name, err)
	}
	cfg := c.baseConfig()
	cfg.BearerToken = tr.Status.Token
	return cfg
}

// UserConfig returns a config that authenticates as user name in groups with a client
// certificate signed by the cluster CA. The user has no permissions until a test grants some
// (RBAC), unless a group like system:masters says otherwise.
func (c *Cluster) UserConfig(t testing.TB, name string, groups ...string) *rest.Config {
	t.Helper()
	c.caOnce.Do(func() {
		p := pkiFiles{dir: filepath.Join(c.dir, "pki")}
		c.ca, c.caErr = loadAuthority(p.caCert(), p.caKey())
	})
	if c.caErr != nil {
		t.Fatalf("load cluster CA: %v", c.caErr)
	}
	ck, err := c.ca.clientCert(name, groups...)
	if err != nil {
		t.Fatalf("client certificate for %s: %v", name, err)
	}
	cfg := c.baseConfig()
	cfg.CertData, cfg.KeyData = ck.CertPEM, ck.KeyPEM
	return cfg
}

// KubeconfigFor writes cfg as a self-contained kubeconfig (certificates and keys embedded) in a
// fresh temporary dir of the test and returns its path: for code under test that only takes
// kubeconfig files, like the kubectl plugin.
func (c *Cluster) KubeconfigFor(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(path, cfg, "cake-testcluster"); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

func ptr[T any](v T) *T { return &v }

// VolumeForClaim creates a 1Gi hostPath PersistentVolume reserved for claim in ns (the test
// cluster has no provisioner, so a chart's PVC, and helm --wait with it, would wait forever)
// and deletes it when t ends.
func (c *Cluster) VolumeForClaim(t testing.TB, ns, claim string) {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + claim},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/cake-agents-test"}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: claim},
		},
	}
	if _, err := c.client.CoreV1().PersistentVolumes().Create(testContext(t), pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the volume for %s/%s: %v", ns, claim, err)
	}
	t.Cleanup(func() {
		_ = c.client.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
}
