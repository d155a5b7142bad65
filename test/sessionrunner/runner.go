// Package sessionrunner plays the kubelet for session pods on a kwok cluster: for
// every session pod the agent creates it runs the pod's own work as local processes —
// the init container's `agent session-init` with the pod's arguments, then
// `opencode serve` with the pod's environment (the password read from the session's
// Secret) — and points a kwok PortForward at it, so port-forwarding to the pod's port
// 4096 reaches a real OpenCode. `make demo` and the end-to-end tests use it; nothing
// here ships in the agent.
package sessionrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/cakeai/cake-agents/internal/ownedproc"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// PortForwardGVR is kwok's PortForward resource.
var PortForwardGVR = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}

// Options configure a Runner.
type Options struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// Namespace holds the session pods.
	Namespace string
	// OpenCode is the opencode binary; Agent the agent binary (for session-init).
	OpenCode string
	Agent    string
	// WorkDir receives one directory per pod (workspace, home, config, log).
	WorkDir string
	// Env is added to every process (PATH with rg, offline settings).
	Env []string
	// AllowLocalRepo lets session-init clone file:// repositories (tests).
	AllowLocalRepo bool
	Log            hclog.Logger
}

// Runner runs session pods locally.
type Runner struct {
	o    Options
	log  hclog.Logger
	mu   sync.Mutex
	pods map[string]*podProc // by namespace/name
}

type podProc struct {
	uid  string
	cmd  *exec.Cmd
	done chan struct{}
	dir  string
	port int
}

// New returns a Runner; call Run to start it.
func New(o Options) *Runner {
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	return &Runner{o: o, log: o.Log, pods: map[string]*podProc{}}
}

// Run watches session pods until ctx ends, then stops every process it started.
func (r *Runner) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(r.o.Kube, 0,
		informers.WithNamespace(r.o.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = apiv1.LabelName + "=" + apiv1.SessionAppName
		}))
	// Pods and claims share the label selector above.
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.ensure(ctx, obj) },
		UpdateFunc: func(_, obj any) { r.ensure(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				r.stop(p.Namespace + "/" + p.Name)
			}
		},
	})
	if err != nil {
		return err
	}
	// The local cluster has no storage provisioner: provision persistent workspaces
	// as host paths in WorkDir, which is also where the pods' workspaces live.
	pvcs := factory.Core().V1().PersistentVolumeClaims().Informer()
	_, err = pvcs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.provision(ctx, obj) },
		UpdateFunc: func(_, obj any) { r.provision(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if c, ok := obj.(*corev1.PersistentVolumeClaim); ok {
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = r.o.Kube.CoreV1().PersistentVolumes().Delete(dctx, pvName(c), metav1.DeleteOptions{})
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	r.mu.Lock()
	keys := make([]string, 0, len(r.pods))
	for k := range r.pods {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	for _, k := range keys {
		r.stop(k)
	}
	return nil
}

func pvName(c *corev1.PersistentVolumeClaim) string {
	return "cake-local-" + c.Namespace + "-" + c.Name
}

// provision creates a host-path PersistentVolume pre-bound to an unbound claim.
func (r *Runner) provision(ctx context.Context, obj any) {
	c, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || c.Spec.VolumeName != "" || c.DeletionTimestamp != nil {
		return
	}
	size := c.Spec.Resources.Requests[corev1.ResourceStorage]
	class := ""
	if c.Spec.StorageClassName != nil {
		class = *c.Spec.StorageClassName
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName(c)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   c.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              class,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: filepath.Join(r.o.WorkDir, "pvc-"+c.Name),
			}},
		},
	}
	if _, err := r.o.Kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		r.log.Warn("provision volume failed", "claim", c.Namespace+"/"+c.Name, "error", err)
	}
}

// Port returns the local port serving the pod's OpenCode, or 0.
func (r *Runner) Port(namespace, pod string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pods[namespace+"/"+pod]; p != nil {
		return p.port
	}
	return 0
}

