#!/usr/bin/env bash
# Installs the pinned OpenCode (OPENCODE_VERSION in hack/versions.env) once and prints the
# path of its binary on stdout; everything else goes to stderr so callers can do
#
#   OPENCODE="$(hack/install-opencode.sh)"
#
# The npm package opencode-ai is only a wrapper: the real, self-contained binary lives in
# the platform package (opencode-linux-x64, ...). We install with --ignore-scripts so no
# postinstall runs, take the platform binary and copy it under $CACHE_DIR/opencode/bin
# with a version stamp; Node is not needed to run it. A second run with the same version
# does nothing. The registry lags behind for some platforms (linux-arm64 stopped at
# 1.18.18): set OPENCODE_VERSION_ARM64 (here or in hack/versions.env) to pin arm64 apart.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${ROOT}/hack/versions.env"
CACHE_DIR="${CACHE_DIR:-${ROOT}/.cache}"
DIR="${CACHE_DIR}/opencode"
BIN="${DIR}/bin/opencode"
STAMP="${DIR}/bin/.opencode.version"

log() { echo "install-opencode: $*" >&2; }

case "$(uname -m)" in
  aarch64 | arm64) OPENCODE_VERSION="${OPENCODE_VERSION_ARM64:-${OPENCODE_VERSION}}" ;;
esac

if [[ -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${OPENCODE_VERSION}" ]]; then
  echo "${BIN}"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) platform=opencode-linux-x64 ;;
  Linux/aarch64 | Linux/arm64) platform=opencode-linux-arm64 ;;
  Darwin/arm64) platform=opencode-darwin-arm64 ;;
  Darwin/x86_64) platform=opencode-darwin-x64 ;;
  *)
    log "no OpenCode build for $(uname -s)/$(uname -m); install opencode ${OPENCODE_VERSION} yourself"
    exit 1
    ;;
esac

command -v npm >/dev/null || { log "npm is required to download OpenCode (apt-get install -y npm)"; exit 1; }

# Test packages run in parallel and may all ask at once: one installs, the others wait
# for it and then find the stamp.
mkdir -p "${DIR}"
exec 9>"${DIR}/.lock"
flock 9
if [[ -x "${BIN}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${OPENCODE_VERSION}" ]]; then
  echo "${BIN}"
  exit 0
fi

log "installing opencode-ai@${OPENCODE_VERSION} (${platform}, ~180 MiB, first time only)"
work="${DIR}/npm"
rm -rf "${work}"
mkdir -p "${work}" "${DIR}/bin"
# The wrapper depends on every platform package as optional; npm keeps only ours.
npm install --prefix "${work}" --no-save --no-audit --no-fund --ignore-scripts \
  "opencode-ai@${OPENCODE_VERSION}" >&2
src="${work}/node_modules/${platform}/bin/opencode"
if [[ ! -x "${src}" ]]; then
  log "${platform} was not installed (the registry may lack it for ${OPENCODE_VERSION}); pin a version that has it in hack/versions.env"
  exit 1
fi
cp "${src}" "${BIN}.tmp"
chmod +x "${BIN}.tmp"
mv "${BIN}.tmp" "${BIN}"
echo "${OPENCODE_VERSION}" >"${STAMP}"
# The npm tree is a second copy of the ~180 MiB binary; only ours is kept.
rm -rf "${work}"
log "installed $("${BIN}" --version 2>/dev/null || echo "${OPENCODE_VERSION}")"
echo "${BIN}"
