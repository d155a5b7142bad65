package dataplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/opencode"
	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/internal/syncbuf"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// privateCA returns a CA certificate (PEM) and a serving certificate it signed for
// 127.0.0.1: what an internal git server or model gateway presents.
func privateCA(t *testing.T) (string, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cake-agents test private CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "git.internal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves h over HTTPS with cert.
func tlsServer(t *testing.T, h http.Handler, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// gitServer serves a one-commit repository as repo.git over git's smart HTTP protocol.
func gitServer(t *testing.T, cert tls.Certificate) *httptest.Server {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	dir := t.TempDir()
	src, root := filepath.Join(dir, "src"), filepath.Join(dir, "repos")
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main", src)
	if err := os.WriteFile(filepath.Join(src, "README.md"), []byte("behind a private CA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("-C", src, "add", ".")
	git("-C", src, "commit", "-q", "-m", "init")
	git("clone", "-q", "--bare", src, filepath.Join(root, "repo.git"))
	return tlsServer(t, &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_GLOBAL=/dev/null"},
	}, cert)
}

// caSessionPod is the pod the real controller creates for a session of repo when the
// sessions trust the bundle in ConfigMap corp-roots.
func caSessionPod(t *testing.T, repo, gateway, bundle string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	// With a keyring, as the agent always opens it: the controller reads the owner's
	// git credentials.
	kr, err := keyring.New([]byte("dataplane test auth secret, 32+ bytes"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	kube := fake.NewClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "corp-roots", Namespace: namespace},
		Data:       map[string]string{"ca-certificates.crt": bundle},
	})
	c, err := sessions.New(sessions.Config{
		Namespace:          namespace,
		Release:            "cake-agents",
		DataPlaneImage:     "data-plane:test",
		DataPlaneInitImage: "data-plane-init:test",
		CABundleConfigMap:  "corp-roots",
		LiteLLMBaseURL:     gateway,
		DefaultModel:       fakemodel.ModelID,
		Registerer:         prometheus.NewRegistry(),
	}, kube, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &store.Session{OwnerID: u.ID, Repo: repo}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.State == "Failed" {
		t.Fatalf("session failed: %s: %s", s.Reason, s.Message)
	}
	pod, err := kube.CoreV1().Pods(namespace).Get(ctx, sessions.PodName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the controller created no pod: %v", err)
	}
	return pod
}

// TestPrivateCATrustedBySessions runs the session pod's own work against an HTTPS git
// server and an HTTPS model gateway whose certificates a private CA signed, with the
// bundle the pod mounts (the machine's public roots plus that CA, as a trust-manager
// Bundle would hold them) at the path the pod's environment names: the init container's
// clone (sessioninit, as `agent session-init` runs it) succeeds with the init container's
// environment and fails without the CA variables, and OpenCode, started with the OpenCode
// container's environment, sends a prompt to the gateway.
func TestPrivateCATrustedBySessions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real OpenCode (5-20 s); skipped with -short")
	}
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "hack", "install-opencode.sh")).Output()
	if err != nil {
		t.Fatalf("hack/install-opencode.sh: %v", err)
	}
	opencodeBin := strings.TrimSpace(string(out))

	caPEM, cert := privateCA(t)
	bundle := caPEM
	if roots, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		bundle = string(roots) + "\n" + caPEM // the private CA last, as in a real bundle
	}
	gitSrv := gitServer(t, cert)
	model := fakemodel.New()
	modelSrv := tlsServer(t, model, cert)
	pod := caSessionPod(t, gitSrv.URL+"/repo.git", modelSrv.URL+"/v1", bundle)

	// The pod's volumes as temp dirs; the ConfigMap volume holds the bundle.
	base := t.TempDir()
	volumes := map[string]string{}
	initC := container(t, pod.Spec.InitContainers, sessions.InitContainerName)
	mainC := container(t, pod.Spec.Containers, sessions.ContainerName)
	for _, m := range append(slices.Clone(initC.VolumeMounts), mainC.VolumeMounts...) {
		dir := filepath.Join(base, strings.ReplaceAll(strings.Trim(m.MountPath, "/"), "/", "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		volumes[m.MountPath] = dir
	}
	if _, ok := volumes[sessions.CADir]; !ok {
		t.Fatalf("the pod mounts nothing at %s: %+v", sessions.CADir, initC.VolumeMounts)
	}
	hostPath := func(p string) string {
		for mount, dir := range volumes {
			if p == mount || strings.HasPrefix(p, mount+"/") {
				return dir + strings.TrimPrefix(p, mount)
			}
		}
		return p
	}
	if err := os.WriteFile(hostPath(sessions.CAFile), []byte(bundle), 0o444); err != nil {
		t.Fatal(err)
	}

	// The init container: its arguments, its environment.
	var opts sessioninit.Options
	flags := pflag.NewFlagSet("session-init", pflag.ContinueOnError)
	opts.BindFlags(flags)
	if err := flags.Parse(initC.Args); err != nil {
		t.Fatalf("parse init container args %q: %v", initC.Args, err)
	}
	opts.Workspace, opts.ConfigPath = hostPath(opts.Workspace), hostPath(opts.ConfigPath)
	initEnv := literalEnv(initC)
	for _, k := range []string{"GIT_SSL_CAINFO", "SSL_CERT_FILE"} {
		if initEnv[k] != sessions.CAFile {
			t.Errorf("init container %s = %q, want %s", k, initEnv[k], sessions.CAFile)
		}
	}
	for k, v := range initEnv {
		t.Setenv(k, hostPath(v))
	}
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Control: without the CA variables the clone is refused, so the CA is really private.
	control := opts
	control.Workspace, control.ConfigPath = filepath.Join(base, "control-ws"), filepath.Join(base, "control.json")
	for _, k := range []string{"GIT_SSL_CAINFO", "SSL_CERT_FILE"} {
		_ = os.Unsetenv(k) // t.Setenv above restores them after the test
	}
	if err := sessioninit.Run(ctx, control); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("clone without the bundle: %v, want a certificate error (is the test CA trusted system-wide?)", err)
	}
	for _, k := range []string{"GIT_SSL_CAINFO", "SSL_CERT_FILE"} {
		t.Setenv(k, hostPath(initEnv[k]))
	}
	if err := sessioninit.Run(ctx, opts); err != nil {
		t.Fatalf("clone with the pod's bundle: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(opts.Workspace, "README.md")); err != nil || !strings.Contains(string(b), "private CA") {
		t.Fatalf("the clone has no README.md: %v", err)
	}

	// OpenCode with the OpenCode container's environment.
	mainEnv := literalEnv(mainC)
	for _, k := range []string{"GIT_SSL_CAINFO", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"} {
		if mainEnv[k] != sessions.CAFile {
			t.Errorf("opencode container %s = %q, want %s", k, mainEnv[k], sessions.CAFile)
		}
	}
	password := randomHex(t)
	env := map[string]string{"PATH": filepath.Dir(opencodeBin) + ":/usr/local/bin:/usr/bin:/bin"}
	for k, v := range parseImage(t, "data-plane").env {
		env[k] = hostPath(v)
	}
	for k, v := range mainEnv {
		env[k] = hostPath(v)
	}
	env["OPENCODE_SERVER_PASSWORD"] = password
	env["LITELLM_API_KEY"] = "sk-test"
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	port := freePort(t)
	cmd := exec.Command(opencodeBin, "serve", "--port", strconv.Itoa(port), "--hostname", "127.0.0.1", "--print-logs")
	cmd.Dir, cmd.Env = opts.Workspace, environ
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })

	oc, err := opencode.New("http://127.0.0.1:"+strconv.Itoa(port), password, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Each attempt bounded, like the pod's probe (curl --max-time 2): a request that
	// reaches OpenCode while it is still starting may never be answered.
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		_, err := oc.Health(attempt)
		cancelAttempt()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("opencode never healthy: %v\n%s", err, logs.String())
		case <-exited:
			t.Fatalf("opencode exited:\n%s", logs.String())
		case <-time.After(300 * time.Millisecond):
		}
	}
	conv, err := oc.CreateSession(ctx, "private CA")
	if err != nil {
		t.Fatal(err)
	}
	const prompt = "hello through the private CA"
	if err := oc.PromptAsync(ctx, conv.ID, prompt); err != nil {
		t.Fatal(err)
	}
	for !model.Received(prompt) {
		select {
		case <-ctx.Done():
			t.Fatalf("the gateway never got the prompt over TLS; opencode output:\n%s", logs.String())
		case <-exited:
			t.Fatalf("opencode exited:\n%s", logs.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("git cloned and OpenCode reached the gateway through the private CA (bundle of %d bytes)", len(bundle))
}
