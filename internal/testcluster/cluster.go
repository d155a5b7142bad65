package testcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// NodeName is the name of the single fake node kwok plays.
	NodeName = "kwok-node"
	// NodeAnnotation marks the nodes kwok manages.
	NodeAnnotation = "kwok.x-k8s.io/node"

	// StateFile is the name of the JSON state file inside a state dir.
	StateFile = "state.json"
	// KubeconfigFile is the name of the admin kubeconfig inside a state dir.
	KubeconfigFile = "kubeconfig"

	serviceCIDR          = "10.96.0.0/12"
	kubernetesServiceIP  = "10.96.0.1"
	podCIDR              = "10.244.0.0/16"
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

	stateVersion = 1
)

// kwokCRDs are the kwok features enabled as CRDs: port-forward, logs, exec and attach to fake pods.
var kwokCRDs = []string{
	"PortForward", "ClusterPortForward", "Logs", "ClusterLogs",
	"Exec", "ClusterExec", "Attach", "ClusterAttach",
}

// The binaries a cluster needs, in start order.
const (
	binEtcd              = "etcd"
	binAPIServer         = "kube-apiserver"
	binControllerManager = "kube-controller-manager"
	binScheduler         = "kube-scheduler"
	binKwok              = "kwok"
)

var requiredBinaries = []string{binEtcd, binAPIServer, binControllerManager, binScheduler, binKwok}

// ErrBinariesMissing is returned (wrapped) when the control-plane binaries have not been built.
var ErrBinariesMissing = errors.New("test cluster binaries missing: run `make cluster-binaries`")

// State is the content of the state file: enough for another process to use the cluster and
// to stop it.
type State struct {
	Version        int    `json:"version"`
	Server         string `json:"server"`
	EtcdClientPort int    `json:"etcdClientPort"`
	EtcdPeerPort   int    `json:"etcdPeerPort"`
	APIServerPort  int    `json:"apiServerPort"`
	KwokPort       int    `json:"kwokPort"`
	NodeName       string `json:"nodeName"`
	// Node is "kwok" (a fake kubelet) or "real" (kubelet, containerd, runc).
	Node      string          `json:"node,omitempty"`
	Detached  bool            `json:"detached"`
	StartedAt time.Time       `json:"startedAt"`
	Processes []ProcessRecord `json:"processes"`
}

// Options configure Start.
type Options struct {
	// Dir is the state dir: certificates, kubeconfigs, etcd data, logs and the state file. It
	// must not exist, be empty, or hold a stopped cluster (which is wiped).
	Dir string
	// BinDir holds the binaries and kwok's CRDs and stages; default DefaultBinDir().
	BinDir string
	// Detached starts the processes in their own session without Pdeathsig, so the cluster
	// outlives this process (`testcluster up`). Otherwise they die with it.
	Detached bool
	// Timeout bounds the start; default 3 minutes (a busy 2-core machine needs ~10 s).
	Timeout time.Duration
	// Logf reports progress; nil discards it.
	Logf func(format string, args ...any)
	// RealNode, when set, runs a real kubelet node instead of kwok (see RealNodeOptions).
	RealNode *RealNodeOptions
}

const (
	nodeKwok = "kwok"
	nodeReal = "real"
)

// Cluster is a running local control plane: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok with one fake node. It is safe for concurrent use.
type Cluster struct {
	dir    string
	state  State
	config *rest.Config
	caPEM  []byte
	client kubernetes.Interface
	dyn    dynamic.Interface

	owned  bool       // started by this process, stopped by Stop
	procMu sync.Mutex // guards procs and state.Processes against a restart
	procs  []*process // in start order; nil when attached

	caOnce sync.Once
	ca     *authority
	caErr  error

	stopOnce sync.Once
	stopErr  error

	logf            func(format string, args ...any)
	node            *realNode // a real node started by this process
	stopProvisioner func()
}

// Dir returns the state dir.
func (c *Cluster) Dir() string { return c.dir }

// Server returns the apiserver URL (https://127.0.0.1:PORT).
func (c *Cluster) Server() string { return c.state.Server }

