package sessions

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
	if err := crashed.ensureSecret(ctx, secretOnly, nil, ""); err != nil {
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
	if err := crashed.ensureSecret(ctx, orphan, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := crashed.ensurePVC(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.ensurePod(ctx, orphan, nil); err != nil {
		t.Fatal(err)
	}
	// 7. Another release's objects in the same namespace are not ours to delete.
	otherCfg := cfg
	otherCfg.Release = "other"
	otherCfg.Registerer = prometheus.NewRegistry()
	other := newTestController(t, otherCfg, e.kube, e.st)
	foreign := &store.Session{ID: NewID(), OwnerID: "x"}
	if err := other.ensureSecret(ctx, foreign, nil, ""); err != nil {
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
