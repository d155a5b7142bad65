package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// Modules whose CRDs the chart's optional objects need, and where the CRDs are inside them.
var crdSources = []struct {
	module string
	globs  []string
}{
	{"istio.io/api@v1.32.0", []string{"kubernetes/customresourcedefinitions.gen.yaml"}},
	{"github.com/external-secrets/external-secrets@v1.3.2", []string{"config/crds/bases/*.yaml"}},
}

const fieldManager = "cake-agents-chart-test"

var crdOnce struct {
	sync.Mutex
	done bool
}

// installCRDs applies the Istio and External Secrets CRDs, taken from their Go modules (fetched
// with `go mod download` inside the tools module, never added to the project's go.mod), and
// waits until they are established. They stay installed: other tests may share the cluster.
func installCRDs(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	crdOnce.Lock()
	defer crdOnce.Unlock()
	if crdOnce.done {
		return
	}
	ctx := context.Background()
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	var names []string
	for _, src := range crdSources {
		out := run(t, filepath.Join(repoRoot(t), "hack", "tools"), os.Environ(), "go", "mod", "download", "-json", src.module)
		var info struct{ Dir, Error string }
		if err := json.Unmarshal([]byte(out), &info); err != nil || info.Dir == "" {
			t.Fatalf("go mod download %s: %v %s", src.module, err, info.Error)
		}
		for _, g := range src.globs {
			files, _ := filepath.Glob(filepath.Join(info.Dir, g))
			if len(files) == 0 {
				t.Fatalf("%s: no files match %s", src.module, g)
			}
			for _, f := range files {
				fh, err := os.Open(f)
				if err != nil {
					t.Fatal(err)
				}
				objs, err := decodeObjects(fh)
				fh.Close()
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				for _, o := range objs {
					if o.GetKind() != "CustomResourceDefinition" {
						continue
					}
					if _, err := c.Dynamic().Resource(crdGVR).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
						t.Fatalf("apply CRD %s from %s: %v", o.GetName(), src.module, err)
					}
					names = append(names, o.GetName())
				}
			}
		}
	}
	for _, n := range names {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			crd, err := c.Dynamic().Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", n, err)
		}
	}
	crdOnce.done = true
}

// TestRenderedObjectsAccepted renders the guide's values and every ci values file and applies
// every object to the real API server (server-side apply; dry run except for namespaces the
// objects live in), so schemas, CRD schemas, admission (Pod Security included) and RBAC
// escalation checks all judge the output.
func TestRenderedObjectsAccepted(t *testing.T) {
	c := testcluster.Get(t)
	installCRDs(t, c)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.AdminClient().Discovery()))
	for _, vf := range valuesFiles(t) {
		t.Run(vf.name, func(t *testing.T) {
			ns := c.NewNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
			// A session namespace of its own per run, so runs never collide.
			objs := render(t, ns, "-f", vf.path, "--set", "sessionNamespace.name="+sessionNamespaceFor(t, vf.path, ns))
			kinds := map[string]int{}
			// Namespaces first and for real: the objects inside them are checked against them.
			for _, o := range objs {
				if o.GetKind() != "Namespace" {
					continue
				}
				apply(t, c, mapper, o, false)
				name := o.GetName()
				t.Cleanup(func() {
					_ = c.AdminClient().CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
				})
			}
			for _, o := range objs {
				kinds[o.GetKind()]++
				if o.GetKind() == "Namespace" {
					continue
				}
				apply(t, c, mapper, o, true)
			}
			t.Logf("accepted: %v", kinds)
			for _, k := range []string{"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy"} {
				if kinds[k] == 0 {
					t.Errorf("no %s rendered", k)
				}
			}
		})
	}
}

// sessionNamespaceFor keeps the release namespace for files that don't move sessions, and gives
// files that do a fresh name.
func sessionNamespaceFor(t *testing.T, valuesPath, ns string) string {
	raw, err := os.ReadFile(valuesPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "sessionNamespace:") {
		return ns + "-sessions"
	}
	return ""
}

