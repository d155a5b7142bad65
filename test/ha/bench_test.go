package ha

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// BenchmarkFailover SIGKILLs the reconciling leader of two replicas installed with the
// chart's default election timing and measures, per kill: how long until the other
// replica holds the Lease (failover-s), and until a session created through the
// survivor right after the kill is Running (kill-to-running-s), which needs a
// reconciling leader. Beside them it reports the Lease duration the replicas wrote into
// the Lease (lease-s), the peer `make bench` divides by: a takeover cannot come sooner
// than the lease of the dead leader runs out.
func BenchmarkFailover(b *testing.B) {
	in := setup(b, "cake-ha-bench", election{})
	ctx := context.Background()
	var failover, running, lease time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		leader, err := in.leader(ctx, "", 2*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		l, err := in.env.Kube.CoordinationV1().Leases(in.ns).Get(ctx, in.lease, metav1.GetOptions{})
		if err != nil || l.Spec.LeaseDurationSeconds == nil {
			b.Fatalf("read the Lease: %v", err)
		}
		lease = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		dead := in.env.Agents[leader]
		b.StartTimer()

		start := time.Now()
		dead.Stop(true)
		s, err := in.admin[1-leader].CreateSession(ctx, apiv1.CreateSessionRequest{Title: "after the kill"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := in.leader(ctx, dead.Pod, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		failover += time.Since(start)
		b.StopTimer()
		for {
			got, err := in.admin[1-leader].GetSession(ctx, s.ID)
			if err != nil {
				b.Fatal(err)
			}
			if got.State == apiv1.StateRunning {
				break
			}
			if time.Since(start) > 3*time.Minute {
				b.Fatalf("session %s still %s %s after the failover", s.ID, got.State, got.Reason)
			}
			time.Sleep(20 * time.Millisecond)
		}
		running += time.Since(start)
		n++
		if err := dead.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := in.admin[1-leader].DeleteSession(ctx, s.ID); err != nil {
			b.Fatal(fmt.Errorf("delete %s: %w", s.ID, err))
		}
		b.StartTimer()
	}
	b.ReportMetric(failover.Seconds()/float64(n), "failover-s")
	b.ReportMetric(running.Seconds()/float64(n), "kill-to-running-s")
	b.ReportMetric(lease.Seconds(), "lease-s")
}
