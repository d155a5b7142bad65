package testcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// The real node's network. Every run has a network namespace of its own, so fixed addresses
// never collide; they are private-range and exist only inside that namespace.
const (
	// RealNodeName is the name the kubelet registers.
	RealNodeName = "cake-node"
	// RealNodeIP is the node's address: the bridge pods hang off, where the kubelet, the
	// apiserver (for pods, through the kubernetes Service) and cluster DNS listen.
	RealNodeIP = "10.213.77.1"

	realNodeBridge    = "cakebr0"
	realNodeSubnet    = "10.213.77.0/24"
	realNodePrefixLen = 24
	clusterDomain     = "cluster.local"
)

// Node runtime binaries, in start order after the control plane.
const (
	binContainerd = "containerd"
	binKubelet    = "kubelet"
	binKubeProxy  = "kube-proxy"
	binCoreDNS    = "coredns"
	nodeSysDir    = "node-sys" // Debian's containerd, runc and CNI plugins, unpacked
)

var realNodeBinaries = []string{binKubelet, binKubeProxy, binCoreDNS}

// RealNodeOptions make Start run a real node — kubelet, containerd, runc, the CNI bridge,
// kube-proxy and CoreDNS — instead of kwok. The calling process must be in network and mount
// namespaces of its own (see ReexecInPrivateNamespaces) and run as root.
type RealNodeOptions struct {
	// Images are docker-save archives imported into containerd before the kubelet starts; pods
	// use them with imagePullPolicy IfNotPresent or Never (there is no registry).
	Images []string
	// PauseImage is the sandbox image's name; it must be one of Images.
	PauseImage string
	// HostPathDir, when set, is where the built-in provisioner makes each claim's folder.
	// Default: <state dir>/volumes.
	HostPathDir string
}

// realNode is the node-specific state kept for Stop.
type realNode struct {
	root       string // <state dir>/node
	cgroupRoot string // e.g. /cake-node-1a2b3c
	socket     string // containerd's socket
	mounts     []string
	ctr        string // the ctr binary
}

// CheckRealNodeBinaries reports whether binDir holds what a real node needs (hack/build-cluster.sh
// all builds and unpacks it).
func CheckRealNodeBinaries(binDir string) error {
	var missing []string
	for _, b := range realNodeBinaries {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	for _, b := range []string{"usr/bin/containerd", "usr/bin/ctr", "usr/bin/containerd-shim-runc-v2", "usr/sbin/runc", "usr/lib/cni/bridge", "usr/lib/cni/host-local", "usr/lib/cni/loopback"} {
		if _, err := os.Stat(filepath.Join(binDir, nodeSysDir, b)); err != nil {
			missing = append(missing, nodeSysDir+"/"+b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w (%s not in %s)", ErrBinariesMissing, strings.Join(missing, ", "), binDir)
	}
	return nil
}

// setupNodeNetwork brings up loopback and the node bridge in this (private) network namespace,
// routes the Service range onto it (the node's own processes reach Services too), and turns on
// forwarding there, so a pod reaching a Service of another pod is routed back out.
func setupNodeNetwork() error {
	cmds := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", realNodeBridge, "type", "bridge"},
		{"ip", "addr", "add", RealNodeIP + "/" + strconv.Itoa(realNodePrefixLen), "dev", realNodeBridge},
		{"ip", "link", "set", realNodeBridge, "up"},
		// A real node reaches ClusterIPs through its default route (kube-proxy rewrites
		// them in OUTPUT); this namespace has none, so give the Service range one.
		{"ip", "route", "add", serviceCIDR, "dev", realNodeBridge, "src", RealNodeIP},
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("File exists")) {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	// Per network namespace: this never touches the machine's own setting.
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
}

// kernelDefaults are the sysctls a kubelet with protectKernelDefaults insists on. It never
// writes them then, but refuses to start when they differ: inside the node's private mount
// namespace a file with the expected value is bind-mounted over each one that differs, so the
// machine's settings are never changed.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func (n *realNode) fakeKernelDefaults() error {
	dir := filepath.Join(n.root, "sysctl")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for key, want := range kernelDefaults {
		path := "/proc/sys/" + key
		have, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(have)) == want {
			continue
		}
		file := filepath.Join(dir, strings.ReplaceAll(key, "/", "_"))
		if err := os.WriteFile(file, []byte(want+"\n"), 0o444); err != nil {
			return err
		}
		if err := syscall.Mount(file, path, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", file, path, err)
		}
		n.mounts = append(n.mounts, path)
	}
	// containerd 1.6 puts its shims' sockets under /run/containerd/s whatever its state dir:
	// a private tmpfs keeps them (and any other run's) apart.
	if err := os.MkdirAll("/run/containerd", 0o711); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", "/run/containerd", "tmpfs", 0, "mode=0711"); err != nil {
		return fmt.Errorf("mount a tmpfs over /run/containerd: %w", err)
	}
	n.mounts = append(n.mounts, "/run/containerd")
	return nil
}

