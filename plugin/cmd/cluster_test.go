package cmd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/plugin/config"
)

// agentBehindPod runs the fake agent API as a TLS server (asking for client certificates,
// as the agent does) and makes a kwok agent pod in a fresh namespace forward its port 8443
// there, with the server's CA published in the agent's ConfigMap: everything the plugin
// discovers and dials is real Kubernetes; only the process behind the pod is a stand-in.
func agentBehindPod(t *testing.T, c *testcluster.Cluster, a *fakeAgent) (ns string, peers func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	h := a.handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if len(r.TLS.PeerCertificates) > 0 {
			seen = append(seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ns = c.NewNamespace(t, nil)
	ctx := context.Background()
	admin := c.AdminClient()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: apiv1.AgentCertMapName},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.ForwardPodPort(t, ns, "cake-agents-0", apiv1.AgentHTTPSPort, srv.Listener.Addr().String())
	no := false
	if _, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cake-agents-0", Labels: map[string]string{
			apiv1.LabelName: apiv1.AgentAppName, apiv1.LabelComponent: apiv1.AgentComponent,
		}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "agent", Image: "example.invalid/cake-agents:test",
				Ports: []corev1.ContainerPort{{ContainerPort: apiv1.AgentHTTPSPort}}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitForPod(t, ns, "cake-agents-0", testcluster.PodRunning)
	return ns, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

// grant gives user the permissions the chart's cake-agents-user role gives in the agent
// namespace, minus those in drop, and returns once the API server enforces them.
func grant(t *testing.T, c *testcluster.Cluster, ns, user string, drop ...string) {
	t.Helper()
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}},
	}
	var kept []rbacv1.PolicyRule
	for _, r := range rules {
		if len(drop) > 0 && r.Resources[0] == drop[0] {
			continue
		}
		kept = append(kept, r)
	}
	c.Grant(t, ns, user, rbacv1.Subject{Kind: rbacv1.UserKind, Name: user}, kept...)
}

