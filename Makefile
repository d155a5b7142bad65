# Cake Agents — `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT      := $(abspath .)
CACHE_DIR ?= $(ROOT)/.cache
BIN_DIR   := $(ROOT)/bin
TOOLS_BIN := $(CACHE_DIR)/tools/bin
export CACHE_DIR

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VPKG    := github.com/cakeai/cake-agents/pkg/version
LDFLAGS := -s -w -X $(VPKG).Version=$(VERSION) -X $(VPKG).Commit=$(COMMIT) -X $(VPKG).Date=$(DATE)

GO_TEST_FLAGS ?= -race -count=1
TESTCLUSTER   := $(BIN_DIR)/testcluster

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Build
.PHONY: deps
deps: ## Install the Debian packages the build, tests and demo need (does nothing when present).
	hack/install-deps.sh

.PHONY: build
build: $(BIN_DIR)/kubectl-agents $(BIN_DIR)/agent ## Build the plugin (CGO-free) and the agent (cgo, for go-sqlite3).

.PHONY: $(BIN_DIR)/kubectl-agents
$(BIN_DIR)/kubectl-agents:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/kubectl-agents

.PHONY: $(BIN_DIR)/agent
$(BIN_DIR)/agent:
	CGO_ENABLED=1 go build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/agent

.PHONY: $(TESTCLUSTER)
$(TESTCLUSTER):
	go build -o $@ ./internal/testcluster/cmd/testcluster

.PHONY: images
images: ## Build every container image without Docker (root, debootstrap) into $(CACHE_DIR)/images.
	hack/build-images.sh

##@ Test
.PHONY: test
# deps comes first so a missing package stops the run before the long cluster build.
test: deps build cluster-binaries ## Run every test tier (unit, integration on a real local cluster, e2e).
	hack/test.sh all

.PHONY: test-unit
test-unit: ## Run the fast unit tests only (no cluster, no database server).
	hack/test.sh unit

.PHONY: bench
bench: deps build cluster-binaries ## Run the benchmarks and print ratios against peers measured in the same run.
	hack/bench.sh

##@ Lint
.PHONY: lint
lint: $(BIN_DIR)/agent ## gofmt, go vet, golangci-lint, the dependency rules (plugin CGO-free, agent with cgo), helm lint --strict and helm-unittest.
	hack/lint.sh

##@ Local cluster
.PHONY: cluster-binaries
cluster-binaries: ## Build (once, cached) etcd, kube-apiserver, controller-manager, scheduler, kubectl and kwok.
	hack/build-cluster.sh all

.PHONY: cluster-up
cluster-up: cluster-binaries $(TESTCLUSTER) ## Start the local test cluster and print how to use it.
	$(TESTCLUSTER) up

.PHONY: cluster-down
cluster-down: $(TESTCLUSTER) ## Stop the local test cluster.
	$(TESTCLUSTER) down

.PHONY: demo
demo: deps build cluster-binaries ## Bring up a local cluster with the agent and a demo session you can attach to.
	hack/demo.sh

.PHONY: clean
clean: ## Remove build outputs (keeps the cached cluster and tools; `make distclean` removes those too).
	-$(TESTCLUSTER) down 2>/dev/null
	rm -rf $(BIN_DIR) dist test/artifacts

.PHONY: distclean
distclean: clean ## Also remove cached tools and cluster binaries.
	rm -rf $(CACHE_DIR)

##@ Release
.PHONY: release-snapshot
# goreleaser reads the commit only when `git ls-remote --get-url` answers: a clone without a
# remote gets the project's URL through git's environment config (nothing is written).
RELEASE_GIT_ENV := $(if $(shell git remote 2>/dev/null),,GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=remote.origin.url GIT_CONFIG_VALUE_0=https://github.com/cakeai/cake-agents.git)
CHART_VERSION := $(shell sed -n 's/^version: *//p' charts/cake-agents/Chart.yaml)
# The next release's version (the chart's) marked as a snapshot of this commit.
SNAPSHOT_VERSION ?= $(CHART_VERSION)-snapshot-$(COMMIT)
# Where the snapshot's chart says the project's images are (registry.project); empty: unset.
RELEASE_REGISTRY ?=
RELEASETOOL := go run ./internal/release/cmd/releasetool
release-snapshot: ## Build offline what a release publishes into dist/: plugin archives, checksums, krew manifest (agents.yaml), chart package (chart/).
	GORELEASER="$$(hack/tools.sh goreleaser)"; SNAPSHOT_VERSION=$(SNAPSHOT_VERSION) $(RELEASE_GIT_ENV) "$${GORELEASER}" release --snapshot --clean
	$(RELEASETOOL) krew-manifest -tag v$(SNAPSHOT_VERSION) -dist dist -o dist/agents.yaml
	"$$(hack/tools.sh validate-krew-manifest)" -manifest dist/agents.yaml -skip-install
	$(RELEASETOOL) package-chart -version $(SNAPSHOT_VERSION) -changes Unreleased -registry "$(RELEASE_REGISTRY)" -o dist/chart
	@echo "dist/: $$(cd dist && ls *.tar.gz *.zip checksums.txt agents.yaml chart/*.tgz | tr '\n' ' ')"
