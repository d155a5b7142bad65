package sessions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
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
	cfg.Registerer = prometheus.NewRegistry()
	c = newTestController(e.t, cfg, e.kube, e.st)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
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
func (e *env) preBoundPV(id string) {
	e.t.Helper()
	ctx := ctxT(e.t)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: e.ns + "-" + id},
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

// TestLifecycle: create → the pod is admitted as restricted and has the required spec →
// Running; stop → pod gone, PVC and Secret kept; start → pod back on the same PVC;
// delete → nothing left.
func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	id := NewID()
	e.preBoundPV(id)

	var hooked sync.Map
	c.SetReadyHook(func(_ context.Context, s *store.Session) {
		n, _ := hooked.LoadOrStore(s.ID, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
	})
	s := &store.Session{ID: id, OwnerID: e.owner, Repo: "https://github.com/org/repo", Persistent: true, Prompt: "hi"}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.State == apiv1.StateFailed {
		t.Fatalf("create failed: %s: %s", s.Reason, s.Message)
	}
	pod, err := e.pod(ctx, id)
	if err != nil {
		t.Fatalf("pod not created by Create: %v", err)
	}
	if pod.Spec.Containers[0].Name != ContainerName || pod.Spec.InitContainers[0].Name != InitContainerName ||
		pod.Labels[apiv1.LabelSessionID] != id || pod.Labels[apiv1.LabelInstance] != "rel" ||
		pod.Spec.Volumes[0].PersistentVolumeClaim == nil {
		t.Errorf("unexpected pod spec: %+v", pod.Spec)
	}
	running := e.waitSession(id, "Running", inState(apiv1.StateRunning))
	if running.Reason != "" {
		t.Errorf("running session has reason %q", running.Reason)
	}
	pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		n, ok := hooked.Load(id)
		return ok && n.(*atomic.Int32).Load() == 1, nil
	}); err != nil {
		t.Errorf("ready hook not called exactly once")
	}
	if testutil.CollectAndCount(c.metrics.podStart) != 1 {
		t.Errorf("pod start latency not observed")
	}
	reg := c.cfg.Registerer.(*prometheus.Registry)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cake_agents_sessions Sessions by state, as stored in the database.