func apply(t *testing.T, c *testcluster.Cluster, mapper meta.RESTMapper, o *unstructured.Unstructured, dryRun bool) {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Errorf("%s %s: no such API on the server: %v", gvk, o.GetName(), err)
		return
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var ri interface {
		Apply(context.Context, string, *unstructured.Unstructured, metav1.ApplyOptions, ...string) (*unstructured.Unstructured, error)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			t.Errorf("%s %s: namespaced object rendered without a namespace", gvk.Kind, o.GetName())
			return
		}
		ri = c.Dynamic().Resource(m.Resource).Namespace(o.GetNamespace())
	} else {
		ri = c.Dynamic().Resource(m.Resource)
	}
	if _, err := ri.Apply(context.Background(), o.GetName(), o, opts); err != nil {
		t.Errorf("the API server rejects %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
	}
}

// helmCmd runs helm against the test cluster from the repository root, as the guide does.
type helmCmd struct {
	t    *testing.T
	bin  string
	root string
	env  []string
}

func newHelm(t *testing.T, c *testcluster.Cluster) *helmCmd {
	return &helmCmd{t: t, bin: tool(t, "helm"), root: repoRoot(t), env: helmEnv(t, c.Kubeconfig())}
}

func (h *helmCmd) run(args ...string) string {
	h.t.Helper()
	return run(h.t, h.root, h.env, h.bin, args...)
}

// TestGuideInstallUpgradeUninstall follows the install guide with its own values file: the
// commands as written (in a fresh namespace rather than cake-agents, so tests never collide),
// then an upgrade with changed values, then an uninstall that must leave nothing behind.
func TestGuideInstallUpgradeUninstall(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	ns := c.NewNamespace(t, nil)
	h := newHelm(t, c)
	values := seedValues(t)
	kube := c.AdminClient()

	// The database Secret the guide's values name.
	_, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cake-agents-db"},
		StringData: map[string]string{"DATABASE_URL": "postgres://cake:secret@db.example.com:5432/cake"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The only deviation from the guide: the ClusterRoles cake-agents-user/-admin have fixed,
	// cluster-wide names and one release per cluster owns them; in the shared test cluster that
	// is the end-to-end environment's release, so this one must not claim them (their content
	// is checked by TestRenderedObjectsAccepted and the helm-unittest suites).
	noUserRoles := []string{"--set", "rbac.createUserRoles=false"}
	h.run("dependency", "build", "charts/cake-agents")
	h.run(append([]string{"upgrade", "--install", releaseName, "charts/cake-agents", "--namespace", ns, "--create-namespace", "-f", values, "--wait", "--timeout", "5m"}, noUserRoles...)...)
	t.Cleanup(func() { _, _ = runErr(h.root, h.env, h.bin, "uninstall", releaseName, "--namespace", ns, "--wait") })
	if status := h.run("status", releaseName, "--namespace", ns); !strings.Contains(status, "STATUS: deployed") {
		t.Errorf("helm status:\n%s", status)
	}
	kubectl := filepath.Join(testcluster.DefaultBinDir(), "kubectl")
	pods := run(t, h.root, append(os.Environ(), "KUBECONFIG="+c.Kubeconfig()), kubectl, "get", "pods", "--namespace", ns)
	if !strings.Contains(pods, "Running") {
		t.Errorf("kubectl get pods shows no running pod:\n%s", pods)
	}

	// The plugin finds the agent by these labels; the pod must be Ready.
	agentSel := "app.kubernetes.io/name=cake-agents,app.kubernetes.io/component=control-plane"
	list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: agentSel})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("agent pods by the plugin's selector: %v (%d found)", err, len(list.Items))
	}
	if !podReady(&list.Items[0]) {
		t.Errorf("agent pod %s not ready", list.Items[0].Name)
	}
	authBefore := secretValue(t, c, ns, "cake-agents-auth", "secret")

	// Upgrade with changed values: more replicas (Postgres allows them), an integration, proxies.
	h.run("upgrade", releaseName, "charts/cake-agents", "--namespace", ns, "-f", values, noUserRoles[0], noUserRoles[1],
		"--set", "controlPlane.replicas=2",
		"--set", "linear.secret.create=true", "--set", "linear.secret.apiKey=lin_api_test",
		"--set", "headerAuth.trustedProxyCIDRs={10.0.0.0/8}",
		"--wait", "--timeout", "5m")
	dep, err := kube.AppsV1().Deployments(ns).Get(ctx, "cake-agents", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 2 || dep.Status.AvailableReplicas != 2 {
		t.Errorf("after upgrade: replicas %d, available %d; want 2", *dep.Spec.Replicas, dep.Status.AvailableReplicas)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e
	}
	if e, ok := env["LINEAR_API_KEY"]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef.Name != "cake-agents-linear" {
		t.Errorf("LINEAR_API_KEY after upgrade: %+v", e)
	}
	if env["AGENT_TRUSTED_PROXY_CIDRS"].Value != "10.0.0.0/8" || env["AGENT_LEADER_ELECTION"].Value != "true" {
		t.Errorf("after upgrade: AGENT_TRUSTED_PROXY_CIDRS=%q AGENT_LEADER_ELECTION=%q", env["AGENT_TRUSTED_PROXY_CIDRS"].Value, env["AGENT_LEADER_ELECTION"].Value)
	}
	if got := secretValue(t, c, ns, "cake-agents-linear", "apiKey"); got != "lin_api_test" {
		t.Errorf("linear Secret holds %q", got)
	}
	if got := secretValue(t, c, ns, "cake-agents-auth", "secret"); got != authBefore {
		t.Error("the generated auth secret changed on upgrade: credentials encrypted with it would be lost")
	}

	helmTest(t, c, h, ns)

	h.run("uninstall", releaseName, "--namespace", ns, "--wait", "--timeout", "5m")
	assertNothingLeft(t, c, ns)
}