// cgroupControllers lists the cgroup v1 hierarchies (and the unified one of a hybrid host)
// under /sys/fs/cgroup; on a pure v2 host it returns the root alone.
func cgroupControllers() ([]string, error) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}, nil
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() || e.Type()&os.ModeSymlink != 0 {
			p := filepath.Join("/sys/fs/cgroup", e.Name())
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// makeCgroupRoot pre-creates the kubelet's cgroupRoot in every hierarchy (the kubelet expects
// it to exist in each controller it uses).
func (n *realNode) makeCgroupRoot() error {
	ctrls, err := cgroupControllers()
	if err != nil {
		return err
	}
	for _, c := range ctrls {
		if err := os.MkdirAll(filepath.Join(c, n.cgroupRoot), 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", filepath.Join(c, n.cgroupRoot), err)
		}
	}
	return nil
}

// removeCgroupRoot kills whatever still runs under the node's cgroups (containers whose shim
// is gone) and removes them leaf first. runc also creates the root under unified/.
func (n *realNode) removeCgroupRoot() error {
	if n.cgroupRoot == "" {
		return nil
	}
	ctrls, err := cgroupControllers()
	if err != nil {
		return err
	}
	var errs []error
	for attempt := 0; attempt < 50; attempt++ {
		errs = nil
		for _, c := range ctrls {
			root := filepath.Join(c, n.cgroupRoot)
			var dirs []string
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if procs, err := os.ReadFile(filepath.Join(dirs[i], "cgroup.procs")); err == nil {
					for _, f := range strings.Fields(string(procs)) {
						if pid, err := strconv.Atoi(f); err == nil {
							_ = syscall.Kill(pid, syscall.SIGKILL)
						}
					}
				}
				if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
					errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
				}
			}
		}
		if len(errs) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// killShims ends the runc shims of this node's containerd: they detach from containerd and
// would outlive it (and keep their containers running).
func (n *realNode) killShims() {
	if n.socket == "" {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == n.socket {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// cleanup runs after every node process stopped: shims, leftover containers, cgroups, mounts.
func (n *realNode) cleanup() error {
	n.killShims()
	err := n.removeCgroupRoot()
	for i := len(n.mounts) - 1; i >= 0; i-- {
		if uerr := syscall.Unmount(n.mounts[i], syscall.MNT_DETACH); uerr != nil && !errors.Is(uerr, syscall.EINVAL) {
			err = errors.Join(err, fmt.Errorf("unmount %s: %w", n.mounts[i], uerr))
		}
	}
	n.mounts = nil
	// Container rootfs mounts and network namespaces live under the node's state: unmount
	// whatever containerd left there so the dir can be removed.
	unmountUnder(n.root)
	return err
}

// unmountUnder detaches every mount point below dir (deepest first).
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startRealNode starts containerd (and imports the images), the kubelet, kube-proxy and
// CoreDNS, and the claim provisioner, then waits for the node to be Ready and DNS to answer.
func (c *Cluster) startRealNode(ctx context.Context, opts Options, start startFunc, pkiDir string) error {
	ro := opts.RealNode
	n := &realNode{root: filepath.Join(c.dir, "node"), cgroupRoot: "/cake-node-" + randomHex(4)}
	c.node = n
	sys := filepath.Join(opts.BinDir, nodeSysDir)
	n.ctr = filepath.Join(sys, "usr/bin/ctr")
	run := filepath.Join(n.root, "run")
	for _, d := range []string{run, filepath.Join(n.root, "cni", "net.d"), filepath.Join(n.root, "kubelet"), filepath.Join(run, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := n.fakeKernelDefaults(); err != nil {
		return err
	}
	if err := n.makeCgroupRoot(); err != nil {
		return err
	}
	ports, err := freePortsOn(RealNodeIP, 1)
	if err != nil {
		return err
	}
	kubeletPort := ports[0]
	local, err := freePorts(5)
	if err != nil {
		return err
	}
	kubeletHealthz, proxyHealthz, proxyMetrics, dnsHealth, dnsReady := local[0], local[1], local[2], local[3], local[4]

	// Certificates and kubeconfigs of the node's components.
	ca := c.ca
	serving, err := ca.sign(certRequest{
		CommonName: RealNodeName,
		IPs:        []net.IP{net.ParseIP(RealNodeIP)},
		DNSNames:   []string{RealNodeName},
		Server:     true,
	})
	if err != nil {
		return err
	}
	nodePKI := filepath.Join(n.root, "pki")
	if err := os.MkdirAll(nodePKI, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"kubelet.crt": serving.CertPEM, "kubelet.key": serving.KeyPEM, "ca.crt": ca.certPEM()} {
		if err := os.WriteFile(filepath.Join(nodePKI, name), data, 0o600); err != nil {
			return err
		}
	}
	users := map[string]struct {
		user   string
		groups []string
	}{
		// The kubelet as the Node authorizer knows it.
		"kubelet": {"system:node:" + RealNodeName, []string{"system:nodes"}},
		// kube-proxy has a bootstrap ClusterRoleBinding for this user.
		"kube-proxy": {"system:kube-proxy", nil},
		// CoreDNS only reads Services, EndpointSlices, Namespaces and Pods; an admin identity
		// spares the test cluster a ClusterRole of its own.
		"coredns": {"cake-coredns", []string{"system:masters"}},
	}
	kc := map[string]string{}
	for name, u := range users {
		ck, err := ca.clientCert(u.user, u.groups...)
		if err != nil {
			return err
		}
		path := filepath.Join(n.root, name+".kubeconfig")
		cfg := &rest.Config{Host: c.state.Server, TLSClientConfig: rest.TLSClientConfig{CAData: ca.certPEM(), CertData: ck.CertPEM, KeyData: ck.KeyPEM}}
		if err := writeKubeconfig(path, cfg, "cake-testcluster"); err != nil {
			return err
		}
		kc[name] = path
	}

	// containerd, with the unpacked runc shim and runc on its PATH.
	n.socket = filepath.Join(run, "containerd", "containerd.sock")
	containerdConf := filepath.Join(n.root, "containerd.toml")
	if err := os.WriteFile(containerdConf, []byte(containerdConfig(n.root, sys, ro.PauseImage)), 0o600); err != nil {
		return err
	}
	env := append(childEnv(), "PATH="+filepath.Join(sys, "usr/bin")+":"+filepath.Join(sys, "usr/sbin")+":"+os.Getenv("PATH"))
	c.logf("starting containerd")
	if err := start(binContainerd, filepath.Join(sys, "usr/bin/containerd"), env, "--config", containerdConf); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd", func(ctx context.Context) error {
		return exec.CommandContext(ctx, n.ctr, "--address", n.socket, "version").Run()
	}); err != nil {
		return err
	}
	for _, img := range ro.Images {
		began := time.Now()
		if img, err = filepath.Abs(img); err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, n.ctr, "--address", n.socket, "-n", "k8s.io", "images", "import", "--no-unpack=false", img).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import %s into containerd: %v: %s", img, err, out)
		}
		c.logf("imported %s in %s", filepath.Base(img), time.Since(began).Round(100*time.Millisecond))
	}

	cni := filepath.Join(n.root, "cni", "net.d", "10-bridge.conflist")
	if err := os.WriteFile(cni, []byte(cniConfig(n.root)), 0o600); err != nil {
		return err
	}
	resolv := filepath.Join(n.root, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+RealNodeIP+"\n"), 0o644); err != nil {
		return err
	}
	kubeletConf := filepath.Join(n.root, "kubelet.yaml")
	if err := os.WriteFile(kubeletConf, []byte(kubeletConfig(n, kubeletPort, kubeletHealthz, nodePKI, resolv)), 0o600); err != nil {
		return err
	}
	c.logf("starting the kubelet on %s:%d", RealNodeIP, kubeletPort)
	if err := start(binKubelet, filepath.Join(opts.BinDir, binKubelet), env,
		"--config="+kubeletConf,
		"--kubeconfig="+kc["kubelet"],
		"--hostname-override="+RealNodeName,
		"--node-ip="+RealNodeIP,
		"--root-dir="+filepath.Join(n.root, "kubelet"),
		"--v=1",
	); err != nil {
		return err
	}

	proxyConf := filepath.Join(n.root, "kube-proxy.yaml")
	if err := os.WriteFile(proxyConf, []byte(kubeProxyConfig(kc["kube-proxy"], proxyHealthz, proxyMetrics)), 0o600); err != nil {
		return err
	}
	c.logf("starting kube-proxy and CoreDNS")
	if err := start(binKubeProxy, filepath.Join(opts.BinDir, binKubeProxy), env, "--config="+proxyConf, "--v=1"); err != nil {
		return err
	}
	corefile := filepath.Join(n.root, "Corefile")
	if err := os.WriteFile(corefile, []byte(coreDNSConfig(kc["coredns"], dnsHealth, dnsReady)), 0o600); err != nil {
		return err
	}
	if err := start(binCoreDNS, filepath.Join(opts.BinDir, binCoreDNS), env, "-conf", corefile); err != nil {
		return err
	}

	if err := c.waitFor(ctx, "node "+RealNodeName+" Ready", func(ctx context.Context) error {
		node, err := c.client.CoreV1().Nodes().Get(ctx, RealNodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(node) {
			return errors.New("not Ready yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "CoreDNS ready", func(ctx context.Context) error {
		return httpOK(ctx, "http://127.0.0.1:"+strconv.Itoa(dnsReady)+"/ready")
	}); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-proxy healthy", func(ctx context.Context) error {
		return httpOK(ctx, "http://127.0.0.1:"+strconv.Itoa(proxyHealthz)+"/healthz")
	}); err != nil {
		return err
	}
	hostPaths := ro.HostPathDir
	if hostPaths == "" {
		hostPaths = filepath.Join(c.dir, "volumes")
	}
	if err := c.startProvisioner(hostPaths); err != nil {
		return err
	}
	return nil
}

// startFunc starts one owned process of the cluster with the given environment (nil: the
// default) and records it.
type startFunc func(name, bin string, env []string, args ...string) error

func containerdConfig(root, sys, pause string) string {
	r := func(p string) string { return strconv.Quote(filepath.Join(root, p)) }
	return `# containerd 1.6 (Debian) – private instance of one test node
version = 2
root = ` + r("run/containerd/root") + `
state = ` + r("run/containerd/state") + `
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]
[grpc]
  address = ` + r("run/containerd/containerd.sock") + `
[ttrpc]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = ` + r("run/containerd/opt") + `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + strconv.Quote(pause) + `
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  # No CAP_SYS_RESOURCE here: clamp negative oom_score_adj to containerd's own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = ` + strconv.Quote(filepath.Join(sys, "usr/sbin/runc")) + `
        Root = ` + r("run/runc") + `
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + strconv.Quote(filepath.Join(sys, "usr/lib/cni")) + `
    conf_dir = ` + r("cni/net.d") + `
    max_conf_num = 1
`
}

// cniConfig is a bridge without gateway or masquerade: pods get no default route, only one to
// the Service range through the node, where kube-proxy translates it.
func cniConfig(root string) string {
	return `{
  "cniVersion": "0.4.0",
  "name": "cake-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "` + realNodeBridge + `",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": ` + strconv.Quote(filepath.Join(root, "run", "cni-ipam")) + `,
        "ranges": [[{"subnet": "` + realNodeSubnet + `", "rangeStart": "10.213.77.10", "rangeEnd": "10.213.77.250", "gateway": "` + RealNodeIP + `"}]],
        "routes": [{"dst": "` + serviceCIDR + `", "gw": "` + RealNodeIP + `"}]
      }
    },
    {"type": "loopback"}
  ]
}
`
}

func kubeletConfig(n *realNode, port, healthz int, pki, resolv string) string {
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The host may be cgroup v1 (hybrid) without systemd as PID 1.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: ` + n.cgroupRoot + `
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://` + n.socket + `
podLogsDir: ` + filepath.Join(n.root, "run", "pod-logs") + `
address: ` + RealNodeIP + `
port: ` + strconv.Itoa(port) + `
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ` + strconv.Itoa(healthz) + `
tlsCertFile: ` + filepath.Join(pki, "kubelet.crt") + `
tlsPrivateKeyFile: ` + filepath.Join(pki, "kubelet.key") + `
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ` + filepath.Join(pki, "ca.crt") + `}
authorization: {mode: Webhook}
clusterDomain: ` + clusterDomain + `
clusterDNS: [` + RealNodeIP + `]
resolvConf: ` + resolv + `
# Never write host sysctls: the expected values are faked inside the node's mount namespace.
protectKernelDefaults: true
failSwapOn: false
# No CAP_SYS_RESOURCE: the kubelet cannot lower its oom_score_adj.
oomScoreAdj: 0
maxPods: 60
serializeImagePulls: false
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%", imagefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 10s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 0s
staticPodPath: ""
localStorageCapacityIsolation: true
`
}

func kubeProxyConfig(kubeconfig string, healthz, metrics int) string {
	return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: ` + kubeconfig + `
hostnameOverride: ` + RealNodeName + `
bindAddress: ` + RealNodeIP + `
healthzBindAddress: 127.0.0.1:` + strconv.Itoa(healthz) + `
metricsBindAddress: 127.0.0.1:` + strconv.Itoa(metrics) + `
clusterCIDR: ` + realNodeSubnet + `
nodePortAddresses: [` + RealNodeIP + `/32]
# Replies of a pod reached through a Service on the same bridge would bypass the node (no
# br_netfilter in a test namespace): masquerade all Service traffic so they come back through it.
iptables:
  masqueradeAll: true
# conntrack limits are machine-wide: leave them alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`
}

func coreDNSConfig(kubeconfig string, health, ready int) string {
	return `.:53 {
    bind ` + RealNodeIP + `
    errors
    health 127.0.0.1:` + strconv.Itoa(health) + `
    ready 127.0.0.1:` + strconv.Itoa(ready) + `
    kubernetes ` + clusterDomain + ` in-addr.arpa ip6.arpa {
        kubeconfig ` + kubeconfig + `
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
`
}

// freePortsOn reserves n distinct ports on ip.
func freePortsOn(ip string, n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("reserve a port on %s: %w", ip, err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// RealNode reports whether the cluster runs a real kubelet (else kwok).
func (c *Cluster) RealNode() bool { return c.state.Node == nodeReal }

// ImportImage imports one more docker-save archive into the real node's containerd.
func (c *Cluster) ImportImage(ctx context.Context, archive string) error {
	if c.node == nil {
		return errors.New("ImportImage needs a real node started by this process")
	}
	out, err := exec.CommandContext(ctx, c.node.ctr, "--address", c.node.socket, "-n", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import %s: %v: %s", archive, err, out)
	}
	return nil
}

// httpOK GETs url and wants a 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
