#!/usr/bin/env bash
# Builds the OpenShift fixture generator (openshift/library-go's crypto plus a mirror of
# openshift/service-ca-operator's CA manager, signer and injector; see README.md) once into a cache
# outside the repository, keyed by the hash of its inputs, and prints the binary's path as the last
# line of stdout. Progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/service-ca/openshift-fixtures"
inputs_hash="$(cd "$here" && cat build.sh go.mod go.sum $(ls *.go | sort) | sha256sum | cut -c1-16)"
out="$cache_root/$inputs_hash"
if [[ -x "$out/openshift-fixtures" ]]; then
  echo "$out/openshift-fixtures"
  exit 0
fi
command -v go >/dev/null || { echo "openshift-fixtures: Go is required to build the fixture generator" >&2; exit 1; }
mkdir -p "$out"
echo "openshift-fixtures: building the fixture generator into $out..." >&2
start=$(date +%s)
( cd "$here" && go mod download -x 2>&1 | grep -c '^# get' | sed 's/^/openshift-fixtures: modules fetched: /' >&2 || true )
( cd "$here" && go build -ldflags="-s -w" -o "$out/openshift-fixtures.tmp" . )
mv "$out/openshift-fixtures.tmp" "$out/openshift-fixtures"
echo "openshift-fixtures: built in $(( $(date +%s) - start ))s" >&2
echo "$out/openshift-fixtures"
