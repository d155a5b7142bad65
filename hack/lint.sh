#!/usr/bin/env bash
# `make lint`: gofmt, go vet, golangci-lint, the dependency rules (plugin CGO-free, agent built
# with cgo), and the chart (helm lint --strict with every ci values file, helm-unittest).
# Every check runs; the script fails at the end if any failed, naming them.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
CHART="charts/cake-agents"
failed=()

step() { echo "==> $*" >&2; }
fail() { echo "FAIL: $*" >&2; failed+=("$1"); }

step "gofmt"
# The root module's packages (nested modules such as hack/tools are not part of it).
unformatted="$(gofmt -l $(go list -f '{{.Dir}}' ./...) 2>&1)"
if [[ -n "${unformatted}" ]]; then
  echo "${unformatted}" >&2
  fail "gofmt (run gofmt -w on the files above)"
fi

step "go vet"
go vet ./... || fail "go vet"

step "golangci-lint"
if lint="$(hack/tools.sh golangci-lint)"; then
  "${lint}" run --allow-serial-runners ./... || fail "golangci-lint"
else
  fail "golangci-lint (build failed)"
fi

if [[ -x hack/check-plugin-deps.sh ]]; then
  step "plugin dependencies"
  hack/check-plugin-deps.sh || fail "check-plugin-deps"
fi

# go-sqlite3 silently compiles to a stub without cgo: an agent built that way cannot open its
# default database. Check any agent binary lying around (make build puts it in bin/).
for agent in bin/agent dist/agent*/agent; do
  [[ -f "${agent}" ]] || continue
  step "cgo in ${agent}"
  if ! go version -m "${agent}" | grep -q 'CGO_ENABLED=1'; then
    fail "${agent} was built without cgo (build it with CGO_ENABLED=1: make build)"
  fi
done

step "helm lint --strict"
if helm="$(hack/tools.sh helm)"; then
  "${helm}" lint --strict "${CHART}" || fail "helm lint (default values)"
  for f in "${CHART}"/ci/*-values.yaml; do
    "${helm}" lint --strict "${CHART}" -f "${f}" || fail "helm lint -f ${f}"
  done
else
  fail "helm (build failed)"
fi

step "helm-unittest"
if unittest="$(hack/tools.sh helm-unittest)"; then
  "${unittest}" --strict --color=false "${CHART}" || fail "helm-unittest"
else
  fail "helm-unittest (build failed)"
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  echo >&2
  echo "lint failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all checks passed" >&2