func (r *Runner) ensure(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.DeletionTimestamp != nil {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	r.mu.Lock()
	if p := r.pods[key]; p != nil {
		if p.uid == string(pod.UID) {
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.stop(key) // a new pod under the same name: start afresh
		r.mu.Lock()
	}
	p := &podProc{uid: string(pod.UID), done: make(chan struct{})}
	r.pods[key] = p
	r.mu.Unlock()
	go func() {
		if err := r.start(ctx, pod, p); err != nil && ctx.Err() == nil {
			r.log.Error("session pod failed to start locally", "pod", key, "error", err)
		}
	}()
}

func (r *Runner) start(ctx context.Context, pod *corev1.Pod, p *podProc) error {
	dir, err := os.MkdirTemp(r.o.WorkDir, pod.Name+"-")
	if err != nil {
		return err
	}
	p.dir = dir
	ws, home, tmp := filepath.Join(dir, "workspace"), filepath.Join(dir, "home"), filepath.Join(dir, "tmp")
	// A persistent session's workspace lives on its PVC: keep it in a directory named
	// after the claim so a restarted pod finds the same files.
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			ws = filepath.Join(r.o.WorkDir, "pvc-"+v.PersistentVolumeClaim.ClaimName)
		}
	}
	cfgPath := filepath.Join(dir, "opencode.json")
	for _, d := range []string{ws, home, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Point the pod's port at loopback first: until OpenCode listens, a port-forward
	// is refused at once instead of kwok trying the pod's fake IP.
	port, err := freePort()
	if err != nil {
		return err
	}
	if err := r.forward(ctx, pod, port); err != nil {
		return err
	}
	secret, err := r.o.Kube.CoreV1().Secrets(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the session secret: %w", err)
	}
	if len(pod.Spec.InitContainers) > 0 {
		ic := pod.Spec.InitContainers[0]
		args := append([]string{"session-init"}, ic.Args...)
		// pflag keeps the last value: point the pod's paths at the local directories.
		args = append(args, "--workspace="+ws, "--config="+cfgPath)
		if r.o.AllowLocalRepo {
			args = append(args, "--allow-local-repo")
		}
		init := exec.CommandContext(ctx, r.o.Agent, args...)
		init.Env = append(append(os.Environ(), r.o.Env...), "HOME="+home, "TMPDIR="+tmp, "GIT_TERMINAL_PROMPT=0")
		if out, err := init.CombinedOutput(); err != nil {
			return fmt.Errorf("session-init: %w: %s", err, out)
		}
	}
	var main *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "opencode" {
			main = &pod.Spec.Containers[i]
		}
	}
	if main == nil {
		return errors.New("pod has no opencode container")
	}
	if err := mountSecrets(pod, main, secret, dir, cfgPath); err != nil {
		return err
	}
	env := append(os.Environ(), r.o.Env...)
	for _, e := range main.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = string(secret.Data[e.ValueFrom.SecretKeyRef.Key])
		}
		env = append(env, e.Name+"="+v)
	}
	env = append(env, "HOME="+home, "TMPDIR="+tmp, "OPENCODE_CONFIG="+cfgPath, "npm_config_registry=http://127.0.0.1:9/")
	logFile, err := os.Create(filepath.Join(dir, "opencode.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(r.o.OpenCode, "serve", "--port", fmt.Sprint(port), "--hostname", "127.0.0.1", "--print-logs", "--log-level", "INFO")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = ws, env, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := ownedproc.Start(cmd); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("start opencode: %w", err)
	}
	r.mu.Lock()
	p.cmd, p.port = cmd, port
	r.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	r.log.Info("session pod running locally", "pod", pod.Namespace+"/"+pod.Name, "port", port, "dir", dir)
	return nil
}

// mountSecrets plays the kubelet's Secret volumes of the OpenCode container (the
// provider keys): each item becomes a file under dir, and references to the mount path
// in the OpenCode config ({file:MOUNT/KEY}) are pointed at that local directory, since
// a process here cannot mount at the pod's absolute path.
func mountSecrets(pod *corev1.Pod, main *corev1.Container, secret *corev1.Secret, dir, cfgPath string) error {
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			vols[v.Name] = v.Secret
		}
	}
	var repl []string
	for _, m := range main.VolumeMounts {
		sv := vols[m.Name]
		if sv == nil {
			continue
		}
		if sv.SecretName != secret.Name {
			return fmt.Errorf("volume %s: only the session's own Secret can be mounted here, not %s", m.Name, sv.SecretName)
		}
		local := filepath.Join(dir, "mounts", m.Name)
		if err := os.MkdirAll(local, 0o700); err != nil {
			return err
		}
		for _, it := range sv.Items {
			v, ok := secret.Data[it.Key]
			if !ok {
				return fmt.Errorf("volume %s: the Secret has no key %s", m.Name, it.Key)
			}
			if err := os.WriteFile(filepath.Join(local, it.Path), v, 0o400); err != nil {
				return err
			}
		}
		repl = append(repl, "{file:"+m.MountPath+"/", "{file:"+local+"/")
	}
	if len(repl) == 0 {
		return nil
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return fmt.Errorf("read the OpenCode config: %w", err)
	}
	return os.WriteFile(cfgPath, []byte(strings.NewReplacer(repl...).Replace(string(b))), 0o644)
}

// forward points kwok's port-forward for the pod's OpenCode port at the local process.
func (r *Runner) forward(ctx context.Context, pod *corev1.Pod, port int) error {
	return Forward(ctx, r.o.Dynamic, pod.Namespace, pod.Name, map[int]int{apiv1.OpenCodePort: port})
}

// Forward (re)creates kwok's PortForward for a pod so that port-forwards to each key
// port of the pod reach the value port on 127.0.0.1.
func Forward(ctx context.Context, dyn dynamic.Interface, namespace, pod string, ports map[int]int) error {
	var forwards []any
	for from, to := range ports {
		forwards = append(forwards, map[string]any{
			"ports":  []any{int64(from)},
			"target": map[string]any{"address": "127.0.0.1", "port": int64(to)},
		})
	}
	pf := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "PortForward",
		"metadata":   map[string]any{"name": pod, "namespace": namespace},
		"spec":       map[string]any{"forwards": forwards},
	}}
	res := dyn.Resource(PortForwardGVR).Namespace(namespace)
	_ = res.Delete(ctx, pod, metav1.DeleteOptions{})
	for i := 0; ; i++ {
		_, err := res.Create(ctx, pf, metav1.CreateOptions{})
		if err == nil || !apierrors.IsAlreadyExists(err) || i > 50 {
			if err != nil {
				return fmt.Errorf("port-forward for pod %s/%s: %w", namespace, pod, err)
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond) // the old object is still being deleted
	}
}

func (r *Runner) stop(key string) {
	r.mu.Lock()
	p := r.pods[key]
	delete(r.pods, key)
	r.mu.Unlock()
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return
	}
	// SIGTERM lets OpenCode exit cleanly (≈1.5 s); SIGKILL after 5 s.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	ns, name, _ := strings.Cut(key, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.o.Dynamic.Resource(PortForwardGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
	r.log.Info("session pod stopped locally", "pod", key)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
