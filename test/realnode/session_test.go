package realnode

import (
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

	"github.com/cakeai/cake-agents/test/fakemodel"

	"github.com/cakeai/cake-agents/test/nodeenv"
)

const (
	gitCAName = "git-ca"
	readme    = "# demo\n\nA repository cloned by a real init container.\n"
)

// infra starts the fake model and an HTTPS git server as pods in their own namespace (deleted
// at the end), serving one repository whose README.md is readme.
func infra(t *testing.T) *nodeenv.Infra {
	t.Helper()
	t.Cleanup(func() { deleteNamespace(t, nodeenv.InfraNamespace) })
	inf, err := nodeenv.StartInfra(context.Background(), cluster.AdminClient(), images, t.TempDir(), "demo", map[string]string{"README.md": readme})
	if err != nil {
		t.Fatal(err)
	}
	return inf
}

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

// TestSessionLifecycle is the README's main flow on the real node: the chart with sessions in
// a namespace of their own (created by the chart, restricted), `kubectl agents session create
// --wait` whose init container clones over HTTPS for real and whose OpenCode runs from the
// data-plane image against the fake model, `attach` in tmux through the kubelet's
// port-forward, `send`, `logs`, stop/start of a persistent session keeping its workspace, and
// `delete` leaving no object behind.
func TestSessionLifecycle(t *testing.T) {
	node(t)
	ctx := context.Background()
	kube := cluster.AdminClient()
	inf := infra(t)
	ns := namespace(t, "agents", false)
	const sessionNS = "agent-sessions"
	t.Cleanup(func() { deleteNamespace(t, sessionNS) }) // after the uninstall that owns it
	install(t, ns, append([]string{
		"--set", "sessionNamespace.name=" + sessionNS,
		"--set", "sessionNamespace.create=true",
		"--set", "litellm.baseURL=" + inf.ModelURL,
		"--set", "sessions.defaultModel=fake-model",
		"--set", "sessions.caBundle.configMapName=" + gitCAName,
		// Header auth as in production, its proxy at an address no pod has: a session pod
		// forging identity headers must be refused.
		"--set", "headerAuth.enabled=true",
		"--set", "headerAuth.trustedProxyCIDRs={192.0.2.10/32}",
	}, imageValues...)...)
	nsObj, err := kube.CoreV1().Namespaces().Get(ctx, sessionNS, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart did not create the session namespace: %v", err)
	}
	if got := nsObj.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("session namespace enforces %q, want restricted", got)
	}
	if _, err := kube.CoreV1().ConfigMaps(sessionNS).Create(ctx, inf.CABundle(gitCAName), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	e := env(t)
	agents := func(args ...string) string {
		t.Helper()
		return run(t, e, 4*time.Minute, tool(t, "kubectl"), append(append([]string{"agents"}, args...), "--agent-namespace", ns)...)
	}
	agentsErr := func(args ...string) (string, error) {
		t.Helper()
		return runErr(t, e, 2*time.Minute, tool(t, "kubectl"), append(append([]string{"agents"}, args...), "--agent-namespace", ns)...)
	}
	sessionPods := "app.kubernetes.io/name=cake-agents-session"

	// create --wait: Running means OpenCode in its container answers its readiness probe.
	prompt := "fix the flaky test"
	began := time.Now()
	out, err := runErr(t, e, 4*time.Minute, tool(t, "kubectl"), "agents", "session", "create", "--repo", inf.RepoURL, "--prompt", prompt,
		"--persistent", "--wait", "-o", "name", "--agent-namespace", ns)
	if err != nil {
		t.Fatalf("session create --wait: %v\n%s\n%s\n%s", err, out, podLogs(sessionNS, sessionPods), podLogs(ns, "app.kubernetes.io/component=control-plane"))
	}
	running := time.Since(began)
	id := strings.TrimSpace(out)
	id = id[strings.LastIndex(id, "/")+1:]
	podName := "cake-session-" + id
	pod, err := kube.CoreV1().Pods(sessionNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("session pod %s in %s: %v", podName, sessionNS, err)
	}
	if pod.Status.Phase != corev1.PodRunning {
		t.Errorf("session pod phase %s", pod.Status.Phase)
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			t.Errorf("init container %s: %+v", cs.Name, cs.State)
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if !cs.Ready {
			t.Errorf("container %s not ready: %+v", cs.Name, cs.State)
		}
	}
	if got, want := pod.Spec.Containers[0].Image, images.Name(nodeenv.ImgData); got != want {
		t.Errorf("session image %s, want %s", got, want)
	}
	if got, want := pod.Spec.InitContainers[0].Image, images.Name(nodeenv.ImgInit); got != want {
		t.Errorf("init image %s, want %s", got, want)
	}
	kubectl := func(args ...string) string { t.Helper(); return run(t, e, time.Minute, tool(t, "kubectl"), args...) }
	if got := kubectl("exec", "-n", sessionNS, podName, "-c", pod.Spec.Containers[0].Name, "--", "cat", "/workspace/README.md"); got != readme {
		t.Errorf("the workspace's README.md (cloned by the init container): %q", got)
	}
	// The tools the agent's shell uses for pull requests and ssh remotes run in the image.
	if got := kubectl("exec", "-n", sessionNS, podName, "-c", pod.Spec.Containers[0].Name, "--", "gh", "--version"); !strings.HasPrefix(got, "gh version ") {
		t.Errorf("gh --version in the session pod: %q", got)
	}

	// The first prompt reached the model and its reply is in the conversation.
	eventually(t, 2*time.Minute, "the reply to the first prompt in session logs", func() error {
		out, err := agentsErr("session", "logs", id)
		if err != nil || !strings.Contains(out, fakemodel.Reply(prompt)) {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	// attach: OpenCode's TUI in tmux, through the agent and the kubelet's port-forward.
	attach(t, e, ns, id)

	// send + logs.
	// The code a session runs cannot become another user: identity headers sent from the
	// session pod's address to the agent's HTTP port (the node enforces no NetworkPolicy, so
	// the request arrives) are refused by the agent itself.
	forged := kubectl("exec", "-n", sessionNS, podName, "-c", pod.Spec.Containers[0].Name, "--",
		"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Auth-Request-Email: admin@example.com",
		"-H", "X-Auth-Request-User: admin", fmt.Sprintf("http://%s.%s.svc.cluster.local:8080/api/v1/whoami", release, ns))
	if forged != "401" {
		t.Errorf("identity headers forged from the session pod %s (%s): HTTP %s, want 401", podName, pod.Status.PodIP, forged)
	}
	figure("forged headers", "identity headers from a session pod's address (%s) refused: HTTP %s", pod.Status.PodIP, forged)

	agents("session", "send", id, "now add a test")
	eventually(t, 2*time.Minute, "the reply to send in session logs", func() error {
		out, err := agentsErr("session", "logs", id)
		if err != nil || !strings.Contains(out, fakemodel.Reply("now add a test")) {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	// stop/start keeps the persistent workspace.
	kubectl("exec", "-n", sessionNS, podName, "-c", pod.Spec.Containers[0].Name, "--", "sh", "-c", "echo halfway there > /workspace/progress.txt")
	agents("session", "stop", id)
	eventually(t, 2*time.Minute, "the session pod gone after stop", func() error {
		if _, err := kube.CoreV1().Pods(sessionNS).Get(ctx, podName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		return nil
	})
	agents("session", "start", id)
	eventually(t, 3*time.Minute, "the session Running again", func() error {
		out, err := agentsErr("session", "get", id)
		if err != nil || !strings.Contains(out, "Running") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if got := kubectl("exec", "-n", sessionNS, podName, "-c", pod.Spec.Containers[0].Name, "--", "cat", "/workspace/progress.txt"); got != "halfway there\n" {
		t.Errorf("the workspace after stop/start: progress.txt = %q", got)
	}

	// delete leaves nothing behind.
	agents("session", "delete", id)
	var left []string
	eventually(t, 2*time.Minute, "nothing left after delete", func() error {
		left = leftovers(ctx, sessionNS, id)
		if len(left) > 0 {
			return fmt.Errorf("left: %s", strings.Join(left, ", "))
		}
		return nil
	})
	figure("session", "pod Running in %s, clone + attach + send + stop/start ok, %d objects left", running.Round(time.Second), len(left))
}

// leftovers lists the objects of session id still in ns (pods, secrets, claims) and any volume
// still bound to one of its claims.
func leftovers(ctx context.Context, ns, id string) []string {
	kube := cluster.AdminClient()
	var left []string
	if pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			if strings.Contains(p.Name, id) {
				left = append(left, "pod/"+p.Name)
			}
		}
	}
	if secrets, err := kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, s := range secrets.Items {
			if strings.Contains(s.Name, id) {
				left = append(left, "secret/"+s.Name)
			}
		}
	}
	if pvcs, err := kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, c := range pvcs.Items {
			if strings.Contains(c.Name, id) {
				left = append(left, "pvc/"+c.Name)
			}
		}
	}
	if pvs, err := kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, v := range pvs.Items {
			if v.Spec.ClaimRef != nil && v.Spec.ClaimRef.Namespace == ns && strings.Contains(v.Spec.ClaimRef.Name, id) {
				left = append(left, "pv/"+v.Name)
			}
		}
	}
	return left
}

// attach drives `kubectl agents attach` in tmux: OpenCode's TUI appears and a typed prompt gets
// the fake model's reply on screen. On failure it shows the screen and how attach exited.
func attach(t *testing.T, e []string, ns, id string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	status := filepath.Join(t.TempDir(), "attach.status")
	tm := func(args ...string) (string, error) {
		cmd := exec.Command("tmux", append([]string{"-S", sock}, args...)...)
		cmd.Env = e
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// remain-on-exit keeps the pane (and what attach printed) if it exits.
	script := fmt.Sprintf("kubectl agents attach %s --agent-namespace %s; echo \"attach exited with $?\" | tee %s; sleep 600", id, ns, status)
	if out, err := tm("new-session", "-d", "-s", "attach", "-x", "150", "-y", "40", "bash", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	defer func() { _, _ = tm("kill-server") }()
	screen := func() string { out, _ := tm("capture-pane", "-p", "-t", "attach"); return out }
	exited := func() string { b, _ := os.ReadFile(status); return strings.TrimSpace(string(b)) }
	eventually(t, 2*time.Minute, "the OpenCode TUI", func() error {
		s := screen()
		if x := exited(); x != "" {
			t.Fatalf("%s; screen:\n%s", x, s)
		}
		if !strings.Contains(s, "Ask anything") && !strings.Contains(s, "ctrl+p") {
			return fmt.Errorf("screen:\n%s", s)
		}
		return nil
	})
	prompt := "hello from tmux"
	if out, err := tm("send-keys", "-t", "attach", prompt, "Enter"); err != nil {
		t.Fatalf("send-keys: %v %s", err, out)
	}
	eventually(t, 2*time.Minute, "the reply on screen", func() error {
		if s := screen(); !strings.Contains(s, fakemodel.Reply(prompt)) {
			return fmt.Errorf("screen (%s):\n%s", exited(), s)
		}
		return nil
	})
}
