package testcluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// restrictedPod passes the restricted Pod Security level.
func restrictedPod(name string) *corev1.Pod {
	no, yes := false, true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &yes,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "main",
				Image: "example.invalid/never-pulled:1",
				Ports: []corev1.ContainerPort{{ContainerPort: 4096}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func privilegedPod(name string) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:            "main",
				Image:           "example.invalid/never-pulled:1",
				SecurityContext: &corev1.SecurityContext{Privileged: &yes},
			}},
		},
	}
}

func TestPodGoesRunning(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	began := time.Now()
	if _, err := c.AdminClient().CoreV1().Pods(ns).Create(ctxFor(t), restrictedPod("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := c.WaitForPod(t, ns, "web", testcluster.PodRunning)
	t.Logf("pod Running after %s", time.Since(began).Round(time.Millisecond))
	if pod.Spec.NodeName != c.NodeName() {
		t.Errorf("pod scheduled to %q, want %q", pod.Spec.NodeName, c.NodeName())
	}
	if pod.Status.PodIP == "" {
		t.Error("pod has no IP")
	}
}

// TestNodeKeepsItsLease guards against a fake node that flaps: without a renewed Lease the node
// lifecycle controller marks the node NotReady after 50 s, and every pod on it unready.
func TestNodeKeepsItsLease(t *testing.T) {
	c := testcluster.Get(t)
	ctx := ctxFor(t)
	for {
		lease, err := c.AdminClient().CoordinationV1().Leases("kube-node-lease").Get(ctx, c.NodeName(), metav1.GetOptions{})
		if err == nil && lease.Spec.RenewTime != nil {
			if age := time.Since(lease.Spec.RenewTime.Time); age > 30*time.Second {
				t.Errorf("node lease last renewed %s ago", age.Round(time.Second))
			}
			return
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no renewed Lease for node %s: %v", c.NodeName(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dialerKind selects how the port-forward connection is made.
type dialerKind int

const (
	spdyOnly       dialerKind = iota
	websocketOnly             // SPDY tunnelled over WebSocket (PortForwardWebsockets)
	kubectlDefault            // WebSocket first, SPDY on upgrade failure, as kubectl does
)

// forward port-forwards a free local port to pod:port with client-go's tools/portforward and
// returns the local base URL.
func forward(t *testing.T, cfg *rest.Config, ns, pod string, port int32, kind dialerKind) string {
	t.Helper()
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	if kind != spdyOnly {
		tunneling, err := portforward.NewSPDYOverWebsocketDialerForStreaming(url, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if kind == websocketOnly {
			dialer = tunneling
		} else {
			dialer = portforward.NewFallbackDialerForStreaming(tunneling, dialer, func(err error) bool {
				return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
			})
		}
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, tlog{t})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	t.Cleanup(func() { close(stop); <-errc })
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port-forward: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward not ready after 30s")
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local)
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func TestPortForwardReachesLocalServer(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	t.Cleanup(srv.Close)

	c.ForwardPodPort(t, ns, "web", 4096, srv.Listener.Addr().String())
	if _, err := c.AdminClient().CoreV1().Pods(ns).Create(ctxFor(t), restrictedPod("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitForPod(t, ns, "web", testcluster.PodRunning)

	for name, kind := range map[string]dialerKind{"spdy": spdyOnly, "websocket": websocketOnly, "kubectl-default": kubectlDefault} {
		t.Run(name, func(t *testing.T) {
			base := forward(t, c.RESTConfig(), ns, "web", 4096, kind)
			if got := get(t, base+"/"+name); got != "hello /"+name {
				t.Errorf("through the tunnel got %q", got)
			}
		})
	}

	t.Run("namespace-wide", func(t *testing.T) {
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "namespace-wide")
		}))
		t.Cleanup(other.Close)
		c.ForwardNamespacePort(t, ns, 8080, other.Listener.Addr().String())
		if _, err := c.AdminClient().CoreV1().Pods(ns).Create(ctxFor(t), restrictedPod("other"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.WaitForPod(t, ns, "other", testcluster.PodRunning)
		base := forward(t, c.RESTConfig(), ns, "other", 8080, kubectlDefault)
		if got := get(t, base+"/"); got != "namespace-wide" {
			t.Errorf("through the tunnel got %q", got)
		}
	})
}

func TestPodLogsThroughKwok(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	logFile := filepath.Join(t.TempDir(), "main.log")
	now := time.Now()
	content := testcluster.CRILogLine(now, "stdout", "first line") + testcluster.CRILogLine(now, "stderr", "second line")
	if err := os.WriteFile(logFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c.SetPodLogs(t, ns, "web", logFile)
	if _, err := c.AdminClient().CoreV1().Pods(ns).Create(ctxFor(t), restrictedPod("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitForPod(t, ns, "web", testcluster.PodRunning)
	data, err := c.AdminClient().CoreV1().Pods(ns).GetLogs("web", &corev1.PodLogOptions{Container: "main"}).DoRaw(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "first line\nsecond line\n"; got != want {
		t.Errorf("logs = %q, want %q", got, want)
	}
}

func TestServiceAccountTokenReview(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	cfg := c.ServiceAccountConfig(t, ns, "robot")
	want := "system:serviceaccount:" + ns + ":robot"

	tr, err := c.AdminClient().AuthenticationV1().TokenReviews().Create(ctxFor(t), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: cfg.BearerToken},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Status.Authenticated || tr.Status.User.Username != want {
		t.Fatalf("TokenReview: authenticated=%v user=%q error=%q, want %q", tr.Status.Authenticated, tr.Status.User.Username, tr.Status.Error, want)
	}
	if !slices.Contains(tr.Status.User.Groups, "system:serviceaccounts:"+ns) {
		t.Errorf("groups %v lack system:serviceaccounts:%s", tr.Status.User.Groups, ns)
	}

	bad, err := c.AdminClient().AuthenticationV1().TokenReviews().Create(ctxFor(t), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: cfg.BearerToken + "x"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bad.Status.Authenticated {
		t.Error("a tampered token authenticated")
	}

	if got := whoami(t, cfg); got.Username != want {
		t.Errorf("SelfSubjectReview as the ServiceAccount: %q, want %q", got.Username, want)
	}
}

func whoami(t *testing.T, cfg *rest.Config) authenticationv1.UserInfo {
	t.Helper()
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctxFor(t), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview: %v", err)
	}
	return r.Status.UserInfo
}

func TestClientCertUser(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	cfg := c.UserConfig(t, "alice@example.com", "team-a", "team-b")

	u := whoami(t, cfg)
	if u.Username != "alice@example.com" {
		t.Errorf("username %q", u.Username)
	}
	for _, g := range []string{"team-a", "team-b", "system:authenticated"} {
		if !slices.Contains(u.Groups, g) {
			t.Errorf("groups %v lack %s", u.Groups, g)
		}
	}

	// RBAC applies: a fresh user may not list pods.
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(ns).List(ctxFor(t), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing pods as a user without RBAC: err = %v, want Forbidden", err)
	}

	// The same identity through a kubeconfig file, as the plugin would read it.
	path := c.KubeconfigFor(t, cfg)
	fromFile, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if got := whoami(t, fromFile); got.Username != "alice@example.com" {
		t.Errorf("through %s: username %q", path, got.Username)
	}
}

func TestRestrictedNamespaceRejectsPrivilegedPod(t *testing.T) {
	c := testcluster.Get(t)
	restricted := c.NewNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	pods := c.AdminClient().CoreV1().Pods(restricted)

	_, err := pods.Create(ctxFor(t), privilegedPod("root"), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity \"restricted") {
		t.Fatalf("privileged pod in a restricted namespace: err = %v, want a PodSecurity rejection", err)
	}
	if _, err := pods.Create(ctxFor(t), restrictedPod("ok"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("a pod meeting the restricted level was rejected: %v", err)
	}

	// Not a blanket refusal: without the label the same pod is admitted.
	open := c.NewNamespace(t, nil)
	if _, err := c.AdminClient().CoreV1().Pods(open).Create(ctxFor(t), privilegedPod("root"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("privileged pod in an unlabelled namespace: %v", err)
	}
}
