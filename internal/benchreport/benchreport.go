// Package benchreport reads the results of `make bench` (Go's benchmark format, as
// benchstat reads it) and prints the project's performance targets, each with its ratio
// against the peer measured in the same run or its figure, the goal, and whether it is met.
// Ratios are of medians; absolute times are noise on shared machines, so the table shows
// them only where the target itself is absolute (memory, rates, a restart, a p99).
package benchreport

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Results are the metrics of one results file: benchmark → unit → values, one value per
// result line (more than one with -count > 1). A benchmark is named by the last element
// of its package and its name without the GOMAXPROCS suffix, e.g.
// "bench.BenchmarkProxy/latency/agent-proxy".
type Results map[string]map[string][]float64

// Parse reads a results file.
func Parse(r io.Reader) (Results, error) {
	res := Results{}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p[strings.LastIndex(p, "/")+1:]
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue // a benchmark's log line, not a result
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		name = pkg + "." + name
		if res[name] == nil {
			res[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: value %q of %s: %w", name, f[i], f[i+1], err)
			}
			res[name][f[i+1]] = append(res[name][f[i+1]], v)
		}
	}
	return res, sc.Err()
}

// Get returns the median of a benchmark's metric over its result lines.
func (r Results) Get(bench, unit string) (float64, bool) {
	v := r[bench][unit]
	if len(v) == 0 {
		return 0, false
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2], true
}

// Row is one line of the table.
type Row struct {
	Label string
	// Result is the ratio ("1.05x") or figure ("38.2 MiB"), with the samples' spread.
	Result string
	// Goal is the target ("≤ 1.20x"); empty for a ratio shown without a target.
	Goal string
	// Met: the target is met. NotMeasured: a figure is missing, so it is not met.
	Met, NotMeasured bool
}

// cmp is a goal: at most (le) or at least the limit.
type cmp struct {
	le    bool
	limit float64
}

func (c cmp) ok(v float64) bool {
	if c.le {
		return v <= c.limit
	}
	return v >= c.limit
}

func (c cmp) String(unit string) string {
	op := "≥"
	if c.le {
		op = "≤"
	}
	if unit == "x" {
		return fmt.Sprintf("%s %.2fx", op, c.limit)
	}
	return fmt.Sprintf("%s %g %s", op, c.limit, unit)
}

// spread describes how far a benchmark's samples range around its median: max/min of the
// metric's min- and max- companions (or min-unit and max-unit), without absolute values.
func (r Results) spread(bench, unit string) string {
	lo, ok1 := r.Get(bench, "min-"+unit)
	hi, ok2 := r.Get(bench, "max-"+unit)
	if !ok1 || !ok2 {
		base := strings.TrimPrefix(strings.TrimPrefix(unit, "p50-"), "p99-")
		lo, ok1 = r.Get(bench, "min-"+base)
		hi, ok2 = r.Get(bench, "max-"+base)
	}
	n, _ := r.Get(bench, "samples")
	s := ""
	if n > 0 {
		s = fmt.Sprintf("n=%g", n)
	}
	if ok1 && ok2 && lo > 0 {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf("max/min %.2f", hi/lo)
	}
	return s
}

// ratio is a row comparing metric unit of bench a with that of its peer b.
func (r Results) ratio(label, a, b, unit string, goal *cmp) Row {
	return r.ratioUnits(label, a, unit, b, unit, goal)
}

// ratioUnits is a row comparing metric ua of bench a with metric ub of bench b.
func (r Results) ratioUnits(label, a, ua, b, ub string, goal *cmp) Row {
	row := Row{Label: label}
	if goal != nil {
		row.Goal = goal.String("x")
	}
	x, ok1 := r.Get(a, ua)
	y, ok2 := r.Get(b, ub)
	if !ok1 || !ok2 || y == 0 {
		row.Result, row.NotMeasured = "not measured", true
		return row
	}
	v := x / y
	row.Result = fmt.Sprintf("%.2fx", v)
	if sa, sb := r.spread(a, ua), r.spread(b, ub); sa != "" || sb != "" {
		row.Result += fmt.Sprintf("  (%s; peer %s)", sa, sb)
	}
	row.Met = goal != nil && goal.ok(v)
	return row
}

// figure is a row of one metric against an absolute goal.
func (r Results) figure(label, bench, unit, shown string, goal cmp) Row {
	row := Row{Label: label, Goal: goal.String(shown)}
	v, ok := r.Get(bench, unit)
	if !ok {
		row.Result, row.NotMeasured = "not measured", true
		return row
	}
	row.Result = fmt.Sprintf("%.4g %s", v, shown)
	if s := r.spread(bench, unit); s != "" {
		row.Result += "  (" + s + ")"
	}
	row.Met = goal.ok(v)
	return row
}

