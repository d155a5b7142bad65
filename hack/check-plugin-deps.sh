#!/usr/bin/env bash
# Fails when the kubectl plugin links anything it must not: the cgo database drivers
# (a CGO_ENABLED=0 cross build would silently ship go-sqlite3's stub) or any agent
# package (plugin and agent never import each other). Run from anywhere in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

module=$(go list -m)
deps=$(CGO_ENABLED=0 go list -deps ./cmd/kubectl-agents)
bad=$(grep -E "^(github\.com/mattn/go-sqlite3|github\.com/jackc/pgx|${module//./\\.}/agent)(/|$)" <<<"$deps" || true)
if [[ -n "$bad" ]]; then
  echo "kubectl-agents must stay CGO-free and independent of the agent, but it depends on:" >&2
  sed 's/^/  /' <<<"$bad" >&2
  echo "find the importer with: go list -deps -f '{{.ImportPath}}: {{join .Imports \" \"}}' ./cmd/kubectl-agents | grep <package>" >&2
  exit 1
fi
echo "ok: kubectl-agents depends on no cgo driver and no agent package"