// helmTest runs `helm test` and plays the kubelet for its hook pod: kwok runs no containers and
// completes only Job pods, so once the pod runs the test checks it calls the agent's /readyz
// through the Service and reports it Succeeded, as the real wget would against a ready agent.
func helmTest(t *testing.T, c *testcluster.Cluster, h *helmCmd, ns string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := runErr(h.root, h.env, h.bin, "test", releaseName, "--namespace", ns, "--timeout", "2m")
		done <- err
	}()
	pod := c.WaitForPod(t, ns, "cake-agents-test-readyz", testcluster.PodRunning)
	if hook := pod.Annotations["helm.sh/hook"]; hook != "test" {
		t.Errorf("test pod hook annotation %q", hook)
	}
	want := fmt.Sprintf("http://cake-agents.%s.svc:8080/readyz", ns)
	if cmd := pod.Spec.Containers[0].Command; len(cmd) == 0 || cmd[len(cmd)-1] != want {
		t.Errorf("test pod runs %q, want it to fetch %s", cmd, want)
	}
	pod.Status.Phase = corev1.PodSucceeded
	for i := range pod.Status.ContainerStatuses {
		pod.Status.ContainerStatuses[i].Ready = false
		pod.Status.ContainerStatuses[i].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	}
	if _, err := c.AdminClient().CoreV1().Pods(ns).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("complete the test pod: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("helm test: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Error("helm test did not finish")
	}
}