# TYPE cake_agents_sessions gauge
cake_agents_sessions{state="Deleting"} 0
cake_agents_sessions{state="Failed"} 0
cake_agents_sessions{state="Pending"} 0
cake_agents_sessions{state="Running"} 1
cake_agents_sessions{state="Starting"} 0
cake_agents_sessions{state="Stopped"} 0
cake_agents_sessions{state="Stopping"} 0
`), "cake_agents_sessions"); err != nil {
		t.Errorf("sessions gauge: %v", err)
	}

	// Stop: pod gone, PVC and Secret kept.
	if _, err := c.Stop(ctx, id, "", "user asked"); err != nil {
		t.Fatal(err)
	}
	stopped := e.waitSession(id, "Stopped", inState(apiv1.StateStopped))
	if stopped.Reason != ReasonStoppedByUser || stopped.Message != "user asked" || stopped.StoppedAt == nil {
		t.Errorf("stopped session: reason %q message %q stoppedAt %v", stopped.Reason, stopped.Message, stopped.StoppedAt)
	}
	e.waitGone("pod", func(ctx context.Context) error { _, err := e.pod(ctx, id); return err })
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(id), metav1.GetOptions{}); err != nil {
		t.Errorf("stop deleted the PVC: %v", err)
	}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(id), metav1.GetOptions{}); err != nil {
		t.Errorf("stop deleted the Secret: %v", err)
	}

	// Start: the pod comes back on the same claim.
	if _, err := c.Start(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(id, "Running again", inState(apiv1.StateRunning))
	pvc2, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(id), metav1.GetOptions{})
	if err != nil || pvc2.UID != pvc.UID {
		t.Errorf("start did not reuse the PVC: %v", err)
	}
	pod2, err := e.pod(ctx, id)
	if err != nil || pod2.UID == pod.UID || pod2.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != PVCName(id) {
		t.Errorf("restarted pod: %v", err)
	}

	// Events were recorded on the session pod.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + PodName(id)})
		if err != nil {
			return false, err
		}
		reasons := map[string]bool{}
		for _, ev := range evs.Items {
			reasons[ev.Reason] = true
		}
		return reasons["Created"] && reasons["SessionRunning"] && reasons["Stopped"], nil
	}); err != nil {
		t.Errorf("lifecycle events missing: %v", err)
	}

	// Delete: nothing left.
	if err := c.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.waitSession(id, "row deleted", gone)
	e.waitGone("pod", func(ctx context.Context) error { _, err := e.pod(ctx, id); return err })
	e.waitGone("secret", func(ctx context.Context) error {
		_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(id), metav1.GetOptions{})
		return err
	})
	e.waitGone("pvc", func(ctx context.Context) error {
		_, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(id), metav1.GetOptions{})
		return err
	})
}

// TestRestrictedAdmission: the pod passes PodSecurity "restricted" on the real API
// server (a dry-run create, so nothing else interferes).
func TestRestrictedAdmission(t *testing.T) {
	e := newEnv(t)
	c := newTestController(t, e.config(), e.kube, e.st)
	pod, err := c.buildPod(&store.Session{ID: NewID(), OwnerID: "u", Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(ctxT(t), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("restricted namespace rejected the session pod: %v", err)
	}
	// And the check is real: a root pod is refused there.
	pod.Spec.SecurityContext.RunAsNonRoot = nil
	pod.Spec.Containers[0].SecurityContext.RunAsNonRoot = nil
	pod.Spec.InitContainers[0].SecurityContext.RunAsNonRoot = nil
	pod.Spec.SecurityContext.RunAsUser = nil
	pod.Spec.Containers[0].SecurityContext.RunAsUser = nil
	pod.Spec.InitContainers[0].SecurityContext.RunAsUser = nil
	pod.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(ctxT(t), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Fatalf("a non-restricted pod was not refused: %v", err)
	}
}

// TestRejectedPodLeavesNoOrphans: admission refusing the pod (here: a baseline namespace
// that forbids nothing, and a LimitRange-free ResourceQuota of zero pods) leaves the
// session Failed with the API server's message and no Secret or PVC.
func TestRejectedPodLeavesNoOrphans(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-pods", Namespace: e.ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}},
	}
	if _, err := e.kube.CoreV1().ResourceQuotas(e.ns).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The quota controller must have computed usage before admission enforces it.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		q, err := e.kube.CoreV1().ResourceQuotas(e.ns).Get(ctx, "no-pods", metav1.GetOptions{})
		return err == nil && q.Status.Hard != nil, nil
	}); err != nil {
		t.Fatalf("quota never computed: %v", err)
	}
	c, _ := e.start(e.config())
	s := &store.Session{OwnerID: e.owner, Persistent: true}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.State != apiv1.StateFailed || s.Reason != ReasonPodRejected || s.Message == "" {
		t.Fatalf("session %s/%s/%q, want Failed/PodRejected with the API message", s.State, s.Reason, s.Message)
	}
	t.Logf("rejected with: %s", s.Message)
	for what, get := range map[string]func(context.Context) error{
		"secret": func(ctx context.Context) error {
			_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
			return err
		},
		"pvc": func(ctx context.Context) error {
			_, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(s.ID), metav1.GetOptions{})
			return err
		},
	} {
		e.waitGone(what, get)
	}
}

// TestCrashConsistency builds the states a crash can leave between any two steps, then
// starts a fresh controller and checks it repairs every one of them.
func TestCrashConsistency(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cfg := e.config()
	// The "crashed" controller: its steps run by hand, it never reconciles.
	crashed := newTestController(t, cfg, e.kube, e.st)
	create := func(s *store.Session) {
		t.Helper()
		if err := crashed.Create(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	setState := func(id string, st apiv1.SessionState) {
		t.Helper()
		if _, _, err := crashed.update(ctx, id, func(s *store.Session) (bool, error) { s.State = st; return true, nil }); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Crash after the row, before any object.
	rowOnly := &store.Session{ID: NewID(), OwnerID: e.owner, State: apiv1.StatePending}
	now := time.Now().UTC()
	rowOnly.CreatedAt, rowOnly.LastActivityAt, rowOnly.StartedAt = now, now, &now
	rowOnly.PodName, rowOnly.PodNamespace = PodName(rowOnly.ID), e.ns
	if err := e.st.CreateSession(ctx, rowOnly, 0); err != nil {
		t.Fatal(err)
	}
	// 2. Crash after the Secret, before the pod.
	secretOnly := &store.Session{ID: NewID(), OwnerID: e.owner, State: apiv1.StatePending, CreatedAt: now, LastActivityAt: now, StartedAt: &now}
	if err := e.st.CreateSession(ctx, secretOnly, 0); err != nil {
		t.Fatal(err)
	}
	if err := crashed.ensureSecret(ctx, secretOnly); err != nil {
		t.Fatal(err)
	}
	// 3. A Running session whose pod disappeared while the agent was down.
	lostPod := &store.Session{OwnerID: e.owner}
	create(lostPod)
	setState(lostPod.ID, apiv1.StateRunning)
	if err := e.kube.CoreV1().Pods(e.ns).Delete(ctx, PodName(lostPod.ID), metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	// 4. Stop interrupted after the intent was written.
	halfStopped := &store.Session{OwnerID: e.owner}
	create(halfStopped)
	setState(halfStopped.ID, apiv1.StateStopping)
	// 5. Delete interrupted after the intent was written.
	halfDeleted := &store.Session{OwnerID: e.owner}
	create(halfDeleted)
	setState(halfDeleted.ID, apiv1.StateDeleting)
	// 6. Orphans: objects whose row was deleted (crash in the middle of a delete's last step).
	orphan := &store.Session{ID: NewID(), OwnerID: "gone-user", Persistent: true}
	if err := crashed.ensureSecret(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if err := crashed.ensurePVC(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.ensurePod(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	// 7. Another release's objects in the same namespace are not ours to delete.
	otherCfg := cfg
	otherCfg.Release = "other"
	otherCfg.Registerer = prometheus.NewRegistry()
	other := newTestController(t, otherCfg, e.kube, e.st)
	foreign := &store.Session{ID: NewID(), OwnerID: "x"}
	if err := other.ensureSecret(ctx, foreign); err != nil {
		t.Fatal(err)
	}

	// The agent comes back.
	e.start(cfg)

	for _, id := range []string{rowOnly.ID, secretOnly.ID, lostPod.ID} {
		e.waitSession(id, "Running", inState(apiv1.StateRunning))
		if _, err := e.pod(ctx, id); err != nil {
			t.Errorf("session %s: pod not recreated: %v", id, err)
		}
	}
	e.waitSession(halfStopped.ID, "Stopped", inState(apiv1.StateStopped))
	e.waitGone("stopped session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, halfStopped.ID); return err })
	e.waitSession(halfDeleted.ID, "row deleted", gone)
	for _, id := range []string{halfDeleted.ID, orphan.ID} {
		e.waitGone("pod "+id, func(ctx context.Context) error { _, err := e.pod(ctx, id); return err })
		e.waitGone("secret "+id, func(ctx context.Context) error {
			_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(id), metav1.GetOptions{})
			return err
		})
	}
	e.waitGone("orphan pvc", func(ctx context.Context) error {
		_, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(orphan.ID), metav1.GetOptions{})
		return err
	})
	if _, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(foreign.ID), metav1.GetOptions{}); err != nil {
		t.Errorf("another release's secret was touched: %v", err)
	}
}

// TestRestartRecovery100: 100 sessions stored while no agent ran all get their pods and
// turn Running when the agent starts.
func TestRestartRecovery100(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const n = 100
	now := time.Now().UTC()
	ids := make([]string, n)
	for i := range ids {
		s := &store.Session{ID: NewID(), OwnerID: e.owner, State: apiv1.StatePending, CreatedAt: now, LastActivityAt: now, StartedAt: &now}
		if i%2 == 1 {
			s.State = apiv1.StateRunning // was running before the outage; its pod is gone
		}
		if err := e.st.CreateSession(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
		ids[i] = s.ID
	}
	began := time.Now()
	e.start(e.config())
	for _, id := range ids {
		e.waitSession(id, "Running", inState(apiv1.StateRunning))
	}
	t.Logf("%d sessions recovered to Running in %s", n, time.Since(began).Round(time.Millisecond))
	pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != n {
		t.Fatalf("%d pods (%v), want %d", len(pods.Items), err, n)
	}
}

// TestTimers: the idle timeout stops a session and the TTL deletes one, each recording
// its reason; a pod deleted from outside is recreated.
func TestTimers(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)

	idle := &store.Session{OwnerID: e.owner, IdleTimeout: 2 * time.Second}
	if err := c.Create(ctx, idle, 0); err != nil {
		t.Fatal(err)
	}
	ttl := &store.Session{OwnerID: e.owner, TTL: 4 * time.Second}
	if err := c.Create(ctx, ttl, 0); err != nil {
		t.Fatal(err)
	}
	victim := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, victim, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(victim.ID, "Running", inState(apiv1.StateRunning))
	before, err := e.pod(ctx, victim.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.kube.CoreV1().Pods(e.ns).Delete(ctx, PodName(victim.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitSession(victim.ID, "Running with a new pod", func(s *store.Session) bool {
		p, err := e.pod(ctx, victim.ID)
		return s != nil && s.State == apiv1.StateRunning && err == nil && p.UID != before.UID
	})

	s := e.waitSession(idle.ID, "Stopped", inState(apiv1.StateStopped))
	if s.Reason != ReasonIdleTimeout || s.Message == "" {
		t.Errorf("idle stop recorded reason %q message %q", s.Reason, s.Message)
	}
	e.waitGone("idle session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, idle.ID); return err })

	// The TTL deletes the row; its reason shows in the Events of the session pod.
	e.waitSession(ttl.ID, "row deleted by TTL", gone)
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + PodName(ttl.ID) + ",reason=" + ReasonTTLExpired})
		return err == nil && len(evs.Items) > 0, nil
	}); err != nil {
		t.Errorf("no %s event: %v", ReasonTTLExpired, err)
	}
}

// TestPodStatusFailures: kubelet-reported failures reach the session and its pod goes.
func TestPodStatusFailures(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: ContainerName, Image: pod.Spec.Containers[0].Image,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}},
	}}
	if _, err := e.kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	failed := e.waitSession(s.ID, "Failed", inState(apiv1.StateFailed))
	if failed.Reason != "OOMKilled" {
		t.Errorf("reason %q, want OOMKilled (message %q)", failed.Reason, failed.Message)
	}
	e.waitGone("failed session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err })
	// A failed session can be started again.
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Running after restart", inState(apiv1.StateRunning))
}

// TestLeaderElection: of two replicas only the Lease holder reconciles, and sessions
// created through either replica run.
func TestLeaderElection(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cfg := e.config()
	cfg.LeaderElection, cfg.LeaseNamespace, cfg.LeaseName = true, e.ns, "sessions-test"
	cfgA, cfgB := cfg, cfg
	cfgA.Identity, cfgB.Identity = "replica-a", "replica-b"
	a, stopA := e.start(cfgA)
	b, stopB := e.start(cfgB)

	var holder string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := e.kube.CoordinationV1().Leases(e.ns).Get(ctx, "sessions-test", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil // not elected yet
		}
		if err != nil {
			return false, err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return false, nil
		}
		holder = *l.Spec.HolderIdentity
		return true, nil
	}); err != nil {
		t.Fatalf("no leader: %v", err)
	}
	follower, stopLeader := b, stopA
	if holder == "replica-b" {
		follower, stopLeader = a, stopB
	}
	// Sessions created through the follower run: the leader's watches pick them up.
	s := &store.Session{OwnerID: e.owner}
	if err := follower.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	follower.mu.Lock()
	followerQueue := follower.queue
	follower.mu.Unlock()
	if followerQueue != nil {
		t.Error("the follower runs a reconcile queue")
	}

	// The leader goes away, releasing the Lease; the follower takes over.
	stopLeader()
	if _, err := follower.Stop(ctx, s.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Stopped by the new leader", inState(apiv1.StateStopped))
}

// TestUnschedulableTimesOut: a pod no node accepts shows Unschedulable with the
// scheduler's message, and the start timeout then fails the session and removes the pod.
func TestUnschedulableTimesOut(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.NodeSelector = map[string]string{"agents.cake.ai/test-pool": "absent"}
	cfg.StartTimeout = 4 * time.Second
	c, _ := e.start(cfg)
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	p := e.waitSession(s.ID, "Unschedulable", func(s *store.Session) bool { return s != nil && s.Reason == ReasonUnschedulable })
	if p.State != apiv1.StatePending || !strings.Contains(p.Message, "node") {
		t.Errorf("unschedulable session %s %q", p.State, p.Message)
	}
	f := e.waitSession(s.ID, "Failed", inState(apiv1.StateFailed))
	if f.Reason != ReasonStartTimeout || !strings.Contains(f.Message, ReasonUnschedulable) {
		t.Errorf("timed-out session %s %q", f.Reason, f.Message)
	}
	e.waitGone("timed-out session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err })
}

// BenchmarkCreate compares the agent's session create (row + Secret + Pod) with a raw
// client-go Pod create against the same API server.
func BenchmarkCreate(b *testing.B) {
	cl := testcluster.Get(b)
	ns := cl.NewNamespace(b, nil)
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	u := &store.User{Source: "kubernetes", Subject: "bench"}
	if err := st.UpsertUser(context.Background(), u); err != nil {
		b.Fatal(err)
	}
	c, err := New(testConfig(ns), cl.AdminClient(), st, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("agent", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := c.Create(ctx, &store.Session{OwnerID: u.ID}, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-pod", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			pod, err := c.buildPod(&store.Session{ID: NewID(), OwnerID: u.ID})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cl.AdminClient().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// kwok reports a session pod Ready at once, long before OpenCode would listen in it:
// exactly the case where `session create --wait` used to return before `attach` could
// connect. With a health check set, the session stays Starting (OpenCodeStarting) while
// nothing answers, turns Running once the server does, and fails with a message naming
// OpenCode when it never does.
func TestRunningWaitsForOpenCode(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens until the test says so: connections are refused, as before OpenCode starts
	var probes atomic.Int32
	check := func(ctx context.Context, s *store.Session) error {
		probes.Add(1)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/global/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	}

	c, stopFirst := e.start(e.config())
	c.SetHealthCheck(check)
	var hooked atomic.Int32
	c.SetReadyHook(func(context.Context, *store.Session) { hooked.Add(1) })
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.cl.WaitForPod(t, e.ns, PodName(s.ID), testcluster.PodRunning)
	waiting := e.waitSession(s.ID, "OpenCodeStarting", func(s *store.Session) bool { return s != nil && s.Reason == ReasonOpenCodeStarting })
	if waiting.State != apiv1.StateStarting || !strings.Contains(waiting.Message, "waiting for OpenCode") {
		t.Fatalf("pod Ready, OpenCode silent: session %s %s %q, want Starting", waiting.State, waiting.Reason, waiting.Message)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return probes.Load() >= 3, nil
	}); err != nil {
		t.Fatalf("the controller stopped probing: %d probes", probes.Load())
	}
	if cur, err := e.st.GetSession(ctx, s.ID); err != nil || cur.State != apiv1.StateStarting || hooked.Load() != 0 {
		t.Fatalf("before OpenCode answers: %+v %v, hook calls %d", cur, err, hooked.Load())
	}

	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"healthy":true}`))
	})}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	running := e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	if running.Reason != "" || running.Message != "" {
		t.Errorf("running session keeps reason %q message %q", running.Reason, running.Message)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return hooked.Load() == 1, nil
	}); err != nil {
		t.Errorf("ready hook called %d times, want once after OpenCode answered", hooked.Load())
	}

	// An OpenCode that never answers ends in StartTimeout, naming it.
	_ = srv.Close()
	stopFirst()
	cfg := e.config()
	cfg.StartTimeout = 4 * time.Second
	c2, stop := e.start(cfg)
	c2.SetHealthCheck(check)
	silent := &store.Session{OwnerID: e.owner}
	if err := c2.Create(ctx, silent, 0); err != nil {
		t.Fatal(err)
	}
	f := e.waitSession(silent.ID, "Failed", inState(apiv1.StateFailed))
	if f.Reason != ReasonStartTimeout || !strings.Contains(f.Message, "OpenCode did not answer") {
		t.Errorf("silent OpenCode: %s %q", f.Reason, f.Message)
	}
	e.waitGone("the silent session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, silent.ID); return err })
	stop()
}
