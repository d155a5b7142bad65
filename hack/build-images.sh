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
#   REGISTRY=registry.example.com/cake hack/build-images.sh
#                                           every name prefixed, as the chart's registry.default does
#   INDEX=FILE hack/build-images.sh         also write "<image><TAB><name><TAB><archive>" lines to FILE
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
prefix="${REGISTRY:+${REGISTRY%/}/}"
declare -A spec=(
  [control-plane]="--target control-plane=${prefix}cake-agents/web:${tag}"
  [data-plane]="--target data-plane=${prefix}cake-agents/data-plane:${tag}"
  [data-plane-init]="--target data-plane-init=${prefix}cake-agents/data-plane-init:${tag}"
  [postgres]="--dockerfile test/images/postgres=${prefix}postgres:15"
  [busybox]="--dockerfile test/images/busybox=${prefix}busybox:1.37"
  [fakemodel]="--dockerfile test/images/fakemodel=${prefix}cake-agents-test/fakemodel:dev"
  [gitserver]="--dockerfile test/images/gitserver=${prefix}cake-agents-test/gitserver:dev"
  [pause]="--dockerfile test/images/pause=${prefix}cake-agents-test/pause:dev"
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
out="$("${bin}" "${extra[@]}" --root "${ROOT}" \
  --build-arg "VERSION=${version}" --build-arg "COMMIT=${commit}" --build-arg "DATE=${date}" \
  "${args[@]}")"
printf '%s\n' "${out}"
if [[ -n "${INDEX:-}" ]]; then
  # The builder prints the images in the order asked: pair each line with its image.
  mapfile -t lines <<<"${out}"
  [[ ${#lines[@]} -eq ${#order[@]} ]] || { log "expected ${#order[@]} images, got ${#lines[@]} lines"; exit 1; }
  mkdir -p "$(dirname "${INDEX}")"
  for i in "${!order[@]}"; do printf '%s\t%s\n' "${order[$i]}" "${lines[$i]}"; done >"${INDEX}.tmp"
  mv "${INDEX}.tmp" "${INDEX}"
fi
