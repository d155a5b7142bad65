#!/usr/bin/env bash
# `make demo`: a local cluster with the agent installed from the chart and a demo session
# you can attach to. Installs what it needs (Debian packages, the pinned OpenCode, helm),
# builds the cluster binaries and images once (cached), and cleans everything up on Ctrl-C.
# As root it runs a real node (the agent and sessions in their images); elsewhere, or with
# CAKE_DEMO_MODE=kwok, kwok plays the kubelet and they run as local processes.
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

# kubectl v1.37 from the cluster build finds `kubectl-agents` in bin/ as a plugin.
export PATH="${ROOT}/bin:${CACHE_DIR}/cluster/bin:${PATH}"

# CAKE_DEMO_MODE: real-node (fail when the machine cannot run one), kwok, or auto (the
# default: a real node when this machine can run one).
MODE="${CAKE_DEMO_MODE:-auto}"
case "${MODE}" in
  auto|real-node|kwok) ;;
  *) echo "demo: CAKE_DEMO_MODE=${MODE}: use auto, real-node or kwok" >&2; exit 2 ;;
esac
if [[ "${MODE}" != kwok ]]; then
  if why="$(bin/demo --can-run-real-node)"; then
    MODE=real-node
  elif [[ "${MODE}" == real-node ]]; then
    echo "demo: CAKE_DEMO_MODE=real-node, but ${why}" >&2
    exit 1
  else
    log "kwok mode (the agent and sessions run as local processes behind a fake kubelet): ${why}"
    MODE=kwok
  fi
fi

if [[ "${MODE}" == real-node ]]; then
  # The agent and sessions run in their images on a kubelet with containerd and runc, all
  # inside network and mount namespaces the demo makes (stopped and gone on Ctrl-C).
  log "real-node mode: building the images (minutes the first time, seconds after) ..."
  INDEX="${CACHE_DIR}/images/index.tsv"
  REGISTRY=registry.example.com/cake TAG=1.2.3 INDEX="${INDEX}" hack/build-images.sh >/dev/null
  exec bin/demo --real-node --images "${INDEX}" --helm "${HELM}" --opencode "${OPENCODE}" \
    --chart charts/cake-agents --workdir "${DEMO_DIR}/real-node" --bin bin
fi

# A previous run killed hard may have left its cluster: stop it, start afresh.
bin/testcluster down --dir "${DEMO_DIR}/cluster" >/dev/null 2>&1 || true
rm -rf "${DEMO_DIR}/run"
cleanup() { bin/testcluster down --dir "${DEMO_DIR}/cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT
log "starting the local cluster"
eval "$(bin/testcluster up --dir "${DEMO_DIR}/cluster")"
export KUBECONFIG

bin/demo --kubeconfig "${KUBECONFIG}" --helm "${HELM}" --opencode "${OPENCODE}" \
  --chart charts/cake-agents --workdir "${DEMO_DIR}/run" --bin bin
