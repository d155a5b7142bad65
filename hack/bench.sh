#!/usr/bin/env bash
# `make bench`: runs the benchmarks on one local cluster and one Postgres, then prints a
# table of ratios against the peers measured in the same run (plugin vs kubectl, agent
# create vs raw client-go with the agent's client rate limit, the session proxy vs the
# `kubectl port-forward` binary, SQLite vs Postgres with production durability, a failover
# vs the Lease duration) with the machine noted.
#
# Every figure is the median of at least 5 samples taken inside one benchmark run (ns/op),
# with p50/p99/min/max as extra metrics, so COUNT=1 loses nothing. Raw results go to
# bench/results.txt in Go's benchmark format (benchstat reads it:
# `benchstat old.txt bench/results.txt`); the targets table (internal/benchreport: each
# target's ratio or figure, its goal, met or NOT met) also goes to bench/summary.txt.
# BENCHTIME (default 20x: at least that many samples), HEAVY_BENCHTIME (default 1x, for the
# 10k-session, sustained-create and failover runs, which still take 5 samples each) and
# COUNT (default 1) tune the runs.
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
# The Postgres store benchmark reads the server's settings and fails unless all three are on.
export CAKE_BENCH_REQUIRE_DURABLE=1

results="${OUT}/results.txt"
{
  echo "# cake-agents benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# postgres: fsync, synchronous_commit and full_page_writes on (production durability); sqlite: WAL, synchronous=NORMAL (the agent's settings)"
  echo "# peers: kubectl port-forward (the binary) for the session proxy, kubectl get pods for list, a raw client-go create with the agent's QPS/burst for create"
  echo "# each figure: the median (ns/op) of at least 5 samples, with p50/p99/min/max as extra metrics"
  echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sm), $(go env GOVERSION)"
} >"${results}"
# A failing benchmark does not stop the others: the table marks its targets not measured.
rc=0
bench() { go test -run '^$' -count "${count}" -timeout 30m "$@" | tee -a "${results}" >&2 || rc=1; }
log "store benchmarks (SQLite and Postgres, 10k sessions)"
bench -bench 'BenchmarkStore' -benchtime "${benchtime}" ./agent/store/sqlite ./agent/store/postgres
log "controller benchmark (create → pod, agent vs raw client-go)"
bench -bench 'BenchmarkCreate' -benchtime "${benchtime}" ./agent/sessions
log "product benchmarks (plugin vs kubectl, API create vs raw pod, proxy vs kubectl port-forward, warm pool claim → attachable)"
bench -bench 'Startup|List|CreateToPod|Proxy|WarmClaim' -benchtime "${benchtime}" ./test/bench
log "heavy product benchmarks (10k sessions: list, RSS, restart; sustained creates on SQLite and Postgres)"
bench -bench 'At10k|SustainedCreates' -benchtime "${HEAVY_BENCHTIME:-1x}" ./test/bench
log "failover (two replicas on Postgres, the leader SIGKILLed)"
bench -bench 'Failover' -benchtime "${HEAVY_BENCHTIME:-1x}" ./test/ha

go run ./internal/benchreport/cmd/benchreport -machine "$(nproc) cores, $(uname -m), $(go env GOVERSION)" "${results}" | tee "${OUT}/summary.txt"
exit "${rc}"
