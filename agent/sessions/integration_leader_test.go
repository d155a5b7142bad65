package sessions

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
