# dynamic-ports: the one front door. `make help` lists the targets.
#
# Variables (override on the command line: `make images CONTAINER_ENGINE=podman`):
#   VERSION           image tag; read from [workspace.package] version in Cargo.toml
#   IMAGE_PREFIX      prepended to image names, e.g. ghcr.io/me/ (default: empty)
#   CONTAINER_ENGINE  docker or podman. Default docker; when it is not set and docker cannot
#                     reach a daemon but podman is installed, podman is used (with a note).
#   CONTAINERS_CONF   for podman only: when unset, scripts/containers.conf (runc, cgroupfs,
#                     ulimits that fit sandboxed machines; see that file).
#   KUBECTL           kubectl command for deploy/undeploy (default: kubectl; for the local
#                     cluster: KUBECTL="scripts/local-cluster.sh kubectl")
#   BENCH_ARGS        arguments for scripts/bench.sh, e.g. --quick

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-print-directory

VERSION := $(shell scripts/version.sh)
IMAGE_PREFIX ?=
KUBECTL ?= kubectl
MUSL_TARGET := x86_64-unknown-linux-musl
# Always the repo's own target/: the Dockerfiles COPY from there (a CARGO_TARGET_DIR set in
# the environment would put the binaries out of the build context).
RELEASE_DIR := target/$(MUSL_TARGET)/release
BINARIES := service-registry dynamic-port-server endpointslice-mirror
REGISTRY_IMAGE := $(IMAGE_PREFIX)service-registry:$(VERSION)
SERVER_IMAGE := $(IMAGE_PREFIX)dynamic-port-server:$(VERSION)
MIRROR_IMAGE := $(IMAGE_PREFIX)endpointslice-mirror:$(VERSION)

# Container engine: docker unless told otherwise, falling back to podman when docker has no
# daemon (as on the project's machines). Worked out once, and only by targets that use it.
ifeq ($(origin CONTAINER_ENGINE),undefined)
CONTAINER_ENGINE = $(eval CONTAINER_ENGINE := $(shell \
	if docker info >/dev/null 2>&1 || ! command -v podman >/dev/null 2>&1; then echo docker; \
	else echo "make: docker cannot reach a daemon; using podman (set CONTAINER_ENGINE to choose)" >&2; echo podman; fi))$(CONTAINER_ENGINE)
endif
# Prefix for engine commands: podman gets scripts/containers.conf unless CONTAINERS_CONF is set.
ENGINE_ENV = $(if $(filter podman,$(notdir $(CONTAINER_ENGINE))),CONTAINERS_CONF="$${CONTAINERS_CONF:-$(CURDIR)/scripts/containers.conf}")
ENGINE = $(ENGINE_ENV) $(CONTAINER_ENGINE)

.PHONY: help build test test-deps fmt-check clippy cargo-test validate smoke images smoke-images push \
	deploy undeploy e2e-cluster demo bench tools clean

help: ## List the targets
	@echo "dynamic-ports $(VERSION): make TARGET [CONTAINER_ENGINE=docker|podman] [IMAGE_PREFIX=registry/user/]"
	@echo
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  \1\t\2/' | expand -t 16

build: ## Static musl release binaries in target/x86_64-unknown-linux-musl/release/
	@# One cargo run per binary: built together, cargo would give the registry and the server
	@# the TLS features of the mirror's ureq too (features unify within one build).
	for b in $(BINARIES); do \
		env -u CARGO_TARGET_DIR CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target $(MUSL_TARGET) -p $$b --bin $$b; \
	done
	@ls -l $(addprefix $(RELEASE_DIR)/,$(BINARIES))

test: ## Every test: deps, fmt, clippy, tests, miri, validate, smoke, images, smoke-images, e2e-cluster
	@start=$$(date +%s); \
	if [[ -z $${PYTHON:-} ]] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
		export PYTHON=/usr/bin/python3; fi; \
	for t in test-deps fmt-check clippy cargo-test miri validate smoke images smoke-images e2e-cluster; do \
		s=$$(date +%s); echo; echo "===== make $$t"; \
		$(MAKE) $$t CONTAINER_ENGINE=$(CONTAINER_ENGINE) || { echo "===== FAILED: make $$t" >&2; exit 1; }; \
		echo "===== make $$t passed in $$(( $$(date +%s) - s ))s"; \
	done; \
	echo; echo "===== make test: all passed in $$(( $$(date +%s) - start ))s"

