# service-ca: `make run` (local control plane + controller) and `make test` (everything).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

.PHONY: run stop test check-openssl deny lint unit e2e bench testenv build kubectl clean-local
.PHONY: tools monitoring-test image
.PHONY: fuzz soak

## Start the local control plane if no cluster is configured, then the controller against it.
run:
	@bash hack/run.sh

## Stop the local control plane started by `make run`.
stop:
	@bash hack/stop.sh

## Supply-chain checks, format check, clippy, unit tests and e2e tests against a real kube-apiserver
## (the release image too: `make image` first, then tests/image.rs runs it).
test: check-openssl deny lint tools monitoring-test
	@export SERVICE_CA_TESTENV_BIN="$$(bash testenv/build.sh)"; \
	  image="$$(CARGO=$(CARGO) bash hack/image.sh | tail -1)"; \
	  SERVICE_CA_IMAGE="$$image" $(CARGO) test --workspace --all-targets --no-fail-fast

## The PKI tests cross-check issued material with the openssl CLI and fail without it.
check-openssl:
	@command -v openssl >/dev/null || { \
	  echo "make test: the openssl CLI is required (the PKI tests cross-check with it)." >&2; \
	  echo "Install it with: apt-get install openssl   (.ci/run installs it when missing)" >&2; \
	  exit 1; }

## cargo deny (deny.toml): licenses, bans, sources; advisories when the database is reachable.
## Installs the pinned cargo-deny on first use.
deny:
	@CARGO=$(CARGO) bash hack/deny.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Unit tests only (no control plane).
unit:
	$(CARGO) test --workspace --lib --bins

## Criterion benchmarks (PKI) and the controller benchmark against a local control plane.
bench:
	$(CARGO) bench -p service-ca-pki --features bench-openssl
	bash hack/bench-controller.sh
	bash hack/bench-scale.sh

## Every cargo fuzz target (fuzz/) for FUZZ_SECONDS each (default 60); fails on a crash, whose
## input stays in fuzz/artifacts/<target>/. Installs the pinned cargo-fuzz on first use.
fuzz:
	@CARGO=$(CARGO) FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) bash hack/fuzz.sh

## Soak (not part of `make test`): SOAK_MINUTES (default 20) of churn, rotations and controller
## restarts against a local control plane with the release binary; RSS/CPU sampled, invariants
## checked at the end, summary printed (hack/soak.sh, docs/reliability.md).
soak:
	@CARGO=$(CARGO) SOAK_MINUTES=$(or $(SOAK_MINUTES),20) bash hack/soak.sh

## Build (or find in the cache) the local control plane binary and print its path.
testenv:
	@bash testenv/build.sh

## Print the path of the kubectl built with the control plane.
kubectl:
	@echo "$$(dirname "$$(bash testenv/build.sh)")/kubectl"

build:
	$(CARGO) build --release -p service-ca

## The release image without a container daemon: a static binary and an OCI image
## (target/image/oci/ and target/image/service-ca-oci.tar). Prints the reference@digest and the path.
image:
	@CARGO=$(CARGO) bash hack/image.sh

clean-local: stop
	rm -rf .local

## Build (or find in the cache) helm and promtool from hack/tools/go.mod and print their paths.
tools:
	@bash hack/tools/build.sh helm
	@bash hack/tools/build.sh promtool

## promtool: check the alerting rules and run their unit tests (deploy/monitoring/tests).
monitoring-test:
	@bash deploy/monitoring/test.sh
