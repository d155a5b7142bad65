#!/usr/bin/env bash
# `make bench`: runs the benchmarks on one local cluster and one Postgres, then prints a
# table of ratios against the peers measured in the same run (plugin vs kubectl, agent
# create vs raw client-go, SQLite vs Postgres, a failover vs the Lease duration) with the
# machine noted.
#
# Raw results go to bench/results.txt in Go's benchmark format (benchstat reads it:
# `benchstat old.txt bench/results.txt`); the ratio table also goes to bench/summary.txt.
# BENCHTIME (default 20x), HEAVY_BENCHTIME (default 3x, for the 100-session and 10k-session
# runs) and COUNT (default 1) tune the runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
OUT="${BENCH_OUT:-${ROOT}/bench}"
mkdir -p "${OUT}"
benchtime="${BENCHTIME:-20x}"
count="${COUNT:-1}"

log() { echo "bench: $*" >&2; }

hack/build-cluster.sh all
go build -o bin/testcluster ./internal/testcluster/cmd/testcluster
go build -o bin/testpg ./internal/testpg/cmd/testpg
run_dir="${CACHE_DIR}/bench-run-$$"
cleanup() {
  bin/testpg down --dir "${run_dir}/postgres" >/dev/null 2>&1 || true
  bin/testcluster down --dir "${run_dir}/cluster" >/dev/null 2>&1 || true
  rm -rf "${run_dir}"
}
trap cleanup EXIT
eval "$(bin/testcluster up --dir "${run_dir}/cluster")"
# Postgres with its production durability (fsync, synchronous_commit, full_page_writes on):
# its numbers are compared with SQLite's, which syncs its WAL.
eval "$(bin/testpg up --durable --dir "${run_dir}/postgres")"
export KUBECONFIG CAKE_TESTCLUSTER_DIR CAKE_TEST_POSTGRES_URL

results="${OUT}/results.txt"
{
  echo "# cake-agents benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# postgres: fsync, synchronous_commit and full_page_writes on (production durability); sqlite: WAL, synchronous=NORMAL (the agent's settings)"
  echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sm), $(go env GOVERSION)"
} >"${results}"
log "store benchmarks (SQLite and Postgres, 10k sessions)"
go test -run '^$' -bench 'BenchmarkStore' -benchtime "${benchtime}" -count "${count}" ./agent/store/sqlite ./agent/store/postgres | tee -a "${results}" >&2
log "controller benchmark (create → pod, agent vs raw client-go)"
go test -run '^$' -bench 'BenchmarkCreate' -benchtime "${benchtime}" -count "${count}" ./agent/sessions | tee -a "${results}" >&2
log "product benchmarks (plugin vs kubectl, API create vs raw pod, 10k sessions)"
go test -run '^$' -bench 'Startup|List|CreateToPod|Proxy|At10k/list-page' -benchtime "${benchtime}" -count "${count}" -timeout 30m ./test/bench | tee -a "${results}" >&2
log "heavy product benchmarks (100 concurrent creates, RSS and restart at 10k sessions)"
go test -run '^$' -bench 'ConcurrentCreates|At10k/(rss|restart)' -benchtime "${HEAVY_BENCHTIME:-3x}" -count "${count}" -timeout 30m ./test/bench | tee -a "${results}" >&2
log "failover (two replicas on Postgres, the leader SIGKILLed)"
go test -run '^$' -bench 'Failover' -benchtime "${HEAVY_BENCHTIME:-3x}" -count "${count}" -timeout 30m ./test/ha | tee -a "${results}" >&2

# ratio NAME A B: the ns/op (or first metric) of benchmark A over B.
awk -v machine="$(nproc) cores, $(uname -m), $(go env GOVERSION)" '
  /^pkg:/ { pkg = $2; sub(/.*\//, "", pkg) }
  /^Benchmark/ {
    name = $1; sub(/-[0-9]+$/, "", name); name = pkg "." name
    for (i = 3; i < NF; i += 2) { v[name, $(i+1)] = $i }
    names[name] = 1
  }
  function ratio(label, a, b, unit) { ratiou(label, a, unit, b, unit) }
  # ratiou: metric ua of benchmark a over metric ub of benchmark b.
  function ratiou(label, a, ua, b, ub,   x, y) {
    x = v[a, ua]; y = v[b, ub]
    if (x == "" || y == "" || y == 0) { printf "%-52s %12s\n", label, "n/a"; return }
    printf "%-52s %12.2fx   (%s %s vs %s %s)\n", label, x / y, x, ua, y, ub
  }
  END {
    print "Cake Agents benchmarks — ratios against peers measured in this run (" machine ")"
    print "times: lower is better; MB/s: higher is better; 1.00x means equal to the peer"
    ratio("plugin start-up vs kubectl version --client", "bench.BenchmarkStartup/plugin", "bench.BenchmarkStartup/kubectl", "ns/op")
    ratio("kubectl agents session list vs kubectl get pods", "bench.BenchmarkList/plugin", "bench.BenchmarkList/kubectl", "ns/op")
    ratio("API create→pod vs raw client-go pod create", "bench.BenchmarkCreateToPod/agent", "bench.BenchmarkCreateToPod/raw-client-go", "ns/op")
    ratio("controller create→pod vs raw client-go", "sessions.BenchmarkCreate/agent", "sessions.BenchmarkCreate/raw-pod", "ns/op")
    ratio("store create: SQLite vs Postgres", "sqlite.BenchmarkStore/CreateSession", "postgres.BenchmarkStore/CreateSession", "ns/op")
    ratio("store list page at 10k: SQLite vs Postgres (p50)", "sqlite.BenchmarkStore/ListSessionsPage", "postgres.BenchmarkStore/ListSessionsPage", "p50-us")
    ratio("proxy throughput: agent proxy vs port-forward (MB/s)", "bench.BenchmarkProxy/throughput/agent-proxy", "bench.BenchmarkProxy/throughput/port-forward", "MB/s")
    ratio("proxy latency: agent proxy vs port-forward", "bench.BenchmarkProxy/latency/agent-proxy", "bench.BenchmarkProxy/latency/port-forward", "ns/op")
    ratiou("failover: leader SIGKILLed to other leading vs lease", "ha.BenchmarkFailover", "failover-s", "ha.BenchmarkFailover", "lease-s")
    ratiou("failover: kill to new session Running vs lease", "ha.BenchmarkFailover", "kill-to-running-s", "ha.BenchmarkFailover", "lease-s")
    for (k in v) { split(k, kk, SUBSEP); if (kk[2] ~ /MiB|s-to-ready|p50-us|p99-us|sessions\/s|running\/s/) printf "%-52s %12s %s\n", kk[1], v[k], kk[2] }
  }' "${results}" | tee "${OUT}/summary.txt"