// Targets are the rows of the targets the project holds itself to (see README).
func (r Results) Targets() []Row {
	le := func(v float64) *cmp { return &cmp{le: true, limit: v} }
	ge := func(v float64) *cmp { return &cmp{limit: v} }
	at := ""
	if n, ok := r.Get("bench.BenchmarkAt10k/rss", "sessions"); ok && n != 10000 {
		at = fmt.Sprintf(" (measured at %g)", n)
	}
	rows := []Row{
		r.ratio("session create → pod exists, p50, vs raw client-go", "bench.BenchmarkCreateToPod/agent", "bench.BenchmarkCreateToPod/raw-client-go", "p50-ms", le(1.2)),
		r.ratio("session create → pod exists, p99, vs raw client-go", "bench.BenchmarkCreateToPod/agent", "bench.BenchmarkCreateToPod/raw-client-go", "p99-ms", le(1.2)),
	}
	for _, st := range []string{"sqlite", "postgres"} {
		b := "bench.BenchmarkSustainedCreates/" + st
		name := map[string]string{"sqlite": "SQLite", "postgres": "Postgres"}[st]
		rows = append(rows,
			r.figure("sustained creates accepted (201), "+name, b, "accepted/s", "sessions/s", *ge(200)),
			r.figure("sustained creates reaching Running, "+name, b, "running/s", "sessions/s", *ge(50)),
			r.figure("sustained creates: lost + duplicate pods, "+name, b, "bad-pods", "pods", cmp{le: true}),
		)
	}
	rows = append(rows,
		r.ratio("session proxy throughput vs kubectl port-forward", "bench.BenchmarkProxy/throughput/agent-proxy", "bench.BenchmarkProxy/throughput/port-forward", "MB/s", ge(0.9)),
		r.ratio("session proxy latency (p50) vs kubectl port-forward", "bench.BenchmarkProxy/latency/agent-proxy", "bench.BenchmarkProxy/latency/port-forward", "p50-ms", le(1.2)),
		r.figure("agent RSS idle", "bench.BenchmarkAt10k/rss", "idle-MiB", "MiB", *le(40)),
		r.figure("agent RSS with 10,000 sessions"+at, "bench.BenchmarkAt10k/rss", "at10k-MiB", "MiB", *le(150)),
		r.figure("restart with 10,000 sessions: ready and reconciled"+at, "bench.BenchmarkAt10k/restart", "p50-s", "s", *le(5)),
		r.figure("list at 10,000 sessions: p99"+at, "bench.BenchmarkAt10k/list-page", "p99-ms", "ms", *le(10)),
		r.figure("list at 10,000 sessions: throughput on loopback"+at, "bench.BenchmarkAt10k/list-throughput", "req/s", "req/s", *ge(5000)),
		r.ratio("kubectl agents session list vs kubectl get pods", "bench.BenchmarkList/plugin", "bench.BenchmarkList/kubectl", "p50-ms", le(1.5)),
		// From the API's create call to the first request answered by the session's
		// OpenCode through the agent's proxy, on a pod claimed from the warm pool.
		r.figure("warm pool claim → attachable, p50", "bench.BenchmarkWarmClaim", "p50-ms", "ms", *le(50)),
		r.figure("warm pool claim → attachable, p99", "bench.BenchmarkWarmClaim", "p99-ms", "ms", *le(150)),
	)
	return rows
}

// Ratios are rows without a target: context for the targets.
func (r Results) Ratios() []Row {
	return []Row{
		// What the idle RSS is made of: the agent's own memory, and its binary's pages.
		r.figure("agent RSS idle: anonymous (heap, stacks)", "bench.BenchmarkAt10k/rss", "idle-anon-MiB", "MiB", cmp{}),
		r.figure("agent RSS idle: file-backed (the binary's pages)", "bench.BenchmarkAt10k/rss", "idle-file-MiB", "MiB", cmp{}),
		r.ratio("plugin start-up vs kubectl version --client", "bench.BenchmarkStartup/plugin", "bench.BenchmarkStartup/kubectl", "p50-ms", nil),
		r.ratio("sustained creates accepted, SQLite, vs raw Secret+Pod creates", "bench.BenchmarkSustainedCreates/sqlite", "bench.BenchmarkSustainedCreates/raw-client-go", "accepted/s", nil),
		r.ratio("sustained creates Running, SQLite, vs raw Secret+Pod creates", "bench.BenchmarkSustainedCreates/sqlite", "bench.BenchmarkSustainedCreates/raw-client-go", "running/s", nil),
		r.ratio("session create → pod exists, p50, vs raw Secret then Pod", "bench.BenchmarkCreateToPod/agent", "bench.BenchmarkCreateToPod/raw-secret-pod", "p50-ms", nil),
		r.ratio("controller create (row+Secret+Pod) vs raw pod create", "sessions.BenchmarkCreate/agent", "sessions.BenchmarkCreate/raw-pod", "p50-ms", nil),
		r.ratio("store create: SQLite vs Postgres (durable)", "sqlite.BenchmarkStore/CreateSession", "postgres.BenchmarkStore/CreateSession", "p50-us", nil),
		r.ratio("store get at 10k: SQLite vs Postgres", "sqlite.BenchmarkStore/GetSession", "postgres.BenchmarkStore/GetSession", "p50-us", nil),
		r.ratio("store list page at 10k: SQLite vs Postgres", "sqlite.BenchmarkStore/ListSessionsPage", "postgres.BenchmarkStore/ListSessionsPage", "p50-us", nil),
		r.ratioUnits("failover: leader killed → other leads, vs lease", "ha.BenchmarkFailover", "failover-s", "ha.BenchmarkFailover", "lease-s", nil),
		r.ratioUnits("failover: kill → new session Running, vs lease", "ha.BenchmarkFailover", "kill-to-running-s", "ha.BenchmarkFailover", "lease-s", nil),
	}
}

// Write prints the table: the targets, marked met or NOT met, then the other ratios.
func Write(w io.Writer, r Results, machine string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Cake Agents benchmarks — targets, against peers measured in this run (%s)\n", machine)
	fmt.Fprintln(&b, "ratios are of medians (n = samples, max/min = their spread); 1.00x means equal to the peer")
	fmt.Fprintln(&b)
	met := 0
	rows := r.Targets()
	for _, row := range rows {
		status := "NOT met"
		if row.Met {
			status, met = "met", met+1
		}
		fmt.Fprintf(&b, "%-62s %-16s %-8s %s\n", row.Label, row.Goal, status, row.Result)
	}
	fmt.Fprintf(&b, "\n%d of %d targets met\n\nother ratios (no target)\n", met, len(rows))
	for _, row := range r.Ratios() {
		fmt.Fprintf(&b, "%-62s %s\n", row.Label, row.Result)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