// CAPEM returns the cluster CA certificate in PEM: it signed the apiserver's serving certificate
// and is the client CA.
func (c *Cluster) CAPEM() []byte { return append([]byte(nil), c.caPEM...) }

// Kubeconfig returns the path of the admin kubeconfig (user in group system:masters).
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, KubeconfigFile) }

// NodeName returns the name of the fake node pods are scheduled to.
func (c *Cluster) NodeName() string { return c.state.NodeName }

// State returns a copy of the cluster's state.
func (c *Cluster) State() State {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	s := c.state
	s.Processes = append([]ProcessRecord(nil), s.Processes...)
	return s
}

// processes is a snapshot of the processes this Cluster started, in start order.
func (c *Cluster) processes() []*process {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	return append([]*process(nil), c.procs...)
}

// StopAPIServer kills kube-apiserver at once (its graceful shutdown would keep serving
// for seconds) and leaves etcd and every other process running: an API server outage,
// for tests of what clients and controllers do meanwhile. StartAPIServer ends it. Only
// for a cluster this process started.
func (c *Cluster) StopAPIServer() error {
	_, p, err := c.apiServer()
	if err != nil {
		return err
	}
	return stopRecord(p.ProcessRecord, 0, p.done)
}

// StartAPIServer starts kube-apiserver again with its first arguments (same port,
// certificates and etcd, so every object is still there) and waits until it is ready.
// It does nothing while the apiserver still runs.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	i, p, err := c.apiServer()
	if err != nil {
		return err
	}
	if exited, _ := p.exited(); !exited {
		return nil
	}
	// Its log goes on in the same file, after the outage.
	np, err := startProcess(p.Name, p.bin, p.args, p.env, p.Log, p.detached)
	if err != nil {
		return err
	}
	c.procMu.Lock()
	c.procs[i] = np
	c.state.Processes[i] = np.ProcessRecord
	err = writeState(c.dir, c.state)
	c.procMu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return c.waitFor(ctx, "kube-apiserver", func(ctx context.Context) error {
		_, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

func (c *Cluster) apiServer() (int, *process, error) {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	for i, p := range c.procs {
		if p.Name == binAPIServer {
			return i, p, nil
		}
	}
	return 0, nil, errors.New("kube-apiserver was not started by this process: only a cluster from Start can stop and start it")
}

// RESTConfig returns a fresh copy of the admin rest.Config.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// AdminClient returns a clientset acting as cluster admin.
func (c *Cluster) AdminClient() kubernetes.Interface { return c.client }

// Dynamic returns a dynamic client acting as cluster admin.
func (c *Cluster) Dynamic() dynamic.Interface { return c.dyn }

// DefaultCacheDir returns $CACHE_DIR, else .cache in the repository root, else in the working
// directory.
func DefaultCacheDir() string {
	if d := os.Getenv("CACHE_DIR"); d != "" {
		return d
	}
	if root, err := RepoRoot(); err == nil {
		return filepath.Join(root, ".cache")
	}
	return ".cache"
}

// DefaultBinDir returns $CAKE_TESTCLUSTER_BIN_DIR, else the folder hack/build-cluster.sh builds
// into: <cache dir>/cluster/bin.
func DefaultBinDir() string {
	if d := os.Getenv("CAKE_TESTCLUSTER_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(DefaultCacheDir(), "cluster", "bin")
}

// DefaultRunDir returns the state dir `testcluster up` uses by default: <cache dir>/cluster/run.
func DefaultRunDir() string {
	return filepath.Join(DefaultCacheDir(), "cluster", "run")
}

// RepoRoot walks up from the working directory to the folder holding hack/versions.env.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "versions.env")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (with hack/versions.env) not found above the working directory")
		}
		dir = parent
	}
}

