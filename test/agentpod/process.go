package agentpod

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Image describes what the container's image contributes to the process (its Dockerfile's
// ENTRYPOINT, CMD, ENV and WORKDIR) and which local binaries stand in for its executables.
type Image struct {
	Entrypoint, Cmd []string
	// Env holds the image's ENV lines (NAME=value); the container's env wins over them.
	Env []string
	// WorkingDir is the image's WORKDIR (the container's workingDir wins).
	WorkingDir string
	// Binaries maps executables of the image ("agent", "/usr/local/bin/agent") to local paths.
	Binaries map[string]string
}

// Options say which container of which pod to run, and what stands in for the parts of a
// pod that do not exist outside one.
type Options struct {
	// Kube reads the Secrets and ConfigMaps the container references and requests the
	// ServiceAccount token; Config names the cluster (server and CA) the process talks to.
	Kube   kubernetes.Interface
	Config *rest.Config
	Pod    *corev1.Pod
	// Container is the name of the container to run.
	Container string
	Image     Image
	// Dir is a local directory for the volumes, the kubeconfig and the home directory.
	Dir string
	// Services maps addresses the container reaches through cluster DNS and a Service
	// ("name.namespace.svc:port", see ServiceAddresses) to the local address of the process
	// that plays the Service's pods.
	Services map[string]string
	// ClaimDir gives the local directory behind a PersistentVolumeClaim (see PrepareVolumes).
	ClaimDir func(claim string) string
	// TokenTTL is how long the ServiceAccount token lasts (default one hour).
	TokenTTL time.Duration
}

// Process is a container prepared to run as a local process.
type Process struct {
	// Env is the container's environment as the kubelet resolves it, before any local
	// substitution.
	Env Env
	// Argv is the command line, the local binary first; Environ the process's environment.
	Argv    []string
	Environ []string
	// Dir is the working directory.
	Dir    string
	Mounts Mounts
	// Ports maps the container's ports, by name and by number, to the loopback ports the
	// process listens on instead.
	Ports map[string]int
	// Substitutions lists every local stand-in applied, one line each, for logs.
	Substitutions []string
	// Kubeconfig carries the pod's ServiceAccount identity.
	Kubeconfig string
}

