# Public entry points. Everything a newcomer or CI runs goes through these targets.
#   make demo    the local demo: a real control plane, the module's components, volumes exported and
#                downloaded (KEEP=1 leaves it running)
#   make test    every test: unit, integration, end-to-end on the local control plane, lint, images
#   make lint    cargo fmt --check, clippy -D warnings, module lint (dmt lint + helm renders)
#   make images  the controller, exporter and hooks images (OCI, built with umoci), then checked
#   make bench   benchmarks, printed side by side with their comparison points

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/storage-volume-data-manager/target
export CARGO_TERM_COLOR ?= never
KEEP ?= 0

.PHONY: demo test lint fmt-check clippy module-lint images images-check bench bench-exporter bench-proxy bench-scale crds testenv-up testenv-down setup build

setup:
	@e2e/setup.sh

build: setup
	cargo build --workspace --bins

demo: setup
	KEEP=$(KEEP) e2e/demo.sh

test: setup
	e2e/run-tests.sh
	SVDM_IMAGES=1 e2e/setup.sh
	hack/images.sh

lint: setup fmt-check clippy module-lint

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

module-lint:
	hack/module-lint.sh

# Static binaries into OCI images under .run/images/oci (no container engine), then hack/images-check.sh:
# layers and sizes, each entrypoint run chrooted from the unpacked image, one real action per image.
images: setup
	SVDM_IMAGES=1 e2e/setup.sh
	hack/images.sh

images-check:
	hack/images-check.sh

bench: bench-exporter bench-proxy bench-scale

# Exporter vs nginx vs Go net/http on the same files over loopback TLS (installs nginx-light).
bench-exporter: setup
	SVDM_BENCH=1 e2e/setup.sh
	bench/exporter.sh

# The simulated kube-proxy's forwarder vs a direct connection to the exporter (latency, throughput).
bench-proxy: setup
	bench/proxy.sh

# 300 DataExports at once on the local control plane: time to Ready/return, controller peak RSS.
bench-scale: setup
	bench/controller-scale.sh

crds:
	cargo run -q -p svdm-api --bin crdgen > crds/dataexports.yaml

testenv-up: setup
	e2e/testenv.sh up

testenv-down:
	e2e/testenv.sh down
