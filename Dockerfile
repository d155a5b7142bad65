# syntax=docker/dockerfile:1

# Cake Agents images. One Dockerfile, three targets, each for linux/amd64 and linux/arm64:
#
#   control-plane    the agent (cgo for go-sqlite3) on a minimal glibc base, uid 65532
#   data-plane       OpenCode (the pinned npm release's platform binary) + bash, git, ripgrep,
#                    ca-certificates, curl; uid 1000; what a session pod's `opencode` container runs
#   data-plane-init  the agent binary + git, openssh-client, ca-certificates; uid 1000; the session
#                    pod's init container runs `agent session-init` from it
#
# Build (BuildKit / buildx; cross builds need no emulation: Go cross-compiles with a cross gcc and
# OpenCode is downloaded per target architecture):
#
#   docker buildx build --platform linux/amd64,linux/arm64 --target control-plane \
#     --build-arg VERSION=$(git describe --tags --always) --build-arg COMMIT=$(git rev-parse --short HEAD) \
#     -t REGISTRY/cake-agents:TAG .
#
# The images run with a read-only root filesystem: everything they write goes to volumes the pod
# mounts (the agent: /data and /tmp; OpenCode: HOME, TMPDIR, /workspace and /etc/opencode; see
# agent/sessions/podspec.go). test/dockerfile lints this file with BuildKit's parser and linter and
# checks the data-plane stage against the pod spec the agent really builds.

ARG GO_IMAGE=golang:1.26-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# The agent, built on the build machine for the target architecture. go-sqlite3 needs cgo, so a
# cross build uses Debian's cross gcc and libc for the target; the runtime base below has the same
# glibc (bookworm) the binary was linked against.
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS agent-build
ARG TARGETOS
ARG TARGETARCH
ARG BUILDARCH
RUN set -eux; \
    case "${TARGETARCH}" in \
      amd64) triple=x86_64-linux-gnu ;; \
      arm64) triple=aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}: build linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac; \
    if [ "${TARGETARCH}" != "${BUILDARCH}" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "gcc-$(echo "${triple}" | tr _ -)" "libc6-dev-${TARGETARCH}-cross"; \
      rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -eux; \
    case "${TARGETARCH}" in \
      amd64) triple=x86_64-linux-gnu ;; \
      arm64) triple=aarch64-linux-gnu ;; \
    esac; \
    cc=gcc; \
    if [ "${TARGETARCH}" != "${BUILDARCH}" ]; then cc="${triple}-gcc"; fi; \
    vpkg=github.com/cakeai/cake-agents/pkg/version; \
    CGO_ENABLED=1 CC="${cc}" GOOS="${TARGETOS}" GOARCH="${TARGETARCH}" \
      go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X ${vpkg}.Version=${VERSION} -X ${vpkg}.Commit=${COMMIT} -X ${vpkg}.Date=${DATE}" \
        -o /out/agent ./cmd/agent

# ---------------------------------------------------------------------------------------------
# OpenCode's self-contained binary for the target architecture. The opencode-ai wrapper package
# only picks one of its platform packages at install time, so take the platform package directly
# (npm pack verifies it against the registry's integrity hash). Node is not needed at run time.
# The registry has opencode-linux-arm64 only up to 1.18.18, hence a pin per architecture; the
# amd64 pin must equal OPENCODE_VERSION in hack/versions.env (test/dockerfile checks it).
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS opencode-fetch
ARG TARGETARCH
ARG OPENCODE_VERSION_AMD64=1.18.33
ARG OPENCODE_VERSION_ARM64=1.18.18
WORKDIR /fetch
RUN set -eux; \
    case "${TARGETARCH}" in \
      amd64) pkg=opencode-linux-x64; version="${OPENCODE_VERSION_AMD64}" ;; \
      arm64) pkg=opencode-linux-arm64; version="${OPENCODE_VERSION_ARM64}" ;; \
      *) echo "no OpenCode build for ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    npm pack --silent "${pkg}@${version}"; \
    tar -xzf "${pkg}-${version}.tgz"; \
    install -D -m 0755 package/bin/opencode /out/opencode; \
    rm -rf package ./*.tgz

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS control-plane
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    install -d -o 65532 -g 65532 -m 0750 /data
COPY --from=agent-build /out/agent /usr/local/bin/agent
# Non-root, numeric so runAsNonRoot can verify it. The chart mounts /data (SQLite) and /tmp.
USER 65532:65532
WORKDIR /data
EXPOSE 8080 8443
ENTRYPOINT ["agent"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS data-plane-init
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates git openssh-client; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 1000 opencode; \
    useradd --uid 1000 --gid 1000 --home-dir /home/opencode --create-home --shell /bin/bash opencode; \
    install -d -o 1000 -g 1000 /workspace /etc/opencode
COPY --from=agent-build /out/agent /usr/local/bin/agent
ENV HOME=/home/opencode \
    TMPDIR=/tmp \
    GIT_TERMINAL_PROMPT=0
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["agent"]
CMD ["session-init", "--help"]

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS data-plane
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends bash ca-certificates curl git openssh-client ripgrep; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 1000 opencode; \
    useradd --uid 1000 --gid 1000 --home-dir /home/opencode --create-home --shell /bin/bash opencode; \
    install -d -o 1000 -g 1000 /workspace /etc/opencode
COPY --from=opencode-fetch /out/opencode /usr/local/bin/opencode
# The same environment the session pod sets (agent/sessions/podspec.go), so `docker run` behaves
# like a pod, plus what keeps OpenCode offline-safe: no auto-update, no models.dev fetch, no
# sharing, and an unreachable npm registry so it never installs plugins in the background.
ENV HOME=/home/opencode \
    TMPDIR=/tmp \
    OPENCODE_CONFIG=/etc/opencode/opencode.json \
    OPENCODE_DISABLE_AUTOUPDATE=1 \
    OPENCODE_DISABLE_MODELS_FETCH=1 \
    OPENCODE_DISABLE_SHARE=1 \
    npm_config_registry=http://127.0.0.1:9/
# git asks the session's credentials only (agent/gitcred.Env): the file comes from the session's
# Secret when its owner has a token for the repository's host; without it git finds nothing.
ENV GIT_CONFIG_COUNT=2 \
    GIT_CONFIG_KEY_0=credential.helper \
    GIT_CONFIG_VALUE_0= \
    GIT_CONFIG_KEY_1=credential.helper \
    GIT_CONFIG_VALUE_1="!f() { test \"\$1\" = get && exec git credential-store --file='/etc/cake-agents/git/credentials' get; }; f"
USER 1000:1000
WORKDIR /workspace
EXPOSE 4096
CMD ["opencode", "serve", "--port", "4096", "--hostname", "127.0.0.1", "--print-logs"]