// runPlugin runs the whole command tree the way main does, with a kubeconfig and a
// state file of the test's own.
func runPlugin(t *testing.T, state string, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	f := NewFactory()
	f.StatePath = state
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestPluginFindsTheAgentAndPortForwardsToIt(t *testing.T) {
	c := testcluster.Get(t)
	a := seeded(t)
	ns, peers := agentBehindPod(t, c, a)
	grant(t, c, ns, "alice")
	kubeconfig := c.KubeconfigFor(t, c.UserConfig(t, "alice", "dev"))
	state := filepath.Join(t.TempDir(), "plugin.json")

	out, _, err := runPlugin(t, state, "--kubeconfig", kubeconfig, "--agent-namespace", ns, "session", "list", "-o", "name")
	if err != nil {
		t.Fatalf("session list through the port-forward: %v", err)
	}
	if want := "session.agents.cake.ai/abc12\nsession.agents.cake.ai/def34\nsession.agents.cake.ai/ghi56\n"; out != want {
		t.Errorf("out = %q, want %q", out, want)
	}
	// The agent saw the user's client certificate: the kube identity travels in TLS.
	if p := peers(); len(p) == 0 || p[0] != "alice" {
		t.Errorf("client certificates seen by the agent: %q, want alice", p)
	}
	if s, _ := config.Load(state); s.AgentNamespace != ns {
		t.Errorf("agent namespace not remembered: %+v", s)
	}

	// The next command finds the agent without --agent-namespace.
	out, _, err = runPlugin(t, state, "--kubeconfig", kubeconfig, "session", "get", "abc12", "-o", "jsonpath={.state}")
	if err != nil || out != "Running" {
		t.Fatalf("with the remembered namespace: %q, %v", out, err)
	}

	// A namespace without the agent names itself and how to install.
	empty := c.NewNamespace(t, nil)
	grant(t, c, empty, "alice")
	_, _, err = runPlugin(t, state, "--kubeconfig", kubeconfig, "--agent-namespace", empty, "session", "list")
	if err == nil || !strings.Contains(err.Error(), `no agent found in namespace "`+empty+`"`) ||
		!strings.Contains(err.Error(), "helm upgrade --install cake-agents charts/cake-agents -n "+empty) {
		t.Errorf("no agent: %v", err)
	}
}

func TestPluginNamesTheMissingPortForwardPermission(t *testing.T) {
	c := testcluster.Get(t)
	ns, _ := agentBehindPod(t, c, seeded(t))
	grant(t, c, ns, "bob", "pods/portforward")
	kubeconfig := c.KubeconfigFor(t, c.UserConfig(t, "bob"))
	_, _, err := runPlugin(t, filepath.Join(t.TempDir(), "plugin.json"), "--kubeconfig", kubeconfig, "--agent-namespace", ns, "session", "list")
	want := `you may not port-forward to pod ` + ns + `/cake-agents-0: missing permission "create pods/portforward" in namespace "` + ns + `"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v\nwant it to contain %s", err, want)
	}
}

// grantSessions gives user the verbs of the chart's cake-agents-user ClusterRole on the
// virtual sessions.agents.cake.ai resource, and returns once the API server enforces them.
func grantSessions(t *testing.T, c *testcluster.Cluster, name, user string) {
	t.Helper()
	c.Grant(t, "", name, rbacv1.Subject{Kind: rbacv1.UserKind, Name: user},
		rbacv1.PolicyRule{APIGroups: []string{apiv1.Group}, Resources: []string{apiv1.Resource},
			Verbs: []string{"get", "list", "create", "delete", "attach"}})
}

func TestDoctorOnTheCluster(t *testing.T) {
	withVersion(t, "v0.3.0")
	c := testcluster.Get(t)
	ns, _ := agentBehindPod(t, c, newFakeAgent(t))
	grant(t, c, ns, "carol")
	grantSessions(t, c, "cake-agents-user-"+ns, "carol")
	kubeconfig := c.KubeconfigFor(t, c.UserConfig(t, "carol"))
	out, _, err := runPlugin(t, filepath.Join(t.TempDir(), "plugin.json"), "--kubeconfig", kubeconfig, "--agent-namespace", ns, "doctor")
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	want := `[ok]   agent reachable: port-forward to the agent in namespace ` + ns + ` (pod cake-agents-0)
[ok]   versions: plugin v0.3.0, agent v0.3.1
[ok]   agent readiness kube: ok
[ok]   agent readiness store: ok
[ok]   identity: alice@example.com (alice, authenticated by kubernetes)
[ok]   driving sessions: your own, and other users' public ones (RBAC grants you attach)
[ok]   RBAC: get sessions.agents.cake.ai; list sessions.agents.cake.ai; create sessions.agents.cake.ai; delete sessions.agents.cake.ai; attach sessions.agents.cake.ai; list pods in ` + ns + `; create pods/portforward in ` + ns + `; get configmaps in ` + ns + `
[ok]   forged identity headers are refused (X-Auth-Request-Email: 401)
`
	if out != want {
		t.Errorf("doctor:\n%s\nwant:\n%s", out, want)
	}
}

func TestPortForwardDirectReachesTheSessionPod(t *testing.T) {
	c := testcluster.Get(t)
	a := seeded(t)
	sessionNS := c.NewNamespace(t, nil)
	a.sessions["abc12"].PodNamespace = sessionNS
	ns, _ := agentBehindPod(t, c, a)
	grant(t, c, ns, "alice")
	grant(t, c, sessionNS, "alice")

	// OpenCode behind the session pod, guarded by the session's password.
	opencode := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pass, ok := r.BasicAuth(); !ok || pass != "session-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"healthy":true}`))
	}))
	t.Cleanup(opencode.Close)
	c.ForwardPodPort(t, sessionNS, "cake-agents-session-abc12", apiv1.OpenCodePort, opencode.Listener.Addr().String())
	no := false
	if _, err := c.AdminClient().CoreV1().Pods(sessionNS).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cake-agents-session-abc12"},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "opencode", Image: "example.invalid/data-plane:test"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitForPod(t, sessionNS, "cake-agents-session-abc12", testcluster.PodRunning)

	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	pr, pw := io.Pipe()
	streams.Out = pw
	f := NewFactory()
	f.StatePath = filepath.Join(t.TempDir(), "plugin.json")
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"--kubeconfig", c.KubeconfigFor(t, c.UserConfig(t, "alice")), "--agent-namespace", ns, "port-forward", "abc12", "--direct"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); pw.Close() }()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("port-forward printed nothing: %v (stderr %q)", err, errOut.String())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "Forwarding" {
		t.Fatalf("first line = %q", line)
	}
	// In direct mode the credentials are the session's own: the plugin relays bytes.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fields[1]+"/global/health", nil)
	req.SetBasicAuth("opencode", "session-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"healthy":true}` {
		t.Errorf("through the direct port-forward: %d %s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("port-forward: %v", err)
	}
}