// Prepare resolves everything the kubelet would give container o.Container of o.Pod and maps
// what only exists inside a pod to local stand-ins:
//
//   - the pod's own network namespace: the container's ports become free loopback ports, and
//     env values that are listen addresses of those ports (":8080") are rewritten to them;
//   - volumes: local directories (PrepareVolumes), and container paths under a mount in env
//     values ("sqlite:///data/agents.db") are rewritten to them; TMPDIR points at a mounted
//     /tmp, because a process outside the pod would otherwise share the machine's /tmp;
//   - cluster DNS and Services: addresses in env values are rewritten per o.Services;
//   - the in-cluster config (the projected ServiceAccount token and the KUBERNETES_SERVICE_*
//     variables the kubelet injects): a kubeconfig with a token of the pod's ServiceAccount,
//     bound to the pod, in KUBECONFIG;
//   - the image's file system: HOME is an empty local directory (the image sets none, and a
//     process here must not write into the machine's home).
//
// The process runs as the current user, not as the pod's runAsUser.
func Prepare(ctx context.Context, o Options) (*Process, error) {
	var c *corev1.Container
	for i := range o.Pod.Spec.Containers {
		if o.Pod.Spec.Containers[i].Name == o.Container {
			c = &o.Pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("pod %s/%s has no container %q", o.Pod.Namespace, o.Pod.Name, o.Container)
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	p := &Process{Ports: map[string]int{}}
	var err error
	if p.Env, err = ResolveEnv(ctx, o.Kube, o.Pod, c); err != nil {
		return nil, err
	}
	if p.Mounts, err = PrepareVolumes(ctx, o.Kube, o.Pod, c, o.Dir, o.ClaimDir); err != nil {
		return nil, err
	}
	for _, mp := range p.Mounts.byLength() {
		p.Substitutions = append(p.Substitutions, fmt.Sprintf("volume mount %s -> %s", mp, p.Mounts[mp]))
	}
	byNumber := map[string]int{}
	for _, port := range c.Ports {
		if port.Protocol != "" && port.Protocol != corev1.ProtocolTCP {
			return nil, fmt.Errorf("port %d/%s: agentpod maps TCP ports only", port.ContainerPort, port.Protocol)
		}
		local, err := freePort()
		if err != nil {
			return nil, err
		}
		num := strconv.Itoa(int(port.ContainerPort))
		byNumber[num] = local
		p.Ports[num] = local
		if port.Name != "" {
			p.Ports[port.Name] = local
		}
		p.Substitutions = append(p.Substitutions, fmt.Sprintf("port %s (%s) -> 127.0.0.1:%d", num, port.Name, local))
	}

	// The container's environment, then the local rewrites of each value.
	env := map[string]string{}
	var order []string
	for _, v := range p.Env.Vars {
		val := v.Value
		if local, ok := listenAddress(val, byNumber); ok {
			val = local
		}
		val = replaceAddresses(val, o.Services)
		val = p.Mounts.Rewrite(val)
		if val != v.Value {
			if secret(v) {
				p.Substitutions = append(p.Substitutions, fmt.Sprintf("env %s (from %s): rewritten (value not shown)", v.Name, v.From))
			} else {
				p.Substitutions = append(p.Substitutions, fmt.Sprintf("env %s: %q -> %q", v.Name, v.Value, val))
			}
		}
		if _, seen := env[v.Name]; !seen {
			order = append(order, v.Name)
		}
		env[v.Name] = val
	}

	// The pod's identity instead of the in-cluster config.
	if _, set := env["KUBECONFIG"]; set {
		return nil, errors.New("the container sets KUBECONFIG itself; agentpod gives the process the pod's identity through KUBECONFIG and cannot do both")
	}
	p.Kubeconfig = filepath.Join(o.Dir, "serviceaccount.kubeconfig")
	sa := o.Pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if err := ServiceAccountKubeconfig(ctx, o.Kube, o.Config, o.Pod.Namespace, sa, o.Pod, o.TokenTTL, p.Kubeconfig); err != nil {
		return nil, err
	}
	p.Substitutions = append(p.Substitutions, fmt.Sprintf("in-cluster config -> KUBECONFIG with a token of ServiceAccount %s/%s bound to pod %s", o.Pod.Namespace, sa, o.Pod.Name))
	extra := map[string]string{"KUBECONFIG": p.Kubeconfig}
	if tmp, ok := p.Mounts["/tmp"]; ok {
		if _, set := env["TMPDIR"]; !set {
			extra["TMPDIR"] = tmp
		}
	}
	if _, set := env["HOME"]; !set && !imageSets(o.Image.Env, "HOME") {
		extra["HOME"] = filepath.Join(o.Dir, "home")
		if err := os.MkdirAll(extra["HOME"], 0o755); err != nil {
			return nil, err
		}
	}
	p.Environ = append(p.Environ, o.Image.Env...)
	for _, name := range order {
		p.Environ = append(p.Environ, name+"="+env[name])
	}
	for _, name := range sortedKeys(extra) {
		p.Environ = append(p.Environ, name+"="+extra[name])
	}

	// Command line: Kubernetes' rules for command/args against ENTRYPOINT/CMD, with $(VAR)
	// references expanded from the container's environment.
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(append(argv, c.Command...), c.Args...)
	case len(c.Args) > 0:
		argv = append(append(argv, o.Image.Entrypoint...), c.Args...)
	default:
		argv = append(append(argv, o.Image.Entrypoint...), o.Image.Cmd...)
	}
	if len(argv) == 0 {
		return nil, errors.New("neither the container nor the image names a command")
	}
	resolved := p.Env.Map()
	for i := range argv {
		argv[i] = Expand(argv[i], resolved)
	}
	bin, ok := o.Image.Binaries[argv[0]]
	if !ok {
		return nil, fmt.Errorf("the container runs %q, which no local binary stands in for", argv[0])
	}
	p.Argv = append([]string{bin}, argv[1:]...)

	wd := c.WorkingDir
	if wd == "" {
		wd = o.Image.WorkingDir
	}
	if wd == "" {
		wd = "/"
	}
	if local, ok := p.Mounts.Local(wd); ok {
		p.Dir = local
	} else {
		// A directory of the image's own (read-only) file system: an empty stand-in.
		p.Dir = filepath.Join(o.Dir, "rootfs", filepath.Clean(wd))
		if err := os.MkdirAll(p.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Command returns the process's command, not started: in its own process group and killed
// when the thread that starts it dies (start it with ownedproc.Start).
func (p *Process) Command() *exec.Cmd {
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Env, cmd.Dir = p.Environ, p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// LocalPort is the loopback port that stands in for a container port given as a probe gives
// it (by name or number).
func (p *Process) LocalPort(port intstr.IntOrString) (int, error) {
	if local, ok := p.Ports[port.String()]; ok {
		return local, nil
	}
	return 0, fmt.Errorf("the container declares no port %s", port.String())
}

// ServiceAddresses returns the "host:port" spellings under which a pod in namespace from
// reaches port of Service name in namespace ns through cluster DNS, longest first.
func ServiceAddresses(name, ns, from string, port int32) []string {
	p := ":" + strconv.Itoa(int(port))
	out := []string{name + "." + ns + ".svc.cluster.local" + p, name + "." + ns + ".svc" + p, name + "." + ns + p}
	if ns == from {
		out = append(out, name+p)
	}
	return out
}

// listenAddress rewrites a listen address on all interfaces (":8080", "0.0.0.0:8080") of one
// of the container's ports to its loopback stand-in.
func listenAddress(v string, ports map[string]int) (string, bool) {
	host, port, err := net.SplitHostPort(v)
	if err != nil || (host != "" && host != "0.0.0.0" && host != "::") {
		return "", false
	}
	local, ok := ports[port]
	if !ok {
		return "", false
	}
	return "127.0.0.1:" + strconv.Itoa(local), true
}

// replaceAddresses rewrites each "host:port" of addrs found in s as a whole host name (not
// the tail of a longer one) to its local address.
func replaceAddresses(s string, addrs map[string]string) string {
	keys := sortedKeys(addrs)
	sort.SliceStable(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	var b strings.Builder
	for i := 0; i < len(s); {
		matched := false
		if i == 0 || !isHostChar(s[i-1]) {
			for _, k := range keys {
				end := i + len(k)
				if strings.HasPrefix(s[i:], k) && (end == len(s) || s[end] < '0' || s[end] > '9') {
					b.WriteString(addrs[k])
					i, matched = end, true
					break
				}
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

func isHostChar(c byte) bool {
	return c == '.' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func imageSets(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

// secret reports whether v came from a Secret (its value never goes into logs).
func secret(v Var) bool {
	return strings.HasPrefix(v.From, "secret ") || strings.HasPrefix(v.From, "envFrom secret ")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
