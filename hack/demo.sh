#!/usr/bin/env bash
# `make demo`: a local cluster with the agent installed from the chart and a demo session
# you can attach to. Installs what it needs (Debian packages, the pinned OpenCode, helm),
# builds the cluster binaries once (cached), and cleans everything up on Ctrl-C.
# Running it twice in a row works: a leftover cluster from an interrupted run is stopped first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
DEMO_DIR="${CACHE_DIR}/demo"

log() { echo "demo: $*" >&2; }

hack/install-deps.sh
hack/build-cluster.sh all
OPENCODE="$(hack/install-opencode.sh)"
HELM="$(hack/tools.sh helm)"
go build -o bin/testcluster ./internal/testcluster/cmd/testcluster
go build -o bin/demo ./test/e2eenv/cmd/demo

# A previous run killed hard may have left its cluster: stop it, start afresh.
bin/testcluster down --dir "${DEMO_DIR}/cluster" >/dev/null 2>&1 || true
rm -rf "${DEMO_DIR}/run"
cleanup() { bin/testcluster down --dir "${DEMO_DIR}/cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT
log "kwok mode: the agent and sessions run as local processes behind a fake kubelet (the demo on a real node is not built yet; make test shows the product in its images on one: test/realnode)"
log "starting the local cluster"
eval "$(bin/testcluster up --dir "${DEMO_DIR}/cluster")"
export KUBECONFIG

# kubectl v1.37 from the cluster build finds `kubectl-agents` in bin/ as a plugin.
export PATH="${ROOT}/bin:${CACHE_DIR}/cluster/bin:${PATH}"
bin/demo --kubeconfig "${KUBECONFIG}" --helm "${HELM}" --opencode "${OPENCODE}" \
  --chart charts/cake-agents --workdir "${DEMO_DIR}/run" --bin bin
