package sessions

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/workqueue"

	"github.com/cakeai/cake-agents/agent/store"
)

// TestReconcileDoesNotRecreateAnExpectedPod: the reconcile that follows a create, run
// before the pod cache has the new pod (here the cache never runs), sends no second pod
// create; once the expectation window is over with the pod really gone, the reconciler
// creates it again, so a lost pod is still repaired.
func TestReconcileDoesNotRecreateAnExpectedPod(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("ns"), kube, st)
	now := time.Now()
	c.now = func() time.Time { return now }
	// Leading, as the reconciler that keeps expectations is: only a leader keeps them.
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "test"})
	defer q.ShutDown()
	c.mu.Lock()
	c.queue = q
	c.mu.Unlock()
	ctx := context.Background()
	podCreates := func() int {
		n := 0
		for _, a := range kube.Actions() {
			if ca, ok := a.(k8stesting.CreateAction); ok && ca.GetResource().Resource == "pods" {
				n++
			}
		}
		return n
	}
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if n := podCreates(); n != 1 {
		t.Fatalf("%d pod creates after Create, want 1", n)
	}
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if n := podCreates(); n != 1 {
		t.Fatalf("%d pod creates after a reconcile that ran before the cache saw the pod, want still 1", n)
	}

	// The pod disappears without the cache ever showing it, and the window passes.
	if err := kube.CoreV1().Pods("ns").Delete(ctx, PodName(s.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(podExpectWindow + time.Second)
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if n := podCreates(); n != 2 {
		t.Fatalf("%d pod creates after the window, want 2 (the lost pod recreated)", n)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
		t.Fatalf("the lost pod was not recreated: %v", err)
	}
}
