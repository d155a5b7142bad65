#!/usr/bin/env bash
# Builds one pinned developer tool on demand and prints the path of its binary.
#
#   hack/tools.sh helm|helm-unittest|golangci-lint|goreleaser|krew|validate-krew-manifest|actionlint
#
# Versions are pinned by the tools modules under hack/tools (never the project's own go.mod,
# so tools never move its k8s.io versions). Binaries land in $CACHE_DIR/tools/bin with a stamp
# holding the version and a hash of the pinning go.mod/go.sum; a binary whose stamp matches is
# not rebuilt. Build output goes to stderr, the path alone to stdout:
#
#   HELM="$(hack/tools.sh helm)"
#
# With --check it builds nothing: it prints the path and exits 0 when the binary is up to date,
# else exits 1 (tests use it to skip quickly in the unit tier).
set -euo pipefail

# Everything runs from main so that editing this file never affects a run in progress.
main() {
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${ROOT}/hack/versions.env"
CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
BIN="${CACHE_DIR}/tools/bin"
TOOLS="${ROOT}/hack/tools"

log() { echo "tools: $*" >&2; }
usage() { echo "usage: $0 [--check] helm|helm-unittest|golangci-lint|goreleaser|krew|validate-krew-manifest|actionlint" >&2; exit 2; }

check=false
if [[ "${1:-}" == "--check" ]]; then check=true; shift; fi
[[ $# -eq 1 ]] || usage
name="$1"

# A plain `go build` of helm v3 believes every cluster is Kubernetes 1.20 (its default
# capabilities are compiled in): teach it, and helm-unittest which renders with the same code,
# the version of the test cluster so `kubeVersion` constraints and deprecation checks are right.
kminor="${KUBERNETES_VERSION#v1.}"; kminor="${kminor%%.*}"
helm_caps="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${kminor} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${kminor}"

case "${name}" in
  helm)
    mod="${TOOLS}"; pkg="helm.sh/helm/v3/cmd/helm"; modpath="helm.sh/helm/v3"
    ldflags_extra="${helm_caps} -X helm.sh/helm/v3/internal/version.version=@VERSION@"
    ;;
  helm-unittest)
    mod="${TOOLS}"; pkg="github.com/helm-unittest/helm-unittest/cmd/helm-unittest"; modpath="github.com/helm-unittest/helm-unittest"
    ldflags_extra="${helm_caps}"
    ;;
  golangci-lint)
    mod="${TOOLS}/golangci-lint"; pkg="github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
    modpath="github.com/golangci/golangci-lint/v2"
    ldflags_extra="-X main.version=@VERSION@"
    ;;
  goreleaser)
    mod="${TOOLS}/goreleaser"; pkg="github.com/goreleaser/goreleaser/v2"; modpath="github.com/goreleaser/goreleaser/v2"
    ldflags_extra="-X main.version=@VERSION@ -X main.builtBy=hack/tools.sh"
    ;;
  actionlint)
    mod="${TOOLS}/actionlint"; pkg="github.com/rhysd/actionlint/cmd/actionlint"; modpath="github.com/rhysd/actionlint"
    ldflags_extra="-X github.com/rhysd/actionlint.version=@VERSION@"
    ;;
  krew | validate-krew-manifest)
    mod="${TOOLS}/krew"; pkg="sigs.k8s.io/krew/cmd/${name}"; modpath="sigs.k8s.io/krew"
    ldflags_extra="-X sigs.k8s.io/krew/internal/version.gitTag=@VERSION@"
    ;;
  *) usage ;;
esac

version="$(cd "${mod}" && go list -m -f '{{.Version}}' "${modpath}")"
stamp="${version} kube=1.${kminor} $(cat "${mod}/go.mod" "${mod}/go.sum" | sha256sum | cut -c1-16)"
out="${BIN}/${name}"
if [[ -x "${out}" && -f "${BIN}/.${name}.version" && "$(cat "${BIN}/.${name}.version")" == "${stamp}" ]]; then
  echo "${out}"
  exit 0
fi
if ${check}; then
  echo "tools: ${name} ${version} is not built (hack/tools.sh ${name} builds it)" >&2
  exit 1
fi

mkdir -p "${BIN}"
log "building ${name} ${version} (first time: a few minutes)"
ldflags="-s -w ${ldflags_extra//@VERSION@/${version}}"
tmp="${out}.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
(cd "${mod}" && GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${tmp}" "${pkg}")
mv -f "${tmp}" "${out}"
echo "${stamp}" >"${BIN}/.${name}.version"
echo "${out}"
}

main "$@"
