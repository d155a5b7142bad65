package krew

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	_ = testcluster.Shutdown()
	os.Exit(code)
}

// testChartPackage installs the snapshot's chart package, as a user installs a release's,
// into the test cluster: its Chart.yaml carries the release's version and Artifact Hub
// annotations, and the agent runs the release's image from registry.project.
func testChartPackage(t *testing.T, root, dist, version string) {
	pkg := filepath.Join(dist, "chart", "cake-agents-"+version+".tgz")
	if !fileExists(pkg) {
		t.Fatalf("no chart package %s in the snapshot", pkg)
	}
	helm := tool(t, root, "helm")
	c := testcluster.Get(t)
	home := t.TempDir()
	env := append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+c.Kubeconfig(),
	)

	var chart struct {
		Version     string            `json:"version"`
		AppVersion  string            `json:"appVersion"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal([]byte(run(t, root, env, helm, "show", "chart", pkg)), &chart); err != nil {
		t.Fatal(err)
	}
	wantImage := snapshotRegistry + "/cake-agents/web:" + version
	if chart.Version != version || chart.AppVersion != version {
		t.Errorf("packaged Chart.yaml version %q appVersion %q, want %q", chart.Version, chart.AppVersion, version)
	}
	if !strings.Contains(chart.Annotations["artifacthub.io/images"], "image: "+wantImage) {
		t.Errorf("artifacthub.io/images lacks %s:\n%s", wantImage, chart.Annotations["artifacthub.io/images"])
	}
	if !strings.Contains(chart.Annotations["artifacthub.io/changes"], "kind: added") {
		t.Errorf("artifacthub.io/changes holds no CHANGELOG.md entries:\n%s", chart.Annotations["artifacthub.io/changes"])
	}

	// The default install (SQLite); the cluster-wide user ClusterRoles belong to the shared
	// cluster's end-to-end release, as in test/chart.
	ns := c.NewNamespace(t, nil)
	c.VolumeForClaim(t, ns, "cake-agents-data") // SQLite's
	run(t, root, env, helm, "install", "cake-agents", pkg, "--namespace", ns, "--set", "rbac.createUserRoles=false", "--wait", "--timeout", "5m")
	t.Cleanup(func() {
		cmd := []string{"uninstall", "cake-agents", "--namespace", ns, "--wait"}
		run(t, root, env, helm, cmd...)
	})
	dep, err := c.AdminClient().AppsV1().Deployments(ns).Get(context.Background(), "cake-agents", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != wantImage {
		t.Errorf("the installed agent runs %s, want the release's %s", got, wantImage)
	}
	if dep.Status.AvailableReplicas != 1 {
		t.Errorf("the installed agent has %d available replicas", dep.Status.AvailableReplicas)
	}
	if got := dep.Labels["helm.sh/chart"]; got != "cake-agents-"+version {
		t.Errorf("helm.sh/chart label %q, want cake-agents-%s", got, version)
	}

	// The next release, as a user upgrades to it with the same values, then rolls back: the
	// database's volume and the generated auth secret (which encrypts credentials) are the
	// same objects throughout; only the agent's image moves. (That the database's rows
	// survive the schema's migration is the store conformance suite's UpgradeFromEarlierSchemas.)
	ctx := context.Background()
	kube := c.AdminClient()
	pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "cake-agents-data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := kube.CoreV1().Secrets(ns).Get(ctx, "cake-agents-auth", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := version + ".1"
	nextDir := t.TempDir()
	run(t, root, append(env, "HELM="+helm), "go", "run", "./internal/release/cmd/releasetool", "package-chart",
		"-version", next, "-changes", "Unreleased", "-registry", snapshotRegistry, "-o", nextDir)
	run(t, root, env, helm, "upgrade", "cake-agents", filepath.Join(nextDir, "cake-agents-"+next+".tgz"), "--namespace", ns,
		"--set", "rbac.createUserRoles=false", "--wait", "--timeout", "5m")
	same := func(when, wantImage string) {
		t.Helper()
		dep, err := kube.AppsV1().Deployments(ns).Get(ctx, "cake-agents", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := dep.Spec.Template.Spec.Containers[0].Image; got != wantImage {
			t.Errorf("%s: the agent runs %s, want %s", when, got, wantImage)
		}
		p, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "cake-agents-data", metav1.GetOptions{})
		if err != nil || p.UID != pvc.UID {
			t.Errorf("%s: the database's volume is not the one installed (%v)", when, err)
		}
		a, err := kube.CoreV1().Secrets(ns).Get(ctx, "cake-agents-auth", metav1.GetOptions{})
		if err != nil || a.UID != auth.UID || string(a.Data["secret"]) != string(auth.Data["secret"]) {
			t.Errorf("%s: the auth secret changed: credentials encrypted with it would be lost (%v)", when, err)
		}
	}
	same("after the upgrade", snapshotRegistry+"/cake-agents/web:"+next)
	run(t, root, env, helm, "rollback", "cake-agents", "1", "--namespace", ns, "--wait", "--timeout", "5m")
	same("after helm rollback", wantImage)
}
