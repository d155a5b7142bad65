#!/usr/bin/env bash
# Builds the container images without Docker or a registry, with hack/imagebuild (which
# interprets the Dockerfiles themselves: see hack/imagebuild/main.go), and prints one line per
# image on stdout, "<name><TAB><archive>", for
#
#   ctr -n k8s.io images import <archive>
#
#   hack/build-images.sh                    every image below
#   hack/build-images.sh postgres pause     only those (names from the first column)
#   TAG=dev hack/build-images.sh            another tag for the three project images
#
#   image            default name                          from
#   control-plane    cake-agents/web:<chart appVersion>    Dockerfile target control-plane
#   data-plane       cake-agents/data-plane:<appVersion>   Dockerfile target data-plane
#   data-plane-init  cake-agents/data-plane-init:<...>     Dockerfile target data-plane-init
#   postgres         postgres:15                           test/images/postgres
#   busybox          busybox:1.37                          test/images/busybox
#   fakemodel        cake-agents-test/fakemodel:dev        test/images/fakemodel
#   gitserver        cake-agents-test/gitserver:dev        test/images/gitserver
#   pause            cake-agents-test/pause:dev            test/images/pause
#
# The first three are the names the chart renders by default (registry.default empty), postgres
# and busybox those of postgresql.image and tests.image. The agent is built from the
# Dockerfile's own go build command (VERSION/COMMIT from git, DATE the commit's time, so an
# unchanged tree rebuilds nothing; the environment's VERSION, COMMIT and DATE win), OpenCode
# by hack/install-opencode.sh. Archives and caches
# live in $CACHE_DIR/images. Needs root, debootstrap, go, gcc, git and npm. The first run takes
# minutes (debootstrap and apt-get in every image); with nothing changed, seconds. Set
# IMAGEBUILD_FLAGS=-v to see every RUN's output.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
log() { echo "build-images: $*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
  log "needs root (the builder chroots, mounts in private namespaces and chowns): run it with sudo"
  exit 1
fi
command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }

app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/cake-agents/Chart.yaml)"
tag="${TAG:-${app_version}}"
declare -A spec=(
  [control-plane]="--target control-plane=cake-agents/web:${tag}"
  [data-plane]="--target data-plane=cake-agents/data-plane:${tag}"
  [data-plane-init]="--target data-plane-init=cake-agents/data-plane-init:${tag}"
  [postgres]="--dockerfile test/images/postgres=postgres:15"
  [busybox]="--dockerfile test/images/busybox=busybox:1.37"
  [fakemodel]="--dockerfile test/images/fakemodel=cake-agents-test/fakemodel:dev"
  [gitserver]="--dockerfile test/images/gitserver=cake-agents-test/gitserver:dev"
  [pause]="--dockerfile test/images/pause=cake-agents-test/pause:dev"
)
order=(control-plane data-plane data-plane-init postgres busybox fakemodel gitserver pause)
[[ $# -gt 0 ]] && order=("$@")
args=()
for image in "${order[@]}"; do
  [[ -n "${spec[${image}]:-}" ]] || { log "unknown image ${image} (known: ${!spec[*]})"; exit 2; }
  read -r -a words <<<"${spec[${image}]}"
  args+=("${words[@]}")
done

# VERSION/COMMIT/DATE in the environment win (VERSION=dev COMMIT=unknown DATE=unknown keeps the
# agent, and so the archives, unchanged across commits that do not touch its code).
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
commit="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
date="${DATE:-$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)}"

# The builder is a nested module (BuildKit's parser stays out of the project's go.mod).
bin="${CACHE_DIR}/images/bin/imagebuild"
mkdir -p "$(dirname "${bin}")"
go build -C hack/imagebuild -o "${bin}" .

read -r -a extra <<<"${IMAGEBUILD_FLAGS:-}"
exec "${bin}" "${extra[@]}" --root "${ROOT}" \
  --build-arg "VERSION=${version}" --build-arg "COMMIT=${commit}" --build-arg "DATE=${date}" \
  "${args[@]}"
