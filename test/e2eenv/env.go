// Package e2eenv brings up the whole product on the local test cluster the way a user
// meets it: the Helm chart installed by helm (kwok runs the agent's pod), the real agent
// binary running locally with exactly the environment the chart's Deployment gives it
// and the chart's ServiceAccount identity, a kwok port-forward from the agent pod to
// that process (so `kubectl agents` finds and reaches it by label like in a real
// cluster), the fake OpenAI-compatible model (optionally behind a fake LiteLLM), and
// session pods run locally by sessionrunner with the real OpenCode. `make demo` and test/e2e both use it.
package e2eenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cakeai/cake-agents/internal/ownedproc"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/agentpod"
	"github.com/cakeai/cake-agents/test/fakelitellm"
	"github.com/cakeai/cake-agents/test/fakemodel"
	"github.com/cakeai/cake-agents/test/sessionrunner"
)

// Options configure Start.
type Options struct {
	// Kubeconfig is an admin kubeconfig of the cluster (testcluster's).
	Kubeconfig string
	// Namespace and Release of the chart install (default cake-agents for both).
	Namespace, Release string
	// Helm, Agent, OpenCode are binaries; Chart the chart directory.
	Helm, Agent, OpenCode, Chart string
	// Values are extra `--set` values for the chart.
	Values []string
	// DatabaseURL overrides the chart's database for the local agent. Without it the agent
	// uses what the chart rendered (a Postgres URL or PG* variables from Secrets), except
	// that a SQLite path becomes SQLitePath (the pod's /data does not exist here).
	DatabaseURL string
	// LiteLLMMasterKey, when set, puts a fake LiteLLM (test/fakelitellm) accepting this
	// master key in front of the fake model: the agent then gives each session a
	// virtual key of its own. Pass the same key in the chart's litellm.secret (Values).
	LiteLLMMasterKey string
	// WorkDir holds the agent's database, logs and the session workspaces.
	WorkDir string
	// Env is added to the agent and OpenCode processes (PATH with rg, ...).
	Env []string
	// AllowLocalRepo lets sessions clone file:// repositories (tests use local repos).
	AllowLocalRepo bool
	// NoSessionRunner starts no OpenCode for session pods (benchmarks create hundreds):
	// their port 4096 reaches a stand-in that answers only OpenCode's health endpoint,
	// which is what the agent waits for before a session is Running. A caller may point
	// a pod elsewhere with sessionrunner.Forward (a pod's own PortForward wins).
	NoSessionRunner bool
	// Replicas is how many agent processes run, one per pod of the chart's Deployment
	// (default 1): the high-availability shape, each with its own listeners and its pod's
	// name as leader-election identity. More than one needs the chart to run that many
	// (controlPlane.replicas in Values) on Postgres (the chart forces one with SQLite).
	Replicas int
	// AgentLog receives the agents' logs (default: WorkDir/agent.log for the first
	// replica, WorkDir/agent-N.log for replica N).
	AgentLog io.Writer
	Log      hclog.Logger
}

// Env is a running installation.
type Env struct {
	o        Options
	Kube     kubernetes.Interface
	Dynamic  dynamic.Interface
	Config   *rest.Config
	Model    *fakemodel.Server
	ModelURL string
	// LiteLLM is the fake LiteLLM in front of Model (nil without Options.LiteLLMMasterKey);
	// ModelURL is then its URL.
	LiteLLM *fakelitellm.Server
	Runner  *sessionrunner.Runner
	// Git serves test repositories over HTTPS; sessions trust its CA.
	Git *GitServer
	// Agents are the local agent processes, one per pod of the chart's Deployment
	// (Options.Replicas), ordered by pod name.
	Agents []*Agent
	// AgentPod is the kwok pod of the chart's Deployment that stands for the (first) agent.
	AgentPod string
	// HTTPURL and HTTPSURL reach the (first) local agent process directly.
	HTTPURL, HTTPSURL string

	modelSrv  *http.Server
	standIn   *http.Server
	standInPF string // the stand-in's ClusterPortForward
	cancel    context.CancelFunc
	runnerErr chan error
}