// TestDefaultInstallSQLite installs the chart's defaults: SQLite on a PVC (bound here to a
// hostPath volume the test provides, the cluster having no provisioner) with one agent.
func TestDefaultInstallSQLite(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	ns := c.NewNamespace(t, nil)
	kube := c.AdminClient()
	c.VolumeForClaim(t, ns, "cake-agents-data") // SQLite's
	h := newHelm(t, c)
	h.run("install", releaseName, "charts/cake-agents", "--namespace", ns, "--wait", "--timeout", "5m",
		"--set", "rbac.createUserRoles=false") // see TestGuideInstallUpgradeUninstall
	t.Cleanup(func() { _, _ = runErr(h.root, h.env, h.bin, "uninstall", releaseName, "--namespace", ns, "--wait") })
	pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "cake-agents-data", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Fatalf("SQLite PVC: %v %v", err, pvc.Status.Phase)
	}
	dep, err := kube.AppsV1().Deployments(ns).Get(ctx, "cake-agents", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Status.AvailableReplicas != 1 || dep.Spec.Strategy.Type != "Recreate" {
		t.Errorf("available %d strategy %s; want 1 Recreate", dep.Status.AvailableReplicas, dep.Spec.Strategy.Type)
	}

	// Moving to Postgres and back switches the rollout strategy both ways; the API server
	// rejects a Recreate Deployment that keeps RollingUpdate parameters from before.
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		StringData: map[string]string{"DATABASE_URL": "postgres://cake:secret@db.example.com:5432/cake"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		set      []string
		strategy string
		replicas int32
	}{
		{[]string{"externalDatabase.existingSecret=db", "controlPlane.replicas=2"}, "RollingUpdate", 2},
		{[]string{"persistence.enabled=false", "controlPlane.replicas=2"}, "Recreate", 1},
	} {
		args := []string{"upgrade", releaseName, "charts/cake-agents", "--namespace", ns, "--wait", "--timeout", "5m", "--set", "rbac.createUserRoles=false"}
		for _, s := range step.set {
			args = append(args, "--set", s)
		}
		h.run(args...)
		dep, err := kube.AppsV1().Deployments(ns).Get(ctx, "cake-agents", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(dep.Spec.Strategy.Type) != step.strategy || *dep.Spec.Replicas != step.replicas || dep.Status.AvailableReplicas != step.replicas {
			t.Errorf("after --set %v: strategy %s, replicas %d (%d available); want %s, %d",
				step.set, dep.Spec.Strategy.Type, *dep.Spec.Replicas, dep.Status.AvailableReplicas, step.strategy, step.replicas)
		}
	}
	h.run("uninstall", releaseName, "--namespace", ns, "--wait", "--timeout", "5m")
	assertNothingLeft(t, c, ns)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func secretValue(t *testing.T, c *testcluster.Cluster, ns, name, key string) string {
	t.Helper()
	s, err := c.AdminClient().CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
	return string(s.Data[key])
}

// assertNothingLeft checks that no object of the release remains: namespaced objects of every
// listable kind in ns labelled as the release's, and cluster-scoped or kube-system objects
// Helm recorded as belonging to the release in ns. Pods go through kwok's delete stage, so
// they get a moment to disappear.
func assertNothingLeft(t *testing.T, c *testcluster.Cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	sel := "app.kubernetes.io/instance=" + releaseName
	ownedByRelease := func(o *unstructured.Unstructured) bool {
		return o.GetNamespace() == ns || o.GetAnnotations()["meta.helm.sh/release-namespace"] == ns
	}
	// Listing every kind touches deprecated APIs (v1 Endpoints, ComponentStatus): not our warnings.
	cfg := c.RESTConfig()
	cfg.WarningHandler = rest.NoWarnings{}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := c.AdminClient().Discovery().ServerPreferredResources()
	if err != nil {
		t.Logf("discovery (partial): %v", err)
	}
	var leftovers []string
	check := func() []string {
		var found []string
		for _, l := range lists {
			gv, err := schema.ParseGroupVersion(l.GroupVersion)
			if err != nil {
				continue
			}
			for _, r := range l.APIResources {
				if strings.Contains(r.Name, "/") || !contains(r.Verbs, "list") || r.Name == "events" {
					continue
				}
				ri := dyn.Resource(gv.WithResource(r.Name))
				var objs *unstructured.UnstructuredList
				if r.Namespaced {
					objs, err = ri.Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
				} else {
					objs, err = ri.List(ctx, metav1.ListOptions{LabelSelector: sel})
				}
				if err != nil {
					continue
				}
				for i := range objs.Items {
					if ownedByRelease(&objs.Items[i]) {
						found = append(found, fmt.Sprintf("%s %s/%s", r.Kind, objs.Items[i].GetNamespace(), objs.Items[i].GetName()))
					}
				}
			}
		}
		secrets, err := c.AdminClient().CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
		if err == nil {
			for _, s := range secrets.Items {
				found = append(found, "helm release Secret "+s.Name)
			}
		}
		return found
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		leftovers = check()
		return len(leftovers) == 0, nil
	})
	if err != nil {
		t.Errorf("helm uninstall left behind:\n  %s", strings.Join(leftovers, "\n  "))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
