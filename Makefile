# Sluice — see README.md. Every target works from a fresh machine: it installs and builds
# what it needs (Debian packages, Go-built control plane binaries cached in ~/.cache/sluice).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

TESTBED   := $(CURDIR)/.testbed
BIN_DIR    = $(shell bash hack/testbed/build-bins.sh)
KUBECONFIG ?= $(TESTBED)/kubeconfig
export KUBECONFIG
CARGO_TEST_FLAGS ?=

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

## --- The two commands -------------------------------------------------------------

.PHONY: demo
demo: testbed-up build ## Bring up everything locally and show events flowing
	bash hack/demo.sh

.PHONY: test
test: tools fmt-check clippy unit crds-check dockerfile-check chart-check e2e e2e-broker-3.10 ## fmt + clippy + every test tier, on both brokers
	@echo "make test: all tiers passed"

## --- Pieces ------------------------------------------------------------------------

.PHONY: build
build: ## Build the sluice binary and the test bed's pod runner
	cargo build --features e2e --bin sluice --bin sluice-podrunner

.PHONY: tools
tools: ## Check the toolchains (Rust, Go with GOTOOLCHAIN=local) before building anything
	@bash hack/check-tools.sh

.PHONY: dockerfile-check
dockerfile-check: ## The Dockerfile's build stage copies everything Cargo.toml needs (no Docker needed)
	bash hack/check-dockerfile.sh

.PHONY: fmt-check
fmt-check:
	cargo fmt --all -- --check

.PHONY: clippy
clippy:
	cargo clippy --all-targets --all-features -- -D warnings

.PHONY: unit
unit: ## Unit tests of the pure builders
	cargo test --lib --bins $(CARGO_TEST_FLAGS)

.PHONY: crds
crds: ## Regenerate crds/ and the chart's copy
	cargo run -q --bin sluice -- crdgen --out-dir crds
	rm -f charts/sluice/crds/*.yaml && cp crds/*.yaml charts/sluice/crds/

.PHONY: crds-check
crds-check: ## Fail when crds/ or the chart's copy is stale
	tmp=$$(mktemp -d) && cargo run -q --bin sluice -- crdgen --out-dir $$tmp \
	  && diff -r $$tmp crds && diff -r crds charts/sluice/crds \
	  || { echo "crds/ is stale: run 'make crds' and commit the result"; exit 1; }

.PHONY: chart-check
chart-check: install ## helm lint, and the rendered chart accepted by the real apiserver (dry run)
	"$(BIN_DIR)/helm" lint charts/sluice --strict
	"$(BIN_DIR)/helm" template sluice charts/sluice -n sluice-system --set broker.create=true \
	  --set-string broker.uri='amqp://u:p@rabbitmq:5672/%2f' \
	  | "$(BIN_DIR)/kubectl" apply --dry-run=server -f - >/dev/null
	"$(BIN_DIR)/helm" install sluice charts/sluice -n sluice-system --dry-run=client | python3 hack/check-notes.py
	@echo "chart-check: ok"

.PHONY: testbed-up
testbed-up: tools ## Start RabbitMQ (4.x; SLUICE_BROKER=3.10 for 3.10), the control plane and Prometheus (idempotent)
	bash hack/testbed/deps.sh
	bash hack/testbed/rabbitmq.sh up
	bash hack/testbed/controlplane.sh up
	bash hack/testbed/prometheus.sh up

.PHONY: testbed-down
testbed-down: ## Stop the controller, RabbitMQ, the control plane and Prometheus
	bash hack/testbed/stop-controller.sh
	bash hack/testbed/controlplane.sh down
	bash hack/testbed/rabbitmq.sh down
	bash hack/testbed/prometheus.sh down

.PHONY: install
install: testbed-up ## Install the CRDs and the chart (0 replicas) into the test bed
	KUBECONFIG=$(TESTBED)/kubeconfig bash hack/testbed/install.sh

.PHONY: run
run: install build ## Run the controller in the foreground against the test bed, with the pod runner
	bash hack/testbed/stop-controller.sh
	bash hack/testbed/run.sh

.PHONY: e2e
e2e: install ## End-to-end tests against the test bed (real broker, real control plane)
	bash hack/testbed/stop-controller.sh
	SLUICE_BIN_DIR="$(BIN_DIR)" SLUICE_TESTBED=$(TESTBED) \
	  cargo test --features e2e --test e2e $(CARGO_TEST_FLAGS) -- --test-threads=1

# The broker-facing suites (topics, Subscriptions, delivery, broker faults) again on the oldest
# RabbitMQ we support, Debian 12's 3.10.8. The next `make testbed-up` switches back to 4.x.
BROKER_SUITES := event_topic:: subscription:: dispatcher:: broker_faults::

.PHONY: e2e-broker-3.10
e2e-broker-3.10: install ## The broker-facing e2e suites on RabbitMQ 3.10.8
	bash hack/testbed/stop-controller.sh
	SLUICE_BROKER=3.10 bash hack/testbed/rabbitmq.sh up
	# SLUICE_BROKER reaches the tests too: the broker-fault tests restart the broker.
	SLUICE_BROKER=3.10 SLUICE_BIN_DIR="$(BIN_DIR)" SLUICE_TESTBED=$(TESTBED) \
	  cargo test --features e2e --test e2e $(CARGO_TEST_FLAGS) -- --test-threads=1 $(BROKER_SUITES)

.PHONY: e2e-kind
e2e-kind: ## The same e2e suite with a kind cluster as the control plane (needs Docker)
	bash hack/kind.sh

.PHONY: bench
bench: install ## Performance suite (README, "Performance"), printed as a table with ratios
	bash hack/testbed/stop-controller.sh
	SLUICE_BIN_DIR="$(BIN_DIR)" SLUICE_TESTBED=$(TESTBED) cargo bench --features e2e --bench controller --bench dispatcher
