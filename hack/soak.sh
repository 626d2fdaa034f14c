#!/usr/bin/env bash
# Soak (issue 11, docs/reliability.md): SOAK_MINUTES (default 20) of churn against a local control
# plane with the release binary: Services created, deleted and annotation-edited, serving Secrets
# deleted, ConfigMaps created and annotated for injection, a forced CA rotation every 100 s, a
# controller restart every 150 s (SIGTERM and SIGKILL in turn); RSS and CPU sampled every 5 s;
# every invariant of the fault tests checked at the end (crates/service-ca/tests/soak.rs).
# Prints a summary; the controller's log and the summary stay in SOAK_DIR
# (default target/soak/<time>). SOAK_SEED replays the same churn.
# Usage: make soak [SOAK_MINUTES=20]   (not part of make test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-$PWD/target}
export SOAK_MINUTES=${SOAK_MINUTES:-20}
export SERVICE_CA_TESTENV_BIN=${SERVICE_CA_TESTENV_BIN:-$(bash testenv/build.sh | tail -1)}
"$CARGO" build --release -p service-ca >&2
export SERVICE_CA_BIN=$target/release/service-ca
export SOAK_DIR=${SOAK_DIR:-$target/soak/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$SOAK_DIR"
echo "soak: ${SOAK_MINUTES} min with $SERVICE_CA_BIN; output in $SOAK_DIR" >&2
"$CARGO" test -p service-ca --test soak -- --ignored --nocapture --exact soak 2>&1 \
  | grep -v '^[IWE][0-9]\{4\} ' | tee "$SOAK_DIR/summary.log"
