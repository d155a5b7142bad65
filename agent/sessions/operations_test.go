package sessions

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestCreateQuotaAndDefaults(t *testing.T) {
	st, owner := newStore(t)
	cfg := testConfig("ns")
	cfg.DefaultIdleTimeout, cfg.DefaultTTL = time.Hour, 24*time.Hour
	kube := fake.NewClientset()
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if s.IdleTimeout != time.Hour || s.TTL != 24*time.Hour || s.Model != "m" || s.PodName != PodName(s.ID) || s.PodNamespace != "ns" {
		t.Errorf("defaults not applied: %+v", s)
	}
	// The pod runs the model stored on the session, the one the API shows.
	pod, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(pod.Spec.InitContainers[0].Args, " "); !strings.Contains(args, "--model=m") {
		t.Errorf("init args %q lack the default model", args)
	}
	sec, err := kube.CoreV1().Secrets("ns").Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Without LiteLLM keys configured, the Secret holds no model key (see modelkeys_test).
	if _, ok := sec.Data["LITELLM_API_KEY"]; len(sec.Data["password"]) < 32 || ok {
		t.Errorf("secret data keys wrong")
	}
	pw, err := c.Password(ctx, s)
	if err != nil || pw != string(sec.Data["password"]) {
		t.Errorf("Password = %q, %v", pw, err)
	}
	err = c.Create(ctx, &store.Session{OwnerID: owner}, 1)
	if !errors.Is(err, store.ErrQuotaExceeded) {
		t.Errorf("second Create: %v, want ErrQuotaExceeded", err)
	}
	if l, _ := kube.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{}); len(l.Items) != 1 {
		t.Errorf("%d pods, want 1 (the refused session must create nothing)", len(l.Items))
	}
}

// TestOperationsWaitForTheSessionLock: an operation waits while the session's lock in
// the database is held (by another replica, here the test), then sees the state the
// holder left; one that waits longer than LockWait gives up with ErrBusy, changing
// nothing.
func TestOperationsWaitForTheSessionLock(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	cfg := testConfig("ns")
	cfg.LockWait = 300 * time.Millisecond
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	unlock, err := st.LockSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, s.ID, "", ""); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "is busy") {
		t.Fatalf("Stop while another holder has the lock: %v, want ErrBusy", err)
	}
	if got, _ := st.GetSession(ctx, s.ID); got.State != apiv1.StatePending {
		t.Fatalf("a busy Stop changed the session: %s", got.State)
	}

	// The holder stops the session itself (as another replica would) while a Delete waits.
	c2 := newTestController(t, testConfig("ns"), kube, st)
	done := make(chan error, 1)
	go func() { done <- c2.Delete(ctx, s.ID) }()
	got, _ := st.GetSession(ctx, s.ID)
	got.State = apiv1.StateStopped
	if err := st.UpdateSession(ctx, got); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("Delete ran while the lock was held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("Delete after the lock was released: %v", err)
	}
	if _, err := st.GetSession(ctx, s.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the session after Delete: %v", err)
	}
}

func TestStartStopStateRules(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("ns"), kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	// The fake API deletes at once, so Stop finishes synchronously.
	got, err := c.Stop(ctx, s.ID, "", "")
	if err != nil || got.State != apiv1.StateStopped || got.Reason != ReasonStoppedByUser || got.StoppedAt == nil {
		t.Fatalf("Stop = %+v, %v", got, err)
	}
	if _, err := kube.CoreV1().Secrets("ns").Get(ctx, SecretName(s.ID), metav1.GetOptions{}); err != nil {
		t.Errorf("stop must keep the Secret: %v", err)
	}
	got, err = c.Start(ctx, s.ID, 0)
	if err != nil || got.State != apiv1.StatePending || got.StoppedAt != nil {
		t.Fatalf("Start = %+v, %v", got, err)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
		t.Errorf("start must create the pod: %v", err)
	}
	if err := c.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, s.ID, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Start after delete: %v, want ErrNotFound", err)
	}
	if _, err := c.Stop(ctx, "nosuch", "", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stop of a missing session: %v", err)
	}
}

func TestTouchIsRateLimited(t *testing.T) {
	st, owner := newStore(t)
	c := newTestController(t, testConfig("ns"), fake.NewClientset(), st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(time.Minute)
	c.now = func() time.Time { return t0 }
	c.Touch(ctx, s.ID, "proxy")
	c.now = func() time.Time { return t0.Add(time.Second) }
	c.Touch(ctx, s.ID, "proxy") // within touchEvery: not written
	got, _ := st.GetSession(ctx, s.ID)
	if d := got.LastActivityAt.Sub(t0); d < -time.Millisecond || d > time.Millisecond || got.LastActivitySource != "proxy" {
		t.Errorf("last activity %s %s, want %s proxy", got.LastActivityAt, got.LastActivitySource, t0.UTC())
	}
	c.Touch(ctx, s.ID, "attach") // another source is written at once
	got, _ = st.GetSession(ctx, s.ID)
	if got.LastActivitySource != "attach" {
		t.Errorf("source %q, want attach", got.LastActivitySource)
	}
}

// TestDeleteSkipsThePVCOnlyOfSessionsWithoutOne: deleting a session that is not
// persistent sends no PVC delete (it never had one), a persistent session's PVC is
// deleted.
func TestDeleteSkipsThePVCOnlyOfSessionsWithoutOne(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("ns"), kube, st)
	ctx := context.Background()
	for _, persistent := range []bool{false, true} {
		s := &store.Session{OwnerID: owner, Persistent: persistent}
		if err := c.Create(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
		kube.ClearActions()
		if err := c.Delete(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		pvcDeletes := 0
		for _, a := range kube.Actions() {
			if a.GetVerb() == "delete" && a.GetResource().Resource == "persistentvolumeclaims" {
				pvcDeletes++
			}
		}
		if want := map[bool]int{false: 0, true: 1}[persistent]; pvcDeletes != want {
			t.Errorf("persistent=%v: %d PVC deletes, want %d", persistent, pvcDeletes, want)
		}
		if _, err := kube.CoreV1().PersistentVolumeClaims("ns").Get(ctx, PVCName(s.ID), metav1.GetOptions{}); err == nil {
			t.Errorf("persistent=%v: the PVC is still there", persistent)
		}
	}
}