// CheckBinaries reports whether binDir holds every binary, kwok's CRDs and stages, and — when the
// repository's hack/versions.env is found — that each binary's version stamp matches it.
func CheckBinaries(binDir string) error {
	var missing []string
	for _, b := range requiredBinaries {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	for _, d := range []string{"kwok-crds", "kwok-stages"} {
		if m, _ := filepath.Glob(filepath.Join(binDir, d, "*.yaml")); len(m) == 0 {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w (%s not in %s)", ErrBinariesMissing, strings.Join(missing, ", "), binDir)
	}
	want := pinnedVersions()
	var stale []string
	for _, b := range requiredBinaries {
		key := map[string]string{binEtcd: "ETCD_VERSION", binKwok: "KWOK_VERSION"}[b]
		if key == "" {
			key = "KUBERNETES_VERSION"
		}
		v, ok := want[key]
		if !ok {
			continue
		}
		stamp, err := os.ReadFile(filepath.Join(binDir, "."+b+".version"))
		if err != nil || strings.TrimSpace(string(stamp)) != v {
			stale = append(stale, b+" (want "+v+")")
		}
	}
	if len(stale) > 0 {
		return fmt.Errorf("%w (stale: %s)", ErrBinariesMissing, strings.Join(stale, ", "))
	}
	return nil
}

// pinnedVersions reads hack/versions.env when the repository is found.
func pinnedVersions() map[string]string {
	out := map[string]string{}
	root, err := RepoRoot()
	if err != nil {
		return out
	}
	f, err := os.Open(filepath.Join(root, "hack", "versions.env"))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return out
}

// ReadState reads the state file of dir.
func ReadState(dir string) (State, error) {
	var s State
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}

func writeState(dir string, s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, StateFile))
}

