// Package sessionrunner plays the kubelet for session pods on a kwok cluster: for
// every session pod the agent creates it runs the pod's own work as local processes —
// the init container's `agent session-init` with the pod's arguments, then
// `opencode serve` with the pod's environment (the password read from the session's
// Secret, the pod's Secret volumes written to local directories) — and points a kwok
// PortForward at it, so port-forwarding to the pod's port 4096 reaches a real OpenCode.
// Exec runs a command in a pod's workspace with the OpenCode container's environment,
// as `kubectl exec` would. `make demo` and the end-to-end tests use it; nothing
// here ships in the agent.
package sessionrunner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
	// ws and env are the OpenCode process's working directory and environment (Exec).
	ws  string
	env []string
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
	local, err := r.secretVolumes(ctx, pod, dir, ws)
	if err != nil {
		return err
	}
	if len(pod.Spec.InitContainers) > 0 {
		ic := pod.Spec.InitContainers[0]
		args := []string{"session-init"}
		for _, a := range ic.Args {
			args = append(args, local.Replace(a))
		}
		// pflag keeps the last value: point the pod's paths at the local directories.
		args = append(args, "--workspace="+ws, "--config="+cfgPath)
		if r.o.AllowLocalRepo {
			args = append(args, "--allow-local-repo")
		}
		init := exec.CommandContext(ctx, r.o.Agent, args...)
		// The container's environment as the OpenCode process gets it below (paths into
		// Secret volumes, such as GIT_SSH_COMMAND's key file, pointed at the local
		// copies); the local HOME and TMPDIR win.
		init.Env = append(os.Environ(), r.o.Env...)
		for _, e := range ic.Env {
			v := e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				v = string(secret.Data[e.ValueFrom.SecretKeyRef.Key])
			}
			init.Env = append(init.Env, e.Name+"="+local.Replace(v))
		}
		init.Env = append(init.Env, "HOME="+home, "TMPDIR="+tmp, "GIT_TERMINAL_PROMPT=0")
		if out, err := init.CombinedOutput(); err != nil {
			r.reportInitFailure(ctx, pod, ic.Name, string(out))
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
	// The config's {file:} references (provider keys) name the pod's mount paths: point
	// them at the local copies, since a process here cannot mount at the pod's paths.
	if cfg, err := os.ReadFile(cfgPath); err == nil {
		if err := os.WriteFile(cfgPath, []byte(local.Replace(string(cfg))), 0o644); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	env := append(os.Environ(), r.o.Env...)
	for _, e := range main.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = string(secret.Data[e.ValueFrom.SecretKeyRef.Key])
		}
		env = append(env, e.Name+"="+local.Replace(v))
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
	p.cmd, p.port, p.ws, p.env = cmd, port, ws, env
	r.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	r.log.Info("session pod running locally", "pod", pod.Namespace+"/"+pod.Name, "port", port, "dir", dir)
	return nil
}

// reportInitFailure records a failed init container in the pod's status as the kubelet
// does (terminated, exit code 1, its output as the message), so the agent sees why the
// session cannot start. It waits for kwok to have made the pod Running first: kwok's
// pod-ready stage would otherwise overwrite the status.
func (r *Runner) reportInitFailure(ctx context.Context, pod *corev1.Pod, container, output string) {
	pods := r.o.Kube.CoreV1().Pods(pod.Namespace)
	msg := strings.TrimSpace(output)
	if len(msg) > 4096 {
		msg = msg[len(msg)-4096:] // the kubelet keeps the tail too
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pod.UID {
			return
		}
		if cur.Status.Phase != corev1.PodRunning {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cur.Status.InitContainerStatuses = []corev1.ContainerStatus{{
			Name:  container,
			Image: pod.Spec.InitContainers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: msg}},
		}}
		for i, c := range cur.Status.Conditions {
			if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				cur.Status.Conditions[i].Status = corev1.ConditionFalse
			}
		}
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) {
			if err != nil {
				r.log.Warn("report init failure failed", "pod", pod.Namespace+"/"+pod.Name, "error", err)
			}
			return
		}
	}
}

// secretVolumes writes the pod's Secret volumes (their items, or every key) into dir
// and returns a replacer from their mount paths (and the workspace volume's, to ws) to
// the local directories, for the
// paths in the containers' arguments and environment. A missing optional key is left
// out, as the kubelet does.
func (r *Runner) secretVolumes(ctx context.Context, pod *corev1.Pod, dir, ws string) (*strings.Replacer, error) {
	// The workspace too: paths under it (a persistent session's XDG_DATA_HOME) name
	// the local directory.
	local := map[string]string{"workspace": ws} // volume name -> directory
	for _, v := range pod.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		sec, err := r.o.Kube.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("read secret %s of volume %s: %w", v.Secret.SecretName, v.Name, err)
		}
		vdir := filepath.Join(dir, "volume-"+v.Name)
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			return nil, err
		}
		items := v.Secret.Items
		if len(items) == 0 {
			for k := range sec.Data {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			b, ok := sec.Data[it.Key]
			if !ok {
				if v.Secret.Optional != nil && *v.Secret.Optional {
					continue
				}
				return nil, fmt.Errorf("secret %s has no key %s for volume %s", sec.Name, it.Key, v.Name)
			}
			if err := os.WriteFile(filepath.Join(vdir, it.Path), b, 0o400); err != nil {
				return nil, err
			}
		}
		local[v.Name] = vdir
	}
	var pairs []string
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if d, ok := local[m.Name]; ok {
				pairs = append(pairs, m.MountPath, d)
			}
		}
	}
	return strings.NewReplacer(pairs...), nil
}

// Exec runs argv in the workspace of the pod's OpenCode process with that process's
// environment, as `kubectl exec` into the opencode container would, and returns its
// combined output.
func (r *Runner) Exec(ctx context.Context, namespace, pod string, argv ...string) ([]byte, error) {
	r.mu.Lock()
	p := r.pods[namespace+"/"+pod]
	var ws string
	var env []string
	if p != nil {
		ws, env = p.ws, p.env
	}
	r.mu.Unlock()
	if ws == "" {
		return nil, fmt.Errorf("pod %s/%s is not running here", namespace, pod)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = ws, env
	return cmd.CombinedOutput()
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
	var cmd *exec.Cmd
	if p != nil {
		cmd = p.cmd // written by start under the lock
	}
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	// SIGTERM lets OpenCode exit cleanly (≈1.5 s); SIGKILL after 5 s.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
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