# A test never passes by skipping: what the tests drive (podman, runc, curl, Chromium,
# chromedriver, Prometheus, python3-venv) is installed first, or make test stops naming it.
test-deps: ## Install the Debian packages the tests need (as root), or name the missing ones
	scripts/install-test-deps.sh

fmt-check: ## cargo fmt --all --check
	cargo fmt --all --check

clippy: ## cargo clippy, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

cargo-test: ## cargo test --workspace, and the vendored tiny_http's own tests
	cargo test --workspace
	cargo test --manifest-path vendor/tiny_http/Cargo.toml

# Miri checks the allocator cache's unsafe code as its tests run. Tree Borrows, because Stacked
# Borrows cannot express an allocator that hands a freed block out again: Box narrows the
# pointer it frees to its own size (rust-lang/miri#2104), which Tree Borrows allows. Leaks are
# not errors: the cache keeps freed blocks for the life of the process by design.
miri: ## The small-block cache's tests under Miri (installs nightly with miri through rustup)
	rustup toolchain list | grep -q '^nightly' && rustup component list --toolchain nightly --installed | grep -q '^miri' || \
		rustup toolchain install nightly --profile minimal --component miri
	MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks" cargo +nightly miri test -p small-block-cache

validate: ## Validate the Kubernetes manifests (schema, selectors and ports, checkov)
	scripts/validate-manifests.sh

tools: ## Install the pinned manifest validators in .venv-tools/
	scripts/install-tools.sh

smoke: ## Registry and three servers as local processes: register, health-check, leave
	scripts/smoke.sh

images: build ## Build the images service-registry, dynamic-port-server and endpointslice-mirror (:VERSION)
	$(ENGINE) build -t $(REGISTRY_IMAGE) -f registry/Dockerfile .
	$(ENGINE) build -t $(SERVER_IMAGE) -f server/Dockerfile .
	$(ENGINE) build -t $(MIRROR_IMAGE) -f mirror/Dockerfile .
	@for i in $(REGISTRY_IMAGE) $(SERVER_IMAGE) $(MIRROR_IMAGE); do \
		echo "$$i: $$($(ENGINE) image inspect --format '{{.Size}}' $$i) bytes"; done

smoke-images: ## The smoke story with the images (host networking); run `make images` first
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) REGISTRY_IMAGE=$(REGISTRY_IMAGE) SERVER_IMAGE=$(SERVER_IMAGE) MIRROR_IMAGE=$(MIRROR_IMAGE) \
		$(ENGINE_ENV) scripts/smoke-images.sh

push: ## Push the images (set IMAGE_PREFIX to your registry, e.g. ghcr.io/me/)
	@if [[ -z "$(IMAGE_PREFIX)" ]]; then \
		echo "push: set IMAGE_PREFIX, e.g. make images push IMAGE_PREFIX=ghcr.io/me/" >&2; exit 2; fi
	$(ENGINE) push $(REGISTRY_IMAGE)
	$(ENGINE) push $(SERVER_IMAGE)
	$(ENGINE) push $(MIRROR_IMAGE)

# Image names come from kustomize (IMAGE_PREFIX and VERSION set them); see scripts/deploy.sh.
deploy: ## The token Secret (if missing), the registry and its Services, then the servers
	KUBECTL="$(KUBECTL)" IMAGE_PREFIX="$(IMAGE_PREFIX)" VERSION="$(VERSION)" scripts/deploy.sh deploy

undeploy: ## Delete what deploy created (the Secret stays)
	KUBECTL="$(KUBECTL)" IMAGE_PREFIX="$(IMAGE_PREFIX)" VERSION="$(VERSION)" scripts/deploy.sh undeploy

# Not part of `make test`: it needs root and builds Kubernetes once (~5 min, ~3 GB cached in
# /var/cache/dynamic-ports-cluster, or DP_CLUSTER_CACHE).
e2e-cluster: ## README's Kubernetes walk-through on a throwaway local cluster (root; scripts/local-cluster.sh)
	scripts/e2e-cluster.sh

demo: ## Run a registry and three servers locally (loopback) until Ctrl-C
	scripts/demo.sh

bench: ## The benchmark (scripts/bench.sh; BENCH_ARGS=--quick for a short run)
	scripts/bench.sh $(BENCH_ARGS)

clean: ## cargo clean, and remove the images of this VERSION if an engine has them
	cargo clean
	-@$(ENGINE) rmi $(REGISTRY_IMAGE) $(SERVER_IMAGE) $(MIRROR_IMAGE) >/dev/null 2>&1 || true
