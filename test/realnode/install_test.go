package realnode

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/nodeenv"
)

const (
	release = "cake-agents"
)

// guideValues writes the install guide's values file with its placeholders filled in: the
// registry and tag the images were imported under. Nothing else in it changes.
func guideValues(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "charts", "cake-agents", "ci", "seed-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer("<registry>", nodeenv.Registry, "<image-tag>", nodeenv.ImageTag).Replace(string(data))
	path := filepath.Join(t.TempDir(), "guide-values.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var imageValues = nodeenv.ImageValues

// install runs `helm upgrade --install --wait` and returns how long until helm saw the
// release ready; on failure it shows the pods' state and logs.
func install(t *testing.T, ns string, args ...string) time.Duration {
	t.Helper()
	began := time.Now()
	base := []string{"upgrade", "--install", release, "charts/cake-agents", "--namespace", ns, "--wait", "--timeout", "4m"}
	out, err := runErr(t, env(t), 5*time.Minute, tool(t, "helm"), append(base, args...)...)
	if err != nil {
		t.Fatalf("helm upgrade --install: %v\n%s\n%s", err, out, podLogs(ns, "app.kubernetes.io/instance="+release))
	}
	took := time.Since(began)
	t.Cleanup(func() {
		if out, err := runErr(t, env(t), 3*time.Minute, tool(t, "helm"), "uninstall", release, "--namespace", ns, "--wait"); err != nil {
			t.Errorf("helm uninstall: %v\n%s", err, out)
		}
	})
	return took
}

// helmTest runs the chart's test hook: a real busybox pod fetching the agent's /readyz
// through its Service (cluster DNS and kube-proxy included).
func helmTest(t *testing.T, ns string) {
	t.Helper()
	out, err := runErr(t, env(t), 3*time.Minute, tool(t, "helm"), "test", release, "--namespace", ns, "--timeout", "2m")
	if err != nil {
		t.Fatalf("helm test: %v\n%s\n%s", err, out, podLogs(ns, "app.kubernetes.io/component=test"))
	}
	// The hook pod is deleted once it succeeded (the chart's hook-delete-policy): helm's
	// report is the record.
	if !regexp.MustCompile(`Phase:\s+Succeeded`).MatchString(out) {
		t.Fatalf("helm test did not report success:\n%s", out)
	}
}

// agentPod returns the Ready agent pod of the release.
func agentPod(t *testing.T, ns string) corev1.Pod {
	t.Helper()
	pods, err := cluster.AdminClient().CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=cake-agents,app.kubernetes.io/component=control-plane",
	})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("agent pods: %v (%d)", err, len(pods.Items))
	}
	p := pods.Items[0]
	for _, cs := range p.Status.ContainerStatuses {
		if !cs.Ready || cs.State.Running == nil {
			t.Fatalf("agent container %s not running and ready: %+v", cs.Name, cs.State)
		}
		if cs.RestartCount != 0 {
			t.Errorf("agent container %s restarted %d times:\n%s", cs.Name, cs.RestartCount, podLogs(ns, "app.kubernetes.io/component=control-plane"))
		}
	}
	return p
}

// TestGuideValues installs the chart with the install guide's values file unchanged — header
// auth on without trusted proxy networks, an external Postgres from a Secret — and requires the
// real agent in its image to pass its probes and `helm test` to pass in a real pod.
func TestGuideValues(t *testing.T) {
	node(t)
	ns := namespace(t, "guide", false)
	dbURL := postgres(t, ns, "external-db")
	kube := cluster.AdminClient()
	if _, err := kube.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cake-agents-db"},
		StringData: map[string]string{"DATABASE_URL": dbURL},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := install(t, ns, "-f", guideValues(t))
	pod := agentPod(t, ns)
	if img := pod.Spec.Containers[0].Image; img != images.Name(nodeenv.ImgWeb) {
		t.Errorf("agent image %s, want %s", img, images.Name(nodeenv.ImgWeb))
	}
	helmTest(t, ns)
	// The agent migrated the external database: its tables are in that Postgres.
	if got := psql(t, ns, "deploy/external-db", pgUser, pgPassword, pgDatabase,
		"select count(*) from information_schema.tables where table_name = 'sessions'"); got != "1" {
		t.Errorf("sessions table in the external Postgres: %q", got)
	}
	figure("guide values", "control plane Ready in %s, helm test passed", ready.Round(time.Second))
}

// TestDefaultValues installs the chart's defaults: SQLite on a PersistentVolumeClaim (bound
// by the node's provisioner), one agent.
func TestDefaultValues(t *testing.T) {
	node(t)
	ns := namespace(t, "defaults", false)
	ready := install(t, ns, imageValues...)
	pod := agentPod(t, ns)
	var claim string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim == "" {
		t.Fatal("the default install's agent mounts no PersistentVolumeClaim")
	}
	helmTest(t, ns)
	// The node's own processes reach Services too (kube-proxy's rules for local traffic): the
	// demo serves the web UI to the host this way.
	svc, err := cluster.AdminClient().CoreV1().Services(ns).Get(context.Background(), release, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	readyz := fmt.Sprintf("http://%s:%d/readyz", svc.Spec.ClusterIP, apiv1.AgentHTTPPort)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(readyz)
	if err != nil {
		t.Fatalf("the agent's Service from the node: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s from the node: %s", readyz, resp.Status)
	}
	// SQLite's file is on the claim, written by the agent as uid 65532.
	out := run(t, env(t), time.Minute, tool(t, "kubectl"), "exec", "-n", ns, "deploy/"+release, "--", "ls", "-ln", "/data")
	if !strings.Contains(out, "agents.db") {
		t.Errorf("no SQLite database on the claim:\n%s", out)
	}
	figure("defaults", "SQLite on a PVC: control plane Ready in %s, helm test passed", ready.Round(time.Second))
}

// TestEmbeddedPostgres installs with postgresql.enabled: the in-chart Postgres runs from its
// image, and the agent's tables are in it.
func TestEmbeddedPostgres(t *testing.T) {
	node(t)
	ns := namespace(t, "embedded-pg", false)
	ready := install(t, ns, append([]string{"--set", "postgresql.enabled=true", "--set", "persistence.enabled=false"}, imageValues...)...)
	agentPod(t, ns)
	helmTest(t, ns)
	ctx := context.Background()
	secret, err := cluster.AdminClient().CoreV1().Secrets(ns).Get(ctx, release+"-postgresql", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the in-chart Postgres Secret: %v", err)
	}
	d := secret.Data
	if got := psql(t, ns, "statefulset/"+release+"-postgresql", string(d["username"]), string(d["password"]), string(d["database"]),
		"select count(*) from information_schema.tables where table_name = 'sessions'"); got != "1" {
		t.Errorf("sessions table in the in-chart Postgres: %q", got)
	}
	figure("embedded postgres", "in-chart Postgres and control plane Ready in %s, agent tables in it", ready.Round(time.Second))
}
