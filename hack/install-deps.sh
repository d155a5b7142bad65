#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the demo need, and does nothing (and
# prints nothing) when they are all present. One list for every entry point: `.ci/run`,
# `make test` / `hack/test.sh all` and `make demo` / `hack/demo.sh` all call this first, so a
# missing tool stops a run in its first second instead of failing a test 40 minutes in.
#
# As root it runs apt-get itself; otherwise through sudo. Without either (or on a machine
# without apt-get) it installs nothing and exits 1, printing the one command to run.
#
#   hack/install-deps.sh          install what is missing
#   hack/install-deps.sh --check  only report: exit 1 and print the command if anything is missing
set -euo pipefail

log() { echo "install-deps: $*" >&2; }

# Administration tools live in sbin, which is not on every user's PATH: look there too, so a
# package that is installed is never reported missing.
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"

# Debian package per command it provides. Keep the reason beside each: it is the only record
# of why the package is on the list.
declare -A wanted=(
  [rg]=ripgrep                 # OpenCode's grep/glob tools (sessions, e2e, demo)
  [tmux]=tmux                  # attach tests drive OpenCode's TUI in tmux
  [chromium]=chromium          # web UI tests, headless
  [chromedriver]=chromium-driver
  [gcc]=gcc                    # cgo for go-sqlite3 (the agent)
  [make]=make
  [git]=git                    # session clones, the test git server, version stamps
  [curl]=curl
  [npm]=npm                    # hack/install-opencode.sh downloads the pinned OpenCode
  [ip]=iproute2                # `ip link set lo up` inside `unshare --net`; the real node's bridge
  [unshare]=util-linux         # private network and mount namespaces
  [nsenter]=util-linux         # entering the real node's namespaces
  [setsid]=util-linux          # hack/test.sh runs go test in its own session
  [runuser]=util-linux         # initdb refuses root: the Postgres harness runs it as postgres
  [iptables]=iptables          # kube-proxy on the real node
  [conntrack]=conntrack        # kube-proxy flushes stale UDP entries with it
  [debootstrap]=debootstrap    # image root file systems from Debian packages
  [shellcheck]=shellcheck      # make lint: actionlint checks the workflows' run: scripts with it
)

missing=()
for cmd in "${!wanted[@]}"; do
  command -v "${cmd}" >/dev/null 2>&1 || missing+=("${wanted[${cmd}]}")
done
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
# initdb is outside PATH in Debian's packages.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql-15)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

# Not every Debian release has PostgreSQL 15; the harness works with the release's own version.
if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && command -v apt-cache >/dev/null 2>&1 &&
  ! apt-cache show postgresql-15 >/dev/null 2>&1; then
  missing=("${missing[@]/postgresql-15/postgresql}")
fi

install_cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"

stop() {
  log "missing system packages: ${missing[*]}"
  log "$1"
  log "run this, then start again:"
  echo "    $2" >&2
  exit 1
}

if ! command -v apt-get >/dev/null 2>&1; then
  stop "this is not a Debian-like machine (no apt-get): install the equivalent packages" \
    "${install_cmd}"
fi
if [[ "${1:-}" == "--check" ]]; then
  stop "nothing was installed (--check)" "sudo sh -c '${install_cmd}'"
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    stop "installing needs root and sudo is not installed" "su -c '${install_cmd}'"
  fi
  # Without a terminal sudo can only work when it needs no password; find out now rather than
  # hang or fail halfway.
  if [[ ! -t 0 ]] && ! sudo -n true 2>/dev/null; then
    stop "installing needs root and sudo wants a password (no terminal to ask on)" \
      "sudo sh -c '${install_cmd}'"
  fi
  sudo=(sudo)
fi

log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
