package sessions

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/internal/benchsample"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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

// BenchmarkCreate compares the agent's session create (row + Secret + Pod) with a raw
// client-go Pod create against the same API server. Both use one client with the agent's
// client-side rate limit (KubeQPS, KubeBurst), not the test cluster's higher one.
func BenchmarkCreate(b *testing.B) {
	cl := testcluster.Get(b)
	ns := cl.NewNamespace(b, nil)
	cfg := cl.RESTConfig()
	cfg.QPS, cfg.Burst = KubeQPS, KubeBurst
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	u := &store.User{Source: "kubernetes", Subject: "bench"}
	if err := st.UpsertUser(context.Background(), u); err != nil {
		b.Fatal(err)
	}
	c, err := New(testConfig(ns), kube, st, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Each side checks its work: the namespace holds one more pod per create.
	pods := 0
	checkPods := func(b *testing.B) {
		list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(list.Items) != pods {
			b.Fatalf("%d pods in %s, want %d", len(list.Items), ns, pods)
		}
	}
	b.Run("agent", func(b *testing.B) {
		var lat benchsample.Samples
		for range benchsample.N(b, 20) {
			s := &store.Session{OwnerID: u.ID}
			lat.Time(func() { err = c.Create(ctx, s, 0) })
			if err != nil || s.State == apiv1.StateFailed {
				b.Fatalf("create: %v %s %s", err, s.Reason, s.Message)
			}
			pods++
		}
		checkPods(b)
		lat.Report(b, "ms")
	})
	b.Run("raw-pod", func(b *testing.B) {
		var lat benchsample.Samples
		for range benchsample.N(b, 20) {
			pod, err := c.buildPod(&store.Session{ID: NewID(), OwnerID: u.ID}, nil)
			if err != nil {
				b.Fatal(err)
			}
			lat.Time(func() { _, err = kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}) })
			if err != nil {
				b.Fatal(err)
			}
			pods++
		}
		checkPods(b)
		lat.Report(b, "ms")
	})
}

// TestStartWaitsForTerminatingVolume: a persistent session started while its old claim
// is still being deleted (held here by a finalizer) gets no pod naming it — such a pod
// would never be scheduled — and no failed attempt: it waits, saying why, and starts on
// a new claim once the old one is gone.
func TestStartWaitsForTerminatingVolume(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	id := NewID()
	// One volume for each claim: the first is Released with its claim.
	e.preBoundPVNamed(id, e.ns+"-"+id+"-1")
	e.preBoundPVNamed(id, e.ns+"-"+id+"-2")
	s := &store.Session{ID: id, OwnerID: e.owner, Persistent: true}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(id, "Running", inState(apiv1.StateRunning))
	if _, err := c.Stop(ctx, id, "", ""); err != nil {
		t.Fatal(err)
	}
	e.waitSession(id, "Stopped", inState(apiv1.StateStopped))
	pvcs := e.kube.CoreV1().PersistentVolumeClaims(e.ns)
	old, err := pvcs.Get(ctx, PVCName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const hold = "test.cake.ai/hold"
	old.Finalizers = append(old.Finalizers, hold)
	if old, err = pvcs.Update(ctx, old, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pvcs.Delete(ctx, PVCName(id), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.Start(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	waiting := e.waitSession(id, "waiting for the volume", func(s *store.Session) bool {
		return s != nil && strings.Contains(s.Message, "still being deleted")
	})
	if !waiting.State.Active() || waiting.State == apiv1.StateRunning {
		t.Fatalf("state while the old volume goes: %s", waiting.State)
	}
	time.Sleep(2 * time.Second) // past a few retries: still no pod, still not Failed
	if _, err := e.pod(ctx, id); !apierrors.IsNotFound(err) {
		t.Fatalf("a pod was created on a terminating claim: %v", err)
	}
	if cur, _ := e.st.GetSession(ctx, id); cur.State == apiv1.StateFailed {
		t.Fatalf("the wait counted as failures: %s", cur.Message)
	}

	// The old claim goes; the session starts on a new one.
	cur, err := pvcs.Get(ctx, PVCName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == hold })
	if _, err := pvcs.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitSession(id, "Running on a new volume", inState(apiv1.StateRunning))
	fresh, err := pvcs.Get(ctx, PVCName(id), metav1.GetOptions{})
	if err != nil || fresh.UID == old.UID || fresh.DeletionTimestamp != nil {
		t.Fatalf("the new claim: %v (old uid %s)", err, old.UID)
	}
}
