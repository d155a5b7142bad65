#!/usr/bin/env bash
# Runs the test tiers.
#
#   hack/test.sh unit   unit tests only: go test -short, no cluster, no database server
#   hack/test.sh all    every tier, on one local test cluster shared by all packages
#
# `all` first installs the system packages the tests need (hack/install-deps.sh), then starts
# the cluster with `testcluster up` in a fresh state dir, exports
# CAKE_TESTCLUSTER_DIR (and KUBECONFIG) so every test binary attaches to it instead of starting
# its own, runs go test over the whole module and always stops the cluster again, on success,
# failure, Ctrl-C or SIGTERM. The exit code is go test's, and go test's summary is the last
# thing printed. Extra arguments go to go test (e.g. -run TestFoo); TEST_PACKAGES narrows the
# packages (default ./...), GO_TEST_FLAGS replaces "-race -count=1". FUZZ_TIME (default 10000x, 0
# to skip) is how many inputs each fuzz test of the API's decoders and query parsers tries beyond
# its corpus.
# Every benchmark also runs once, small and untimed (BENCH_SMOKE=0 skips that).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
# The real-node tier (test/realnode) runs for minutes: go test's default 10-minute limit per
# package is too tight on a busy 2-core machine.
read -r -a go_test_flags <<<"${GO_TEST_FLAGS:--race -count=1 -timeout 40m}"
read -r -a packages <<<"${TEST_PACKAGES:-./...}"

log() { echo "test.sh: $*" >&2; }

mode="${1:-all}"
[[ $# -gt 0 ]] && shift
case "${mode}" in
  unit)
    (cd test/dockerfile && go test -count=1 -short ./...)
    (cd hack/imagebuild && go test -count=1 -short ./...)
    exec go test "${go_test_flags[@]}" -short "$@" "${packages[@]}"
    ;;
  all) ;;
  *)
    echo "usage: $0 [unit|all] [go test flags...]" >&2
    exit 2
    ;;
esac

# System packages first: a missing one must stop the run now, not fail a test 40 minutes in.
hack/install-deps.sh
hack/build-cluster.sh all
# Install the pinned OpenCode and helm once up front rather than from parallel test binaries.
hack/install-opencode.sh >/dev/null
hack/tools.sh helm >/dev/null
go build -o bin/testcluster ./internal/testcluster/cmd/testcluster
# The real-node tier's images (the Dockerfile's three targets and the fixtures), built here:
# nothing inside the tier's network namespace can reach a package registry.
# Named as the guide's values file renders them once its <registry> and <image-tag> are filled in
# (test/realnode); the index tells the tier which archive holds which image.
if [[ "$(id -u)" == 0 ]]; then
  REGISTRY=registry.example.com/cake TAG=1.2.3 INDEX="${CACHE_DIR}/images/index.tsv" hack/build-images.sh >/dev/null
else
  log "not root: the real-node tier's images are not built and test/realnode skips (CI runs it as root)"
fi

run_dir="${CACHE_DIR}/cluster/test-run-$$"
teardown_log="${CACHE_DIR}/cluster/test-run-$$.down.log"
child=""

