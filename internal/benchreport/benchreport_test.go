package benchreport

import (
	"strings"
	"testing"
)

const sample = `# comment
goos: linux
pkg: github.com/cakeai/cake-agents/test/bench
BenchmarkCreateToPod/agent-2         	       5	  12000000 ns/op	        12.00 p50-ms	        20.00 p99-ms	        10.00 min-ms	        20.00 max-ms	         5.000 samples
BenchmarkCreateToPod/raw-client-go-2 	       5	  10000000 ns/op	        10.00 p50-ms	        12.00 p99-ms	         9.000 min-ms	        12.00 max-ms	         5.000 samples
BenchmarkCreateToPod/raw-client-go-2 	       5	  10000000 ns/op	        11.00 p50-ms	        12.00 p99-ms	         9.000 min-ms	        12.00 max-ms	         5.000 samples
BenchmarkCreateToPod/raw-client-go-2 	       5	  10000000 ns/op	         9.00 p50-ms	        12.00 p99-ms	         9.000 min-ms	        12.00 max-ms	         5.000 samples
    bench_test.go:10: a log line
BenchmarkAt10k/rss-2 	1	1 ns/op	30 idle-MiB	160 at10k-MiB	10000 sessions
BenchmarkWarmClaim-2 	30	30000000 ns/op	        30.00 p50-ms	       180.0 p99-ms	        20.00 min-ms	       180.0 max-ms	        30.00 samples
pkg: github.com/cakeai/cake-agents/test/ha
BenchmarkFailover-2 	1	1 ns/op	16 failover-s	15 lease-s
`

func TestTargets(t *testing.T) {
	r, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Get("bench.BenchmarkCreateToPod/raw-client-go", "p50-ms"); v != 10 {
		t.Errorf("median of three lines = %v, want 10", v)
	}
	rows := map[string]Row{}
	for _, row := range r.Targets() {
		rows[row.Label] = row
	}
	p50 := rows["session create → pod exists, p50, vs raw client-go"]
	if !p50.Met || !strings.HasPrefix(p50.Result, "1.20x") {
		t.Errorf("p50 row %+v, want 1.20x met", p50)
	}
	if p99 := rows["session create → pod exists, p99, vs raw client-go"]; p99.Met || !strings.HasPrefix(p99.Result, "1.67x") {
		t.Errorf("p99 row %+v, want 1.67x not met", p99)
	}
	if idle := rows["agent RSS idle"]; !idle.Met {
		t.Errorf("idle RSS row %+v, want met", idle)
	}
	if rss := rows["agent RSS with 10,000 sessions"]; rss.Met {
		t.Errorf("10k RSS row %+v, want not met", rss)
	}
	if px := rows["session proxy throughput vs kubectl port-forward"]; px.Met || !px.NotMeasured {
		t.Errorf("proxy row %+v, want not measured", px)
	}
	if w := rows["warm pool claim → attachable, p50"]; !w.Met || !strings.HasPrefix(w.Result, "30 ms") {
		t.Errorf("warm claim p50 row %+v, want 30 ms met", w)
	}
	if w := rows["warm pool claim → attachable, p99"]; w.Met || !strings.HasPrefix(w.Result, "180 ms") {
		t.Errorf("warm claim p99 row %+v, want 180 ms not met", w)
	}
	var out strings.Builder
	if err := Write(&out, r, "test"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"warm pool claim → attachable, p99", "3 of 18 targets met", "1.07x"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
