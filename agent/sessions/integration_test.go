package sessions

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// env is one integration test's world: a restricted namespace on the real test cluster
// and a real store.
type env struct {
	t     *testing.T
	cl    *testcluster.Cluster
	kube  kubernetes.Interface
	ns    string
	st    store.Store
	owner string

	mu      sync.Mutex
	running map[*Controller]bool // started and not stopped: waitWarm waits for their caches
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cl := testcluster.Get(t)
	ns := cl.NewNamespace(t, map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	st, owner := newStore(t)
	return &env{t: t, cl: cl, kube: cl.AdminClient(), ns: ns, st: st, owner: owner}
}

func (e *env) config() Config {
	cfg := testConfig(e.ns)
	cfg.ReconcileInterval = 2 * time.Second
	return cfg
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// start runs a controller until the test ends (or stop is called) and waits until it is ready.
func (e *env) start(cfg Config) (c *Controller, stop func()) {
	e.t.Helper()
	return e.startWith(cfg, nil)
}

// startWith is start with prepare run on the controller before it runs (a test clock).
func (e *env) startWith(cfg Config, prepare func(*Controller)) (c *Controller, stop func()) {
	e.t.Helper()
	cfg.Registerer = prometheus.NewRegistry()
	c = newTestController(e.t, cfg, e.kube, e.st)
	if prepare != nil {
		prepare(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.mu.Lock()
	if e.running == nil {
		e.running = map[*Controller]bool{}
	}
	e.running[c] = true
	e.mu.Unlock()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			e.mu.Lock()
			delete(e.running, c)
			e.mu.Unlock()
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	if err := wait.PollUntilContextTimeout(ctxT(e.t), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return c.Ready(ctx) == nil, nil
	}); err != nil {
		e.t.Fatalf("controller never ready: %v", err)
	}
	return c, stop
}

// waitSession polls the store until cond holds for the session (nil: the row is gone).
func (e *env) waitSession(id string, what string, cond func(*store.Session) bool) *store.Session {
	e.t.Helper()
	var last *store.Session
	err := wait.PollUntilContextTimeout(ctxT(e.t), 50*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := e.st.GetSession(ctx, id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
		last = s
		return cond(s), nil
	})
	if err != nil {
		if last != nil {
			e.t.Fatalf("session %s: waiting for %s: %v (last: state=%s reason=%s message=%q)", id, what, err, last.State, last.Reason, last.Message)
		}
		e.t.Fatalf("session %s: waiting for %s: %v (row gone)", id, what, err)
	}
	return last
}

func inState(st apiv1.SessionState) func(*store.Session) bool {
	return func(s *store.Session) bool { return s != nil && s.State == st }
}

func gone(s *store.Session) bool { return s == nil }

// waitGone waits until get reports NotFound.
func (e *env) waitGone(what string, get func(ctx context.Context) error) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(ctxT(e.t), 50*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		err := get(ctx)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		e.t.Fatalf("%s still exists: %v", what, err)
	}
}

func (e *env) pod(ctx context.Context, id string) (*corev1.Pod, error) {
	return e.kube.CoreV1().Pods(e.ns).Get(ctx, PodName(id), metav1.GetOptions{})
}

// preBoundPV makes a volume for the session's workspace claim: the test cluster has no
// provisioner, and a claim that never binds keeps its pod unschedulable.
func (e *env) preBoundPV(id string) { e.preBoundPVNamed(id, e.ns+"-"+id) }

// preBoundPVNamed is preBoundPV with the volume's name: a claim made again (after the
// first was deleted) needs a second volume, as the first is Released.
func (e *env) preBoundPVNamed(id, name string) {
	e.t.Helper()
	ctx := ctxT(e.t)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/nonexistent/" + id}},
			ClaimRef:                      &corev1.ObjectReference{Namespace: e.ns, Name: PVCName(id)},
		},
	}
	if _, err := e.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create PV: %v", err)
	}
	e.t.Cleanup(func() {
		_ = e.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
}
