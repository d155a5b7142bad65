package ha

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/internal/benchsample"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// BenchmarkFailover SIGKILLs the reconciling leader of two replicas installed with the
// chart's default election timing and measures, per kill: how long until the other
// replica holds the Lease (failover-s), and until a session created through the
// survivor right after the kill is Running (kill-to-running-s), which needs a
// reconciling leader. Beside them it reports the Lease duration the replicas wrote into
// the Lease (lease-s), the peer `make bench` divides by: a takeover cannot come sooner
// than the lease of the dead leader runs out. Each figure is the median of at least
// benchsample.MinSamples kills, with min- and max- companions; the session is checked to
// be Running with its pod.
func BenchmarkFailover(b *testing.B) {
	in := setup(b, "cake-ha-bench", election{})
	ctx := context.Background()
	var failover, running []float64
	var lease time.Duration
	for range benchsample.N(b, 5) {
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

		start := time.Now()
		dead.Stop(true)
		s, err := in.admin[1-leader].CreateSession(ctx, apiv1.CreateSessionRequest{Title: "after the kill"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := in.leader(ctx, dead.Pod, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		failover = append(failover, time.Since(start).Seconds())
		var pod string
		for {
			got, err := in.admin[1-leader].GetSession(ctx, s.ID)
			if err != nil {
				b.Fatal(err)
			}
			if got.State == apiv1.StateRunning {
				pod = got.PodName
				break
			}
			if time.Since(start) > 3*time.Minute {
				b.Fatalf("session %s still %s %s after the failover", s.ID, got.State, got.Reason)
			}
			time.Sleep(20 * time.Millisecond)
		}
		running = append(running, time.Since(start).Seconds())
		if _, err := in.env.Kube.CoreV1().Pods(in.ns).Get(ctx, pod, metav1.GetOptions{}); err != nil {
			b.Fatalf("session %s is Running without its pod: %v", s.ID, err)
		}
		if err := dead.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := in.admin[1-leader].DeleteSession(ctx, s.ID); err != nil {
			b.Fatal(fmt.Errorf("delete %s: %w", s.ID, err))
		}
	}
	for unit, v := range map[string][]float64{"failover-s": failover, "kill-to-running-s": running} {
		slices.Sort(v)
		b.ReportMetric(v[int(0.5*float64(len(v)-1)+0.5)], unit)
		b.ReportMetric(v[0], "min-"+unit)
		b.ReportMetric(v[len(v)-1], "max-"+unit)
	}
	b.ReportMetric(lease.Seconds(), "lease-s")
	b.ReportMetric(float64(len(failover)), "samples")
}
