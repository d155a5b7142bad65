// Package benchsample gives the project's benchmarks one way to take and report samples:
// every compared figure is the median of several samples, reported with its minimum,
// maximum and 99th percentile as extra metrics, so one run (-count 1) keeps every sample's
// trace and bench/results.txt stays in Go's benchmark format for benchstat.
//
// The floor of samples per figure and the size of the large-table benchmarks are knobs
// read from the environment, so CI can run every benchmark once, small, without timing it:
//
//	CAKE_BENCH_SAMPLES   samples per figure at least (default: what each benchmark asks, ≥5)
//	CAKE_BENCH_SESSIONS  rows of the "at 10k" benchmarks (default 10000)
//	CAKE_BENCH_BURST     sessions per burst of the sustained-create benchmark (default 100)
package benchsample

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Environment variables of the knobs (see the package comment).
const (
	EnvSamples  = "CAKE_BENCH_SAMPLES"
	EnvSessions = "CAKE_BENCH_SESSIONS"
	EnvBurst    = "CAKE_BENCH_BURST"
)

// MinSamples is the least a compared figure is the median of, unless EnvSamples lowers it.
const MinSamples = 5

// N returns how many samples a benchmark takes: b.N, but at least want (MinSamples when
// want is smaller), or at least $CAKE_BENCH_SAMPLES when that is set (CI sets 1).
// Benchmarks loop N times rather than b.N times and report the median as ns/op
// (Samples.Report), so a short -benchtime such as 1x still yields a median of several.
func N(b testing.TB, want int) int {
	n := max(want, MinSamples)
	if v, err := strconv.Atoi(os.Getenv(EnvSamples)); err == nil && v > 0 {
		n = v
	}
	if bb, ok := b.(*testing.B); ok {
		n = max(n, bb.N)
	}
	return n
}

// Size returns the integer in the environment variable env, or def when it is unset or not
// a positive number.
func Size(env string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil && v > 0 {
		return v
	}
	return def
}

// Sessions is the row count of the "at 10k" benchmarks: 10,000 unless $CAKE_BENCH_SESSIONS.
func Sessions() int { return Size(EnvSessions, 10000) }

// Samples collects durations of one figure.
type Samples struct {
	d []time.Duration
}

// Add records one sample.
func (s *Samples) Add(d time.Duration) { s.d = append(s.d, d) }

// Time runs f and records how long it took.
func (s *Samples) Time(f func()) {
	t0 := time.Now()
	f()
	s.Add(time.Since(t0))
}

// Len is the number of samples.
func (s *Samples) Len() int { return len(s.d) }

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of the samples by the nearest-rank method
// (0 without samples); Quantile(0.5) is the median.
func (s *Samples) Quantile(q float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	return d[int(q*float64(len(d)-1)+0.5)]
}

// Report reports the samples on b: ns/op becomes the median (what benchstat compares) and
// p50, p99, min and max are extra metrics in unit ("ms" or "us", e.g. p50-ms), plus the
// sample count. It fails b when there are no samples.
func (s *Samples) Report(b *testing.B, unit string) {
	b.Helper()
	if len(s.d) == 0 {
		b.Fatal("no samples")
	}
	var div float64
	switch unit {
	case "ms":
		div = float64(time.Millisecond)
	case "us":
		div = float64(time.Microsecond)
	case "s":
		div = float64(time.Second)
	default:
		panic(fmt.Sprintf("benchsample: unit %q", unit))
	}
	b.ReportMetric(float64(s.Quantile(0.5).Nanoseconds()), "ns/op")
	for _, m := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"min", 0}, {"max", 1}} {
		b.ReportMetric(float64(s.Quantile(m.q))/div, m.name+"-"+unit)
	}
	b.ReportMetric(float64(len(s.d)), "samples")
}

// Rates collects per-sample rates (events per second) of one figure.
type Rates struct {
	r []float64
}

// Add records one sample of n events in d.
func (r *Rates) Add(n int, d time.Duration) {
	if d <= 0 {
		d = time.Nanosecond
	}
	r.r = append(r.r, float64(n)/d.Seconds())
}

// Report reports the median rate as metric unit (e.g. "accepted/s") and its minimum and
// maximum as min-unit and max-unit. It fails b when there are no samples.
func (r *Rates) Report(b *testing.B, unit string) {
	b.Helper()
	if len(r.r) == 0 {
		b.Fatal("no samples")
	}
	v := slices.Clone(r.r)
	slices.Sort(v)
	b.ReportMetric(v[int(0.5*float64(len(v)-1)+0.5)], unit)
	b.ReportMetric(v[0], "min-"+unit)
	b.ReportMetric(v[len(v)-1], "max-"+unit)
}
