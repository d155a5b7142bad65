package sessions

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestCreateRejectedLeavesNothing: admission refusing the pod leaves the session Failed
// with the API server's message and no Secret or PVC behind.
func TestCreateRejectedLeavesNothing(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "cake-session-x",
			errors.New(`violates PodSecurity "restricted:latest": runAsNonRoot != true`))
	})
	st, owner := newStore(t)
	c := newTestController(t, testConfig("ns"), kube, st)
	s := &store.Session{OwnerID: owner, Persistent: true}
	if err := c.Create(context.Background(), s, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := st.GetSession(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != apiv1.StateFailed || got.Reason != ReasonPodRejected || !strings.Contains(got.Message, "violates PodSecurity") {
		t.Errorf("session %s/%s/%q, want Failed/PodRejected with the API message", got.State, got.Reason, got.Message)
	}
	if s.State != apiv1.StateFailed {
		t.Errorf("caller's session state %s, want Failed", s.State)
	}
	ctx := context.Background()
	if l, _ := kube.CoreV1().Secrets("ns").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Errorf("orphaned secrets: %d", len(l.Items))
	}
	if l, _ := kube.CoreV1().PersistentVolumeClaims("ns").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Errorf("orphaned PVCs: %d", len(l.Items))
	}
}

// TestCreateTransientThenFailed: transient errors keep the session Pending with the
// error in its message until MaxCreateAttempts, then it is Failed.
func TestCreateTransientThenFailed(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		// What a failing admission webhook answers.
		return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
	})
	st, owner := newStore(t)
	cfg := testConfig("ns")
	cfg.MaxCreateAttempts = 3
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if s.State != apiv1.StatePending || !strings.Contains(s.Message, "etcd is down") {
		t.Fatalf("after a transient failure: %s %q", s.State, s.Message)
	}
	if err := c.reconcile(ctx, s.ID); err == nil {
		t.Fatal("reconcile should report the retryable error")
	}
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatalf("third attempt should give up cleanly: %v", err)
	}
	got, _ := st.GetSession(ctx, s.ID)
	if got.State != apiv1.StateFailed || got.Reason != ReasonCreateFailed || !strings.Contains(got.Message, "etcd is down") {
		t.Errorf("session %s/%s/%q, want Failed/CreateFailed", got.State, got.Reason, got.Message)
	}
}

// TestCreateDeniedToAgentIsRetried: the API server's authorizer refusing the agent (as
// one that has just started does until its RBAC caches are filled) is retried; only
// MaxCreateAttempts of it in a row fail the session, while an admission plugin's
// refusal fails it at once (TestCreateRejectedLeavesNothing).
func TestCreateDeniedToAgentIsRetried(t *testing.T) {
	kube := fake.NewClientset()
	var denials atomic.Int32
	denials.Store(1)
	kube.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if denials.Add(-1) < 0 {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "",
			errors.New(`User "system:serviceaccount:ns:cake-agents" cannot create resource "secrets" in API group "" in the namespace "ns"`))
	})
	st, owner := newStore(t)
	cfg := testConfig("ns")
	cfg.MaxCreateAttempts = 2
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if s.State != apiv1.StatePending || !strings.Contains(s.Message, "cannot create resource") {
		t.Fatalf("after one denial: %s/%s/%q, want Pending with the API server's message", s.State, s.Reason, s.Message)
	}
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatalf("reconcile once the denial is over: %v", err)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
		t.Fatalf("no pod after the denial ended: %v", err)
	}

	// Denied for good: Failed after MaxCreateAttempts.
	denials.Store(100)
	s2 := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s2, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_ = c.reconcile(ctx, s2.ID)
	got, _ := st.GetSession(ctx, s2.ID)
	if got.State != apiv1.StateFailed || got.Reason != ReasonCreateFailed {
		t.Fatalf("after %d denials: %s/%s/%q, want Failed/CreateFailed", cfg.MaxCreateAttempts, got.State, got.Reason, got.Message)
	}
}

// TestCreateDuringAPIOutage: while the API server cannot be reached (no answer, or
// 503), a session stays Pending however often the create is retried, with a message
// that says so, and its pod is made once the API server answers again.
func TestCreateDuringAPIOutage(t *testing.T) {
	for name, outage := range map[string]error{
		"refused":     &url.Error{Op: "Post", URL: "https://127.0.0.1:6443/api/v1/namespaces/ns/pods", Err: syscall.ECONNREFUSED},
		"unavailable": apierrors.NewServiceUnavailable("the server is shutting down"),
	} {
		t.Run(name, func(t *testing.T) {
			kube := fake.NewClientset()
			var down atomic.Bool
			down.Store(true)
			kube.PrependReactor("create", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
				if down.Load() {
					return true, nil, outage
				}
				return false, nil, nil
			})
			st, owner := newStore(t)
			cfg := testConfig("ns")
			cfg.MaxCreateAttempts = 2
			c := newTestController(t, cfg, kube, st)
			ctx := context.Background()
			s := &store.Session{OwnerID: owner}
			if err := c.Create(ctx, s, 0); err != nil {
				t.Fatalf("Create: %v", err)
			}
			for i := 0; i < 4; i++ {
				if err := c.reconcile(ctx, s.ID); err == nil {
					t.Fatal("reconcile during the outage should report the error for a retry")
				}
			}
			got, _ := st.GetSession(ctx, s.ID)
			if got.State != apiv1.StatePending || !strings.Contains(got.Message, "the Kubernetes API cannot be reached") {
				t.Fatalf("after 5 attempts during an outage: %s/%s/%q, want Pending saying the API cannot be reached", got.State, got.Reason, got.Message)
			}
			down.Store(false)
			if err := c.reconcile(ctx, s.ID); err != nil {
				t.Fatalf("reconcile after the outage: %v", err)
			}
			if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
				t.Fatalf("no pod after the outage: %v", err)
			}
		})
	}
}