// Attach connects to the running cluster whose state dir is dir and checks that it is healthy.
// The returned Cluster does not own the processes: Stop leaves them running.
func Attach(ctx context.Context, dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := ReadState(dir)
	if err != nil {
		return nil, fmt.Errorf("no test cluster in %s: %w", dir, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, KubeconfigFile))
	if err != nil {
		return nil, err
	}
	c, err := newCluster(dir, st, cfg)
	if err != nil {
		return nil, err
	}
	for _, p := range st.Processes {
		if !p.alive() {
			return nil, fmt.Errorf("test cluster in %s is not running: %s (pid %d) is gone; see %s", dir, p.Name, p.PID, p.Log)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := c.ready(ctx); err != nil {
		return nil, fmt.Errorf("test cluster in %s is not healthy: %w", dir, err)
	}
	return c, nil
}

func newCluster(dir string, st State, cfg *rest.Config) (*Cluster, error) {
	cfg.QPS, cfg.Burst = 200, 400 // tests are bursty; client-side throttling only slows them
	caPEM, err := os.ReadFile(pkiFiles{dir: filepath.Join(dir, "pki")}.caCert())
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Cluster{dir: dir, state: st, config: cfg, caPEM: caPEM, client: client, dyn: dyn}, nil
}

// ready checks the apiserver's /readyz and the fake node's Ready condition.
func (c *Cluster) ready(ctx context.Context) error {
	if _, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return fmt.Errorf("apiserver not ready: %w", err)
	}
	node, err := c.client.CoreV1().Nodes().Get(ctx, c.state.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !nodeReady(node) {
		return fmt.Errorf("node %s is not Ready", node.Name)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Running reports whether the cluster recorded in dir has all its processes alive.
func Running(dir string) bool {
	st, err := ReadState(dir)
	if err != nil || len(st.Processes) == 0 {
		return false
	}
	for _, p := range st.Processes {
		if !p.alive() {
			return false
		}
	}
	return true
}

// StopDir stops the processes recorded in dir's state file, last started first (kwok, scheduler,
// controller-manager, apiserver, etcd: the apiserver hangs if etcd goes first), then removes the
// state file and etcd's data; logs stay. Only recorded PIDs that still match their recorded start
// time are signalled. Stopping a dir without a cluster is not an error.
func StopDir(dir string) error {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for i := len(st.Processes) - 1; i >= 0; i-- {
		if err := stopRecord(st.Processes[i], 10*time.Second, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_ = os.RemoveAll(filepath.Join(dir, "etcd"))
	return os.Remove(filepath.Join(dir, StateFile))
}

// Stop stops a cluster this process started (see StopDir for the order); for an attached
// cluster it does nothing. It is idempotent.
func (c *Cluster) Stop() error {
	if !c.owned {
		return nil
	}
	c.stopOnce.Do(func() {
		var errs []error
		if c.stopProvisioner != nil {
			c.stopProvisioner()
		}
		procs := c.processes()
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			if err := stopRecord(p.ProcessRecord, 10*time.Second, p.done); err != nil {
				errs = append(errs, err)
			}
		}
		if c.node != nil {
			// Shims and containers outlive containerd; cgroups and mounts outlive them all.
			if err := c.node.cleanup(); err != nil {
				errs = append(errs, err)
			}
		}
		c.stopErr = errors.Join(errs...)
		if c.stopErr == nil {
			_ = os.RemoveAll(filepath.Join(c.dir, "etcd"))
			_ = os.Remove(filepath.Join(c.dir, StateFile))
		}
	})
	return c.stopErr
}

// Start builds the PKI and kubeconfigs in opts.Dir and starts etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok on 127.0.0.1, then waits until the fake node
// is Ready and the `default` ServiceAccount exists. On failure everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := CheckBinaries(opts.BinDir); err != nil {
		return nil, err
	}
	node, advertise, bind := nodeKwok, "127.0.0.1", "127.0.0.1"
	var extraIPs []net.IP
	if opts.RealNode != nil {
		if err := CheckRealNodeBinaries(opts.BinDir); err != nil {
			return nil, err
		}
		if err := CanRunRealNode(); err != nil {
			return nil, err
		}
		private, err := InPrivateNamespaces()
		if err != nil {
			return nil, err
		}
		if !private {
			return nil, errors.New("a real node runs only in network and mount namespaces of its own: call testcluster.ReexecInPrivateNamespaces first")
		}
		if opts.Detached {
			return nil, errors.New("a real node cannot be detached: it lives in this process's namespaces")
		}
		if err := setupNodeNetwork(); err != nil {
			return nil, err
		}
		// Pods reach the apiserver at the kubernetes Service, which kube-proxy sends to the
		// advertised address: the node's bridge address (loopback is fatal to the endpoint
		// reconciler and unreachable from pods). Inside the private namespace 0.0.0.0 means
		// loopback and the bridge.
		node, advertise, bind = nodeReal, RealNodeIP, "0.0.0.0"
		extraIPs = append(extraIPs, net.ParseIP(RealNodeIP))
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	began := time.Now()

	pkiDir := filepath.Join(dir, "pki")
	ca, err := writePKI(pkiDir, extraIPs...)
	if err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	st := State{
		Version:        stateVersion,
		EtcdClientPort: ports[0],
		EtcdPeerPort:   ports[1],
		APIServerPort:  ports[2],
		KwokPort:       ports[3],
		Server:         "https://127.0.0.1:" + strconv.Itoa(ports[2]),
		NodeName:       NodeName,
		Node:           node,
		Detached:       opts.Detached,
		StartedAt:      time.Now().UTC(),
	}
	if err := writeKubeconfigs(dir, ca, st.Server); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, KubeconfigFile))
	if err != nil {
		return nil, err
	}
	c, err := newCluster(dir, st, cfg)
	if err != nil {
		return nil, err
	}
	c.owned = true
	c.logf = logf
	c.ca = ca
	c.caOnce.Do(func() {})
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()

	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	startWith := func(name, bin string, env []string, args ...string) error {
		p, err := startProcess(name, bin, args, env, filepath.Join(logDir, name+".log"), opts.Detached)
		if err != nil {
			return err
		}
		c.procMu.Lock()
		defer c.procMu.Unlock()
		c.procs = append(c.procs, p)
		c.state.Processes = append(c.state.Processes, p.ProcessRecord)
		// Record every PID at once, so `testcluster down` can clean up even a half-started cluster.
		return writeState(dir, c.state)
	}
	start := func(name string, args ...string) error {
		return startWith(name, filepath.Join(opts.BinDir, name), nil, args...)
	}
	pki := func(name string) string { return filepath.Join(pkiDir, name) }
	kubeconfig := func(name string) string { return filepath.Join(dir, "kubeconfigs", name+".kubeconfig") }

	etcdClient := "http://127.0.0.1:" + strconv.Itoa(st.EtcdClientPort)
	etcdPeer := "http://127.0.0.1:" + strconv.Itoa(st.EtcdPeerPort)
	logf("starting etcd on %s", etcdClient)
	if err := start(binEtcd,
		"--name=default",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdClient,
		"--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer,
		"--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=default="+etcdPeer,
		"--unsafe-no-fsync",
		"--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "etcd", func(ctx context.Context) error { return etcdHealthy(ctx, etcdClient) }); err != nil {
		return nil, err
	}

	logf("starting kube-apiserver on %s", st.Server)
	if err := start(binAPIServer,
		"--etcd-servers="+etcdClient,
		"--bind-address="+bind,
		"--advertise-address="+advertise,
		"--secure-port="+strconv.Itoa(st.APIServerPort),
		"--cert-dir="+pkiDir,
		"--tls-cert-file="+pki("apiserver.crt"),
		"--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--service-account-issuer="+serviceAccountIssuer,
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		// A loopback advertise address is fatal to the endpoint reconciler; with a real node the
		// reconciler keeps the kubernetes Service pointing at the node's bridge address.
		"--endpoint-reconciler-type="+map[string]string{nodeKwok: "none", nodeReal: "lease"}[node],
		// Never resolve the fake node's hostname: port-forward and logs go to 127.0.0.1.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--authorization-mode=Node,RBAC",
		// Privileged pods are allowed by the apiserver, so Pod Security admission is what
		// rejects them in a restricted namespace.
		"--allow-privileged=true",
		"--requestheader-client-ca-file="+pki("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+pki("front-proxy-client.crt"),
		"--proxy-client-key-file="+pki("front-proxy-client.key"),
		"--profiling=false",
	); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "kube-apiserver", func(ctx context.Context) error {
		_, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return nil, err
	}

	logf("starting kube-controller-manager and kube-scheduler")
	if err := start(binControllerManager,
		"--kubeconfig="+kubeconfig("controller-manager"),
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki("sa.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--cluster-signing-cert-file="+pki("ca.crt"),
		"--cluster-signing-key-file="+pki("ca.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--profiling=false",
	); err != nil {
		return nil, err
	}
	if err := start(binScheduler,
		"--kubeconfig="+kubeconfig("scheduler"),
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
	); err != nil {
		return nil, err
	}

	if opts.RealNode != nil {
		if err := c.startRealNode(ctx, opts, startWith, pkiDir); err != nil {
			return nil, err
		}
		st.NodeName = RealNodeName
		c.state.NodeName = RealNodeName
		if err := writeState(dir, c.state); err != nil {
			return nil, err
		}
		if err := c.waitFor(ctx, "ServiceAccount default/default", func(ctx context.Context) error {
			_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
			return err
		}); err != nil {
			return nil, err
		}
		logf("cluster with a real node ready in %s", time.Since(began).Round(100*time.Millisecond))
		return c, nil
	}

	logf("installing kwok CRDs and the fake node")
	if err := c.applyKwokCRDs(ctx, filepath.Join(opts.BinDir, "kwok-crds")); err != nil {
		return nil, err
	}
	if err := c.createNode(ctx); err != nil {
		return nil, err
	}
	kwokConfig := filepath.Join(dir, "kwok.yaml")
	if err := writeKwokConfig(kwokConfig, filepath.Join(opts.BinDir, "kwok-stages")); err != nil {
		return nil, err
	}
	kwokAddr := "127.0.0.1:" + strconv.Itoa(st.KwokPort)
	if err := start(binKwok,
		"--kubeconfig="+kubeconfig("kwok"),
		"--config="+kwokConfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+NodeAnnotation+"=fake",
		"--node-ip=127.0.0.1",
		"--node-port="+strconv.Itoa(st.KwokPort),
		"--server-address="+kwokAddr,
		"--tls-cert-file="+pki("kwok.crt"),
		"--tls-private-key-file="+pki("kwok.key"),
		"--cidr="+podCIDR,
		// Without a lease kwok renews nothing between the heartbeat stage's 10-minute beats:
		// the node lifecycle controller marks the node NotReady after 50 s and its pods unready.
		"--node-lease-duration-seconds=40",
		"--enable-crds="+strings.Join(kwokCRDs, ","),
	); err != nil {
		return nil, err
	}

	logf("waiting for the node to be Ready and the default ServiceAccount")
	if err := c.waitFor(ctx, "node "+NodeName+" Ready", func(ctx context.Context) error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(node) {
			return errors.New("not Ready yet")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "ServiceAccount default/default", func(ctx context.Context) error {
		_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	logf("cluster ready in %s", time.Since(began).Round(100*time.Millisecond))
	return c, nil
}

// prepareDir makes dir ready for a new cluster: a leftover stopped cluster is wiped; a running
// one or a folder with foreign content is refused.
func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	if Running(dir) {
		return fmt.Errorf("a test cluster is already running in %s", dir)
	}
	ours := map[string]bool{
		StateFile: true, KubeconfigFile: true, "pki": true, "kubeconfigs": true, "logs": true,
		"etcd": true, "kwok.yaml": true, StateFile + ".tmp": true, ownerFile: true,
		"node": true, "volumes": true,
	}
	for _, e := range entries {
		if !ours[e.Name()] {
			return fmt.Errorf("%s is not empty and holds no test cluster (found %s)", dir, e.Name())
		}
	}
	// A cluster that died without `down` may have left some processes behind.
	if err := StopDir(dir); err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == ownerFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// waitFor polls check every 100 ms until it succeeds, the context ends, or a control-plane
// process exits (then the error carries the tail of its log).
func (c *Cluster) waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	var last error
	for {
		for _, p := range c.processes() {
			if exited, werr := p.exited(); exited {
				return fmt.Errorf("%s exited (%v) while waiting for %s; last log lines from %s:\n%s",
					p.Name, werr, what, p.Log, tailFile(p.Log, 2000))
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s: %w (logs in %s)", what, last, filepath.Join(c.dir, "logs"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func etcdHealthy(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Health string `json:"health"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || body.Health != "true" {
		return fmt.Errorf("etcd health: %s %q", resp.Status, body.Health)
	}
	return nil
}

// freePorts reserves n distinct loopback ports. All listeners stay open until every port is
// chosen, so the kernel hands out n different ones.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeKubeconfigs writes the admin kubeconfig and one per component, each with a client
// certificate signed by the cluster CA.
func writeKubeconfigs(dir string, ca *authority, server string) error {
	users := []struct {
		file   string
		user   string
		groups []string
	}{
		{filepath.Join(dir, KubeconfigFile), "cake-admin", []string{"system:masters"}},
		{filepath.Join(dir, "kubeconfigs", "controller-manager.kubeconfig"), "system:kube-controller-manager", nil},
		{filepath.Join(dir, "kubeconfigs", "scheduler.kubeconfig"), "system:kube-scheduler", nil},
		// kwok plays every kubelet and edits pods, nodes and leases freely: admin-like.
		{filepath.Join(dir, "kubeconfigs", "kwok.kubeconfig"), "kwok-controller", []string{"system:masters"}},
	}
	if err := os.MkdirAll(filepath.Join(dir, "kubeconfigs"), 0o700); err != nil {
		return err
	}
	for _, u := range users {
		ck, err := ca.clientCert(u.user, u.groups...)
		if err != nil {
			return err
		}
		cfg := &rest.Config{
			Host:            server,
			TLSClientConfig: rest.TLSClientConfig{CAData: ca.certPEM(), CertData: ck.CertPEM, KeyData: ck.KeyPEM},
		}
		if err := writeKubeconfig(u.file, cfg, "cake-testcluster"); err != nil {
			return err
		}
	}
	return nil
}

// writeKubeconfig writes cfg as a kubeconfig with one cluster, user and context, all named name.
// Certificate, key and CA files are embedded so the file stands alone.
func writeKubeconfig(path string, cfg *rest.Config, name string) error {
	cluster := clientcmdapi.NewCluster()
	cluster.Server = cfg.Host
	cluster.InsecureSkipTLSVerify = cfg.Insecure
	cluster.TLSServerName = cfg.ServerName
	var err error
	if cluster.CertificateAuthorityData, err = dataOrFile(cfg.CAData, cfg.CAFile); err != nil {
		return err
	}
	user := clientcmdapi.NewAuthInfo()
	if user.ClientCertificateData, err = dataOrFile(cfg.CertData, cfg.CertFile); err != nil {
		return err
	}
	if user.ClientKeyData, err = dataOrFile(cfg.KeyData, cfg.KeyFile); err != nil {
		return err
	}
	user.Token = cfg.BearerToken
	user.TokenFile = cfg.BearerTokenFile
	user.Username = cfg.Username
	user.Password = cfg.Password
	if cfg.Impersonate.UserName != "" {
		user.Impersonate = cfg.Impersonate.UserName
		user.ImpersonateUID = cfg.Impersonate.UID
		user.ImpersonateGroups = cfg.Impersonate.Groups
		user.ImpersonateUserExtra = cfg.Impersonate.Extra
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = cluster
	kc.AuthInfos[name] = user
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = name, name
	kc.Contexts[name] = ctx
	kc.CurrentContext = name
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*kc, path)
}

func dataOrFile(data []byte, file string) ([]byte, error) {
	if len(data) > 0 || file == "" {
		return data, nil
	}
	return os.ReadFile(file)
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// applyKwokCRDs creates kwok's CRDs and waits until each is Established: kwok starts informers
// for them at once and gives up on a kind the apiserver does not serve yet.
func (c *Cluster) applyKwokCRDs(ctx context.Context, crdDir string) error {
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		return err
	}
	var names []string
	for _, f := range files {
		objs, err := readYAMLObjects(f)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			if obj.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if _, err := c.dyn.Resource(crdGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create CRD %s: %w", obj.GetName(), err)
			}
			names = append(names, obj.GetName())
		}
	}
	for _, name := range names {
		if err := c.waitFor(ctx, "CRD "+name+" Established", func(ctx context.Context) error {
			obj, err := c.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return errors.New("not Established yet")
		}); err != nil {
			return err
		}
	}
	return nil
}

func readYAMLObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) > 0 {
			out = append(out, obj)
		}
	}
}

// writeKwokConfig concatenates kwok's stages into its config file: node-initialize makes the
// node Ready, node-heartbeat-with-lease keeps it so, pod-ready/complete/delete play the kubelet.
func writeKwokConfig(path, stageDir string) error {
	files, err := filepath.Glob(filepath.Join(stageDir, "*.yaml"))
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		b.WriteString("---\n")
		b.Write(data)
		if !strings.HasSuffix(b.String(), "\n") {
			b.WriteString("\n")
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// createNode registers the fake node kwok plays. Both addresses matter: with only one, kwok's
// node-initialize stage rewrites the list and port-forward fails with "no preferred addresses
// found"; the kubelet endpoint port is where the apiserver reaches kwok for port-forward and logs.
func (c *Cluster) createNode(ctx context.Context) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("512Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		corev1.ResourcePods:             resource.MustParse("1000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: NodeName,
			Annotations: map[string]string{
				NodeAnnotation:                 "fake",
				"node.alpha.kubernetes.io/ttl": "0",
			},
			Labels: map[string]string{
				"kubernetes.io/hostname": NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"kubernetes.io/role":     "agent",
				"type":                   "kwok",
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: NodeName},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{
				KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(c.state.KwokPort)},
			},
			NodeInfo: corev1.NodeSystemInfo{
				Architecture:    "amd64",
				OperatingSystem: "linux",
				KubeletVersion:  "fake",
			},
		},
	}
	_, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", NodeName, err)
	}
	return nil
}