// Agent is one local agent process standing for one pod of the chart's Deployment.
type Agent struct {
	// Pod is the kwok pod it stands for; its name is the replica's leader-election
	// identity (the chart's AGENT_POD_NAME).
	Pod string
	// HTTPURL and HTTPSURL reach the process directly.
	HTTPURL, HTTPSURL string

	bin     string
	logPath string
	logw    io.Writer
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start installs and starts everything; Stop undoes it.
func Start(ctx context.Context, o Options) (_ *Env, err error) {
	if o.Namespace == "" {
		o.Namespace = "cake-agents"
	}
	if o.Release == "" {
		o.Release = "cake-agents"
	}
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
	}
	e := &Env{o: o, Config: cfg}
	if e.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if e.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()

	// The fake model first: the chart points sessions at it.
	e.Model = fakemodel.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.ModelURL = "http://" + ln.Addr().String() + "/v1"
	var model http.Handler = e.Model
	if o.LiteLLMMasterKey != "" {
		e.LiteLLM = fakelitellm.New(o.LiteLLMMasterKey)
		e.LiteLLM.Model = e.Model
		model = e.LiteLLM
	}
	e.modelSrv = &http.Server{Handler: model, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.modelSrv.Serve(ln) }()

	if err := e.helm(ctx, "upgrade", "--install", o.Release, o.Chart, "--namespace", o.Namespace, "--create-namespace",
		"--wait", "--timeout", "3m",
		"--set", "persistence.enabled=false",
		"--set", "litellm.baseURL="+e.ModelURL,
		"--set", "sessions.defaultModel=fake-model",
	); err != nil {
		return nil, err
	}
	// helm's --wait does not cover RBAC: the agent and the users use the release's
	// bindings at once, so wait until the API server enforces them. Another release of the
	// same name in another namespace may come and go meanwhile: only this one's count.
	rbacCtx, rbacDone := context.WithTimeout(ctx, time.Minute)
	err = testcluster.WaitForBindings(rbacCtx, e.Kube, "app.kubernetes.io/instance="+o.Release, func(m metav1.ObjectMeta) bool {
		return m.Annotations["meta.helm.sh/release-namespace"] == o.Namespace
	})
	rbacDone()
	if err != nil {
		return nil, fmt.Errorf("the release's RBAC: %w", err)
	}
	pods, err := e.agentPods(ctx, o.Replicas)
	if err != nil {
		return nil, err
	}
	pod := pods[0]
	e.AgentPod = pod.Name

	if e.Git, err = NewGitServer(filepath.Join(o.WorkDir, "git")); err != nil {
		return nil, err
	}
	o.Env = append(o.Env, "GIT_SSL_CAINFO="+e.Git.CAFile)

	// Session pods: run them locally with the real OpenCode.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	e.Runner = sessionrunner.New(sessionrunner.Options{
		Kube: e.Kube, Dynamic: e.Dynamic, Namespace: e.sessionNamespace(pod),
		OpenCode: o.OpenCode, Agent: o.Agent, WorkDir: filepath.Join(o.WorkDir, "sessions"),
		Env: o.Env, AllowLocalRepo: o.AllowLocalRepo, Log: o.Log.Named("sessionrunner"),
	})
	if err := os.MkdirAll(filepath.Join(o.WorkDir, "sessions"), 0o755); err != nil {
		return nil, err
	}
	e.runnerErr = make(chan error, 1)
	if o.NoSessionRunner {
		e.runnerErr <- nil
		if err := e.serveStandIn(ctx, e.sessionNamespace(pod)); err != nil {
			return nil, err
		}
	} else {
		go func() { e.runnerErr <- e.Runner.Run(rctx) }()
	}

	for i, p := range pods {
		a, err := e.prepareAgent(ctx, p, i)
		if err != nil {
			return nil, err
		}
		e.Agents = append(e.Agents, a)
	}
	e.HTTPURL, e.HTTPSURL = e.Agents[0].HTTPURL, e.Agents[0].HTTPSURL
	// Together, as a rollout would start them: with leader election they race for the Lease.
	errs := make(chan error, len(e.Agents))
	for _, a := range e.Agents {
		go func() { errs <- a.Start(ctx) }()
	}
	for range e.Agents {
		if aerr := <-errs; aerr != nil && err == nil {
			err = aerr
		}
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Env) helm(ctx context.Context, args ...string) error {
	if args[0] == "upgrade" {
		for _, v := range e.o.Values {
			args = append(args, "--set", v)
		}
	}
	cmd := exec.CommandContext(ctx, e.o.Helm, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.o.Kubeconfig, "HELM_CACHE_HOME="+filepath.Join(e.o.WorkDir, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(e.o.WorkDir, "helm-config"), "HELM_DATA_HOME="+filepath.Join(e.o.WorkDir, "helm-data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %w: %s", strings.Join(args[:2], " "), err, out)
	}
	return nil
}

// agentPods waits for n of the chart's agent pods to run (kwok plays their kubelet)
// and returns them ordered by name.
func (e *Env) agentPods(ctx context.Context, n int) ([]*corev1.Pod, error) {
	sel := apiv1.LabelName + "=" + apiv1.AgentAppName + "," + apiv1.LabelComponent + "=" + apiv1.AgentComponent + "," + apiv1.LabelInstance + "=" + e.o.Release
	deadline := time.Now().Add(2 * time.Minute)
	for {
		pods, err := e.Kube.CoreV1().Pods(e.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		var running []*corev1.Pod
		if err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
					running = append(running, p)
				}
			}
		}
		if len(running) >= n {
			sort.Slice(running, func(i, j int) bool { return running[i].Name < running[j].Name })
			return running[:n], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d agent pods (%s) running in %s: %v", len(running), n, sel, e.o.Namespace, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (e *Env) sessionNamespace(pod *corev1.Pod) string {
	for _, c := range pod.Spec.Containers {
		for _, v := range c.Env {
			if v.Name == "AGENT_SESSION_NAMESPACE" && v.Value != "" {
				return v.Value
			}
		}
	}
	return e.o.Namespace
}

// prepareAgent resolves the agent container's environment of pod exactly as the
// kubelet would (values, Secret and ConfigMap references, the downward API), swaps what
// cannot apply outside a pod (listen ports, the database path) and writes a kubeconfig
// with a token of the chart's ServiceAccount, so the local agent has the chart's RBAC.
// i numbers the replica (its log file).
func (e *Env) prepareAgent(ctx context.Context, pod *corev1.Pod, i int) (*Agent, error) {
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "agent" {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return nil, errors.New("the chart's pod has no agent container")
	}
	resolved, err := agentpod.ResolveEnv(ctx, e.Kube, pod, c)
	if err != nil {
		return nil, err
	}
	env := resolved.Map()
	// Files the agent reads from the pod's volumes (the GitHub App's private key) are
	// where agentpod puts them, as the kubelet would fill them.
	volRoot := filepath.Join(e.o.WorkDir, fmt.Sprintf("agent-%d", i))
	mounts, err := agentpod.PrepareVolumes(ctx, e.Kube, pod, c, volRoot, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range env {
		env[k] = mounts.Rewrite(v)
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	env["AGENT_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", httpPort)
	env["AGENT_HTTPS_ADDR"] = fmt.Sprintf("127.0.0.1:%d", httpsPort)
	env["AGENT_LOG_FORMAT"] = "text"
	// The chart's database as rendered: Postgres URLs and PG* variables from the Secrets are
	// used as they are; only a SQLite path moves, since the pod's /data does not exist here.
	if e.o.DatabaseURL != "" {
		env["DATABASE_URL"] = e.o.DatabaseURL
	} else if strings.HasPrefix(env["DATABASE_URL"], "sqlite://") {
		env["DATABASE_URL"] = "sqlite://" + e.SQLitePath()
	}
	a := &Agent{
		Pod:      pod.Name,
		bin:      e.o.Agent,
		HTTPURL:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		HTTPSURL: fmt.Sprintf("https://127.0.0.1:%d", httpsPort),
		logPath:  filepath.Join(e.o.WorkDir, "agent.log"),
		logw:     e.o.AgentLog,
	}
	if i > 0 {
		a.logPath = filepath.Join(e.o.WorkDir, fmt.Sprintf("agent-%d.log", i))
	}

	// The pod's identity: a token of its ServiceAccount, valid for a day (a demo runs for
	// hours; the kubelet would refresh a pod's token, nothing here does).
	kcPath := filepath.Join(e.o.WorkDir, "agent.kubeconfig")
	if i > 0 {
		kcPath = filepath.Join(e.o.WorkDir, fmt.Sprintf("agent-%d.kubeconfig", i))
	}
	if err := agentpod.ServiceAccountKubeconfig(ctx, e.Kube, e.Config, pod.Namespace, pod.Spec.ServiceAccountName, nil, 24*time.Hour, kcPath); err != nil {
		return nil, err
	}
	env["KUBECONFIG"] = kcPath

	a.env = append(append([]string{}, os.Environ()...), e.o.Env...)
	for k, v := range env {
		a.env = append(a.env, k+"="+v)
	}
	// Port-forwards to the agent pod reach the local process, as they would the pod.
	if err := sessionrunner.Forward(ctx, e.Dynamic, pod.Namespace, pod.Name, map[int]int{apiv1.AgentHTTPSPort: httpsPort, apiv1.AgentHTTPPort: httpPort}); err != nil {
		return nil, err
	}
	return a, nil
}

// StartAgent starts the (first) agent process and waits until it is ready.
func (e *Env) StartAgent(ctx context.Context) error { return e.Agents[0].Start(ctx) }

// Start starts the agent process and waits until it is ready.
func (a *Agent) Start(ctx context.Context) error { return a.StartEnv(ctx) }

// StartAgentEnv starts the (first) agent process with extra environment; see StartEnv.
func (e *Env) StartAgentEnv(ctx context.Context, extra ...string) error {
	return e.Agents[0].StartEnv(ctx, extra...)
}

// StartEnv is Start with extra environment variables ("KEY=value") for this run of the
// process only, e.g. a failpoint to crash at.
func (a *Agent) StartEnv(ctx context.Context, extra ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return errors.New("agent already running")
	}
	logw := a.logw
	if logw == nil {
		f, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		logw = f
	}
	cmd := exec.Command(a.bin, "serve")
	cmd.Env, cmd.Stdout, cmd.Stderr = append(append([]string(nil), a.env...), extra...), logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := ownedproc.Start(cmd); err != nil {
		return fmt.Errorf("start the agent: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	a.cmd, a.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(a.HTTPURL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			a.cmd = nil
			return fmt.Errorf("the agent of pod %s exited during start: see %s", a.Pod, a.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent of pod %s did not become ready within 60s: see %s", a.Pod, a.logPath)
		}
	}
}

// LogPath is the file the agent's log goes to (unless Options.AgentLog is set).
func (a *Agent) LogPath() string { return a.logPath }

// ClientTLS is the TLS configuration of a client of the agents' HTTPS ports acting as
// the user of cfg (its client certificate): it verifies the agents with the CA they
// publish, as the plugin does after its port-forward. Every replica's certificate is
// signed by that CA.
func (e *Env) ClientTLS(ctx context.Context, cfg *rest.Config) (*tls.Config, error) {
	cm, err := e.Kube.CoreV1().ConfigMaps(e.o.Namespace).Get(ctx, apiv1.AgentCertMapName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["ca.crt"])) {
		return nil, fmt.Errorf("configmap %s holds no CA", apiv1.AgentCertMapName)
	}
	certPEM, keyPEM := cfg.CertData, cfg.KeyData
	if len(certPEM) == 0 {
		if certPEM, err = os.ReadFile(cfg.CertFile); err != nil {
			return nil, err
		}
		if keyPEM, err = os.ReadFile(cfg.KeyFile); err != nil {
			return nil, err
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the client certificate of %s: %w", cfg.Username, err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// SQLitePath is where the local agent keeps a SQLite database the chart put under /data.
func (e *Env) SQLitePath() string { return filepath.Join(e.o.WorkDir, "agents.db") }

// AdminClient talks to the (first) agent's HTTPS port as the kubeconfig's user (its
// client certificate); see ClientTLS.
func (e *Env) AdminClient(ctx context.Context) (*client.Client, error) {
	tc, err := e.ClientTLS(ctx, e.Config)
	if err != nil {
		return nil, err
	}
	// Kept-alive connections, as many as the benchmarks' concurrent callers, and HTTP/2:
	// with net/http's default of two idle connections per host, every other request of a
	// concurrent load would pay a new TLS handshake with a client certificate, measuring
	// the load generator rather than the agent.
	return client.New(e.HTTPSURL, &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}})
}

// AgentPID is the running (first) agent process's id (0 when stopped).
func (e *Env) AgentPID() int { return e.Agents[0].PID() }

// PID is the running agent process's id (0 when stopped).
func (a *Agent) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// AgentExited is Exited of the (first) agent.
func (e *Env) AgentExited() <-chan struct{} { return e.Agents[0].Exited() }

// Exited returns a channel closed when the running agent process exits, by itself or
// killed (nil when none runs): how a test sees a crash it caused.
func (a *Agent) Exited() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return nil
	}
	return a.done
}

// StopAgent stops the (first) agent process: gracefully (SIGTERM) or, with kill, as a crash.
func (e *Env) StopAgent(kill bool) { e.Agents[0].Stop(kill) }

// Stop stops the agent process: gracefully (SIGTERM) or, with kill (SIGKILL), as a
// crash. It returns once the process is gone.
func (a *Agent) Stop(kill bool) {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Stop tears everything down: the agent, the session processes, the chart, the model.
func (e *Env) Stop() {
	var wg sync.WaitGroup
	for _, a := range e.Agents {
		wg.Add(1)
		go func() { defer wg.Done(); a.Stop(false) }()
	}
	wg.Wait()
	if e.cancel != nil {
		e.cancel()
		<-e.runnerErr //nolint:errcheck // Run returns nil once ctx ends
	}
	if e.o.Helm != "" && e.Kube != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Sessions first (the agent is gone, so delete their objects directly), then the release.
		sel := apiv1.LabelName + "=" + apiv1.SessionAppName + "," + apiv1.LabelInstance + "=" + e.o.Release
		ns := e.o.Namespace
		_ = e.Kube.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel})
		_ = e.Kube.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel})
		_ = e.Kube.CoreV1().PersistentVolumeClaims(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel})
		_ = e.helm(ctx, "uninstall", e.o.Release, "--namespace", ns, "--wait")
	}
	if e.standInPF != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = e.Dynamic.Resource(clusterPortForwardGVR).Delete(ctx, e.standInPF, metav1.DeleteOptions{})
		cancel()
	}
	if e.standIn != nil {
		_ = e.standIn.Close()
	}
	if e.modelSrv != nil {
		_ = e.modelSrv.Close()
	}
	if e.Git != nil {
		e.Git.Close()
	}
}

