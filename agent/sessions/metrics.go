package sessions

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

type metrics struct {
	reconcile *prometheus.HistogramVec
	podStart  prometheus.Histogram
	creates   *prometheus.CounterVec
	poolWarm  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, st store.Store, log hclog.Logger) (*metrics, error) {
	m := &metrics{
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cake_agents",
			Name:      "reconcile_duration_seconds",
			Help:      "Time to reconcile one session (scope=session) or to sweep every session and object (scope=full).",
			Buckets:   prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"scope"}),
		podStart: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cake_agents",
			Name:      "session_pod_start_seconds",
			Help:      "Time from a session's (re)start request to its pod turning Ready.",
			Buckets:   prometheus.ExponentialBuckets(0.25, 2, 12),
		}),
		creates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cake_agents",
			Name:      "session_pod_creates_total",
			Help:      "Session pod creations by result (created, exists, error; claimed: a warm pool pod was taken; pool-empty: none was ready).",
		}, []string{"result"}),
		poolWarm: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "cake_agents",
			Name:      "warm_pool_pods",
			Help:      "Warm pool pods of the current template, as the leader last counted them.",
		}),
	}
	for _, c := range []prometheus.Collector{m.reconcile, m.podStart, m.creates, m.poolWarm, &stateCollector{st: st, log: log}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register session metrics (pass a fresh Config.Registerer when running more than one controller): %w", err)
		}
	}
	return m, nil
}

var sessionsDesc = prometheus.NewDesc("cake_agents_sessions", "Sessions by state, as stored in the database.", []string{"state"}, nil)

// stateCollector asks the store at scrape time, so every replica reports the same
// truth whether or not it is the leader.
type stateCollector struct {
	st  store.Store
	log hclog.Logger
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sessionsDesc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.st.CountSessions(ctx)
	if err != nil {
		c.log.Warn("count sessions for metrics failed", "error", err)
		ch <- prometheus.NewInvalidMetric(sessionsDesc, err)
		return
	}
	for _, s := range apiv1.AllStates {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
