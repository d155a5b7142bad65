#!/usr/bin/env bash
# `make lint`: gofmt, go vet, golangci-lint, the dependency rules (plugin CGO-free, agent built
# with cgo), the chart (helm lint --strict with every ci values file, helm-unittest, the values
# table of its README), the GitHub workflows (actionlint, every action pinned by commit) and the
# krew manifest template (rendered and checked by krew's validator).
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

step "chart README values table"
go run ./internal/release/cmd/releasetool values-table -check || fail "values table (go run ./internal/release/cmd/releasetool values-table writes it)"

step "actionlint"
if ! command -v shellcheck >/dev/null; then
  fail "actionlint needs shellcheck for the run: scripts (hack/install-deps.sh installs it)"
elif al="$(hack/tools.sh actionlint)"; then
  "${al}" -shellcheck="$(command -v shellcheck)" -pyflakes= .github/workflows/*.yml || fail "actionlint"
else
  fail "actionlint (build failed)"
fi
# A tag can be moved; a commit cannot: every action is pinned by its full commit SHA, with the
# tag it was in a comment ("uses: owner/repo@<40 hex> # vX.Y.Z").
unpinned="$(grep -nE '^\s*-?\s*uses:' .github/workflows/*.yml | grep -vE 'uses: [^@ ]+@[0-9a-f]{40} # v[0-9]' || true)"
if [[ -n "${unpinned}" ]]; then
  echo "${unpinned}" >&2
  fail "actions not pinned by commit (uses: owner/repo@<sha> # <tag>)"
fi

step "krew manifest"
if validate="$(hack/tools.sh validate-krew-manifest)"; then
  # Rendered from the template against stand-in archives (the checksums are theirs): the
  # schema, the platforms and the name are what krew's validator checks.
  tmp="$(mktemp -d)"
  while read -r name; do
    echo stand-in >"${tmp}/${name}"
  done < <(grep -o 'kubectl-agents_{{ .TagName }}_[a-z0-9_]*\.[a-z.]*' krew/agents.yaml.tmpl | sed 's/{{ .TagName }}/v0.0.0-lint/')
  if go run ./internal/release/cmd/releasetool krew-manifest -tag v0.0.0-lint -dist "${tmp}" -o "${tmp}/agents.yaml"; then
    "${validate}" -manifest "${tmp}/agents.yaml" -skip-install || fail "krew manifest template (validate-krew-manifest)"
  else
    fail "krew manifest template (render)"
  fi
  rm -rf "${tmp}"
  if [[ -f krew/agents.yaml ]]; then
    "${validate}" -manifest krew/agents.yaml -skip-install || fail "krew/agents.yaml (validate-krew-manifest)"
    if grep -q snapshot krew/agents.yaml; then
      fail "krew/agents.yaml is a snapshot: it holds the last released manifest only (the release workflow proposes it)"
    fi
  fi
else
  fail "validate-krew-manifest (build failed)"
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  echo >&2
  echo "lint failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all checks passed" >&2
