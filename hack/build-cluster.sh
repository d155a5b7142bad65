#!/usr/bin/env bash
# Builds the local test cluster's binaries from the Go module proxy, once.
#
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and kube-proxy come
# from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, kwok from sigs.k8s.io/kwok and
# CoreDNS from github.com/coredns/coredns. The real node's runtime (containerd, runc and the CNI
# plugins) comes from Debian's packages, unpacked into the cache: nothing is installed or started
# system-wide.
# `go install k8s.io/kubernetes/cmd/...@version` is refused because kubernetes' own
# go.mod replaces its staging modules with local paths, so each set is built inside a
# throwaway wrapper module that pins those modules to their published versions.
# Results are cached under $CACHE_DIR/cluster/bin with a version stamp per binary.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${ROOT}/hack/versions.env"
CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
BIN="${CACHE_DIR}/cluster/bin"
WORK="${CACHE_DIR}/cluster/src"
mkdir -p "${BIN}" "${WORK}"

log() { echo "build-cluster: $*" >&2; }

stamped() { # name version -> 0 if $BIN/name exists with that version stamp
  [[ -x "${BIN}/$1" && -f "${BIN}/.$1.version" && "$(cat "${BIN}/.$1.version")" == "$2" ]]
}
stamp() { echo "$2" >"${BIN}/.$1.version"; }

build_kubernetes() {
  local need=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    stamped "$b" "${KUBERNETES_VERSION}" || need+=("$b")
  done
  [[ ${#need[@]} -eq 0 ]] && return 0
  log "building ${need[*]} ${KUBERNETES_VERSION} (first time: ~10-15 min on 2 cores)"
  local dir="${WORK}/kubernetes-${KUBERNETES_VERSION}"
  mkdir -p "${dir}"
  local gomod staging minor
  gomod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  staging="v0.${KUBERNETES_VERSION#v1.}"
  {
    echo "module cakeagents.local/k8s-wrapper"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes ${KUBERNETES_VERSION}"
    echo
    grep -E '^[[:space:]]*k8s\.io/[^ ]+ => \./staging/' "${gomod}" |
      awk -v v="${staging}" '{print "replace " $1 " => " $1 " " v}'
  } >"${dir}/go.mod"
  echo 'package wrapper' >"${dir}/wrapper.go"
  minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  (
    cd "${dir}"
    for b in "${need[@]}"; do
      log "go build ${b}"
      GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${BIN}/${b}" "k8s.io/kubernetes/cmd/${b}"
      stamp "${b}" "${KUBERNETES_VERSION}"
    done
  )
}

build_etcd() {
  stamped etcd "${ETCD_VERSION}" && return 0
  log "building etcd ${ETCD_VERSION}"
  local dir="${WORK}/etcd-${ETCD_VERSION}"
  mkdir -p "${dir}"
  printf 'module cakeagents.local/etcd-wrapper\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "${ETCD_VERSION}" >"${dir}/go.mod"
  echo 'package wrapper' >"${dir}/wrapper.go"
  (cd "${dir}" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${BIN}/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "${ETCD_VERSION}"
}

build_kwok() {
  if ! stamped kwok "${KWOK_VERSION}"; then
    log "building kwok ${KWOK_VERSION}"
    GOBIN="${BIN}" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
    stamp kwok "${KWOK_VERSION}"
  fi
  # kwok ships its CRDs and stages only inside its module; copy them beside the binary.
  local dir
  dir="$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "${BIN}/kwok-crds" "${BIN}/kwok-stages"
  cp -f "${dir}"/kustomize/crd/bases/*.yaml "${BIN}/kwok-crds/"
  local s
  for s in node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
    find "${dir}/kustomize/stage" -name "${s}.yaml" -exec cp -f {} "${BIN}/kwok-stages/" \;
  done
  chmod -R u+w "${BIN}/kwok-crds" "${BIN}/kwok-stages"
}

# CoreDNS with only the plugins cluster DNS needs, in a wrapper module of its own: its full plugin
# set pulls in every cloud SDK, and its client-go must not meet ours.
build_coredns() {
  stamped coredns "${COREDNS_VERSION}" && return 0
  log "building coredns ${COREDNS_VERSION}"
  local dir="${WORK}/coredns-${COREDNS_VERSION}"
  mkdir -p "${dir}"
  printf 'module cakeagents.local/coredns-wrapper\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' "${COREDNS_VERSION}" >"${dir}/go.mod"
  cat >"${dir}/main.go" <<'EOF_GO'
// Command coredns is CoreDNS with the plugins a test cluster's DNS needs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "health", "ready", "cache", "kubernetes"}
}

func main() { coremain.Run() }
EOF_GO
  (cd "${dir}" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${BIN}/coredns" .)
  stamp coredns "${COREDNS_VERSION}"
}

# The node's container runtime from Debian's packages: `apt-get download` + `dpkg-deb -x` into
# ${BIN}/node-sys (containerd, ctr and the runc shim in usr/bin, runc in usr/sbin, the CNI
# plugins in usr/lib/cni). The stamp is the exact package versions apt resolved.
build_node_runtime() {
  local pkgs=(containerd runc containernetworking-plugins) want
  want="$(apt-cache policy "${pkgs[@]}" 2>/dev/null | awk '/^[^ ]/{p=$1} /Candidate:/{print p $2}' | tr -d ' ' | paste -sd' ')"
  if [[ -z "${want}" || "${want}" == *"(none)"* ]]; then
    if [[ -d "${BIN}/node-sys" ]]; then return 0; fi
    log "apt does not know ${pkgs[*]}: run 'apt-get update' first"
    return 1
  fi
  if [[ -d "${BIN}/node-sys" && -f "${BIN}/.node-sys.version" && "$(cat "${BIN}/.node-sys.version")" == "${want}" ]]; then
    return 0
  fi
  log "unpacking ${want}"
  local debs="${WORK}/node-debs"
  rm -rf "${debs}" "${BIN}/node-sys.tmp"
  mkdir -p "${debs}" "${BIN}/node-sys.tmp"
  (cd "${debs}" && apt-get download -qq "${pkgs[@]}" 2>/dev/null)
  local d
  for d in "${debs}"/*.deb; do dpkg-deb -x "${d}" "${BIN}/node-sys.tmp"; done
  rm -rf "${BIN}/node-sys" "${debs}"
  mv "${BIN}/node-sys.tmp" "${BIN}/node-sys"
  echo "${want}" >"${BIN}/.node-sys.version"
}

case "${1:-all}" in
  all) build_etcd; build_kwok; build_kubernetes; build_coredns; build_node_runtime ;;
  coredns) build_coredns ;;
  node-runtime) build_node_runtime ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  kubernetes) build_kubernetes ;;
  *) echo "usage: $0 [all|etcd|kwok|kubernetes|coredns|node-runtime]" >&2; exit 2 ;;
esac
log "ready in ${BIN}"