// clusterPortForwardGVR is kwok's ClusterPortForward: port-forwards to every pod of the
// selected namespaces (without a PortForward of their own) reach its target.
var clusterPortForwardGVR = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "clusterportforwards"}

// serveStandIn answers OpenCode's health endpoint for the session pods of ns, so they
// turn Running without an OpenCode behind them.
func (e *Env) serveStandIn(ctx context.Context, ns string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	e.standIn = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/global/health" {
			http.Error(w, "a stand-in for OpenCode: only /global/health answers", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"healthy":true,"version":"stand-in"}`))
	})}
	go func() { _ = e.standIn.Serve(ln) }()
	name := "cake-e2eenv-standin-" + ns
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "ClusterPortForward",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"selector": map[string]any{"matchNamespaces": []any{ns}},
			"forwards": []any{map[string]any{
				"ports":  []any{int64(apiv1.OpenCodePort)},
				"target": map[string]any{"address": "127.0.0.1", "port": int64(ln.Addr().(*net.TCPAddr).Port)},
			}},
		},
	}}
	res := e.Dynamic.Resource(clusterPortForwardGVR)
	_ = res.Delete(ctx, name, metav1.DeleteOptions{}) // left by a run killed before Stop
	if _, err := res.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("forward session pods in %s to the health stand-in: %w", ns, err)
	}
	e.standInPF = name
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