# Teardown prints nothing (go test's summary must stay last); problems go to a log beside the
# run dir, which is kept for inspection only when stopping failed.
cleanup() {
  if [[ -n "${pg_down:-}" ]]; then
    ${pg_down} >>"${teardown_log}" 2>&1 || true
  fi
  if bin/testcluster down --dir "${run_dir}" >>"${teardown_log}" 2>&1; then
    rm -rf "${run_dir}" "${teardown_log}"
  fi
}
# go test runs in its own session (setsid) so an interrupt reaches it and every test binary it
# started as one group; their own clusters, if any, die with them (Pdeathsig).
on_signal() {
  if [[ -n "${child}" ]]; then
    kill -TERM -- "-${child}" 2>/dev/null || true
    wait "${child}" 2>/dev/null || true
  fi
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

eval "$(bin/testcluster up --dir "${run_dir}")"
export KUBECONFIG CAKE_TESTCLUSTER_DIR

# --- Shared PostgreSQL ------------------------------------------------------------------------
# Tests read CAKE_TEST_POSTGRES_URL. Set it to use an external server; otherwise the Postgres
# harness starts a throwaway one here, the same way as the cluster (its command prints `export`
# lines on `up` and stops it on `down`).
if [[ -z "${CAKE_TEST_POSTGRES_URL:-}" && -d internal/testpg/cmd/testpg ]]; then
  go build -o bin/testpg ./internal/testpg/cmd/testpg
  eval "$(bin/testpg up --dir "${run_dir}/postgres")"
  export CAKE_TEST_POSTGRES_URL
  pg_down="bin/testpg down --dir ${run_dir}/postgres"
fi
# ----------------------------------------------------------------------------------------------

# The Dockerfile lint and the image builder live in their own modules (BuildKit must not enter
# ours); run them first so the main go test summary stays the last thing printed. The builder's
# end-to-end tests build real images into $CACHE_DIR/images (minutes the first time).
nested_rc=0
if [[ "${TEST_PACKAGES:-./...}" == "./..." ]]; then
  log "running the Dockerfile lint module (test/dockerfile)"
  (cd test/dockerfile && go test -count=1 ./...) || nested_rc=$?
  log "running the image builder module (hack/imagebuild)"
  (cd hack/imagebuild && go test -count=1 -timeout 60m ./...) || nested_rc=$?
fi

# Every benchmark runs once, small, on this cluster and Postgres, so none rots between runs
# of `make bench`: one iteration (-benchtime=1x), one sample per figure, 200 rows instead of
# 10,000 and bursts of 5 sessions. Nothing here asserts a time; a benchmark fails only when
# its work is wrong (pods missing, bytes changed, rows miscounted). BENCH_SMOKE=0 skips it.
if [[ "${TEST_PACKAGES:-./...}" == "./..." && "${BENCH_SMOKE:-1}" != 0 ]]; then
  mapfile -t bench_pkgs < <(go list -f '{{.Dir}}' ./... | while read -r d; do
    if grep -qs '^func Benchmark' "${d}"/*_test.go; then echo "${d#"${ROOT}/"}"; fi
  done)
  bench_pkgs=("${bench_pkgs[@]/#/./}")
  log "running every benchmark once (-benchtime=1x) in ${bench_pkgs[*]}"
  bench_log="${run_dir}/bench-smoke.log"
  CAKE_BENCH_SAMPLES=1 CAKE_BENCH_SESSIONS=200 CAKE_BENCH_BURST=5 \
    go test -run '^$' -bench . -benchtime 1x -count 1 -timeout 20m "${bench_pkgs[@]}" >"${bench_log}" 2>&1 || {
    nested_rc=$?
    cat "${bench_log}" >&2
    log "a benchmark failed: CAKE_BENCH_SAMPLES=1 CAKE_BENCH_SESSIONS=200 CAKE_BENCH_BURST=5 go test -run '^\$' -bench . -benchtime 1x ${bench_pkgs[*]} reproduces it"
  }
fi

# The API's JSON decoders and query parsers are fuzzed for a bounded time each (go test runs
# their committed corpus, agent/server/testdata/fuzz, as ordinary tests anyway). A failure
# writes the input that broke it to that folder: commit it with the fix. The budget is a count of
# inputs, not a duration: Go before 1.27 can fail a duration-bounded run with a bare "context
# deadline exceeded" when the time runs out while a worker is busy (go.dev/issue/75804), which
# a loaded CI machine hits; a count has no deadline to race.
fuzz_time="${FUZZ_TIME:-10000x}"
if [[ "${TEST_PACKAGES:-./...}" == "./..." && "${fuzz_time}" != 0 ]]; then
  for target in $(go test -list '^Fuzz' ./agent/server | grep '^Fuzz'); do
    log "fuzzing ${target} (-fuzztime ${fuzz_time})"
    fuzz_log="${run_dir}/fuzz-${target}.log"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "${fuzz_time}" ./agent/server >"${fuzz_log}" 2>&1 || {
      nested_rc=$?
      cat "${fuzz_log}" >&2
      log "${target} failed: go test -run '^$' -fuzz '^${target}\$' ./agent/server reproduces it"
    }
  done
fi

# Figures the tests record (test/artifacts/figures.txt) are printed after the run, followed by
# go test's per-package summary again, so that summary stays the last thing printed.
figures="${ROOT}/test/artifacts/figures.txt"
mkdir -p "$(dirname "${figures}")"
: >"${figures}"
test_log="${run_dir}/go-test.log"
log "running go test ${go_test_flags[*]} $* ${packages[*]} against ${CAKE_TESTCLUSTER_DIR}"
TEST_LOG="${test_log}" setsid -w bash -c 'set -o pipefail; go test "$@" 2>&1 | tee "${TEST_LOG}"' go-test "${go_test_flags[@]}" "$@" "${packages[@]}" &
child=$!
rc=0
wait "${child}" || rc=$?
child=""
if [[ -s "${figures}" ]]; then
  echo
  echo "figures:"
  sed 's/^/  /' "${figures}"
  echo
  grep -E '^(ok|FAIL|\?) ' "${test_log}" || true
  tail -n 1 "${test_log}" | grep -Ex 'FAIL|PASS' || true
fi
if [[ ${rc} -eq 0 && ${nested_rc} -ne 0 ]]; then
  rc=${nested_rc}
fi
exit "${rc}"
