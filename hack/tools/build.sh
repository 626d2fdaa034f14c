#!/usr/bin/env bash
# Builds a tool pinned in hack/tools/go.mod (helm, promtool) once into a cache outside the
# repository, keyed by the hash of its inputs, and prints the binary's path as the last line of
# stdout. Progress goes to stderr.   Usage: hack/tools/build.sh helm|promtool
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tool="${1:-}"
case "$tool" in
  helm) pkg=helm.sh/helm/v3/cmd/helm ;;
  promtool) pkg=github.com/prometheus/prometheus/cmd/promtool ;;
  *) echo "usage: $0 helm|promtool" >&2; exit 2 ;;
esac
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/service-ca/tools"
inputs_hash="$(cd "$here" && { echo "$tool"; cat build.sh go.mod go.sum; } | sha256sum | cut -c1-16)"
out="$cache_root/$inputs_hash"
if [[ -x "$out/$tool" ]]; then
  echo "$out/$tool"
  exit 0
fi
command -v go >/dev/null || { echo "tools: Go is required to build $tool" >&2; exit 1; }
mkdir -p "$out"
mod="$(cd "$here" && go list -m -f '{{.Path}}' all | grep -E '^(helm.sh/helm/v3|github.com/prometheus/prometheus)$' | grep -F "${pkg%%/cmd/*}" | head -1)"
version="$(cd "$here" && go list -m -f '{{.Version}}' "$mod")"
ldflags="-s -w"
case "$tool" in
  helm) ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version" ;;
  promtool)
    # v0.316.0 is Prometheus 3.16.0.
    pv="$(echo "$version" | sed -E 's/^v0\.([0-9])([0-9]+)\.([0-9]+).*/\1.\2.\3/')"
    ldflags+=" -X github.com/prometheus/common/version.Version=$pv" ;;
esac
echo "tools: building $tool $version ($pkg) into $out (the first build takes a few minutes)..." >&2
start=$(date +%s)
( cd "$here" && go build -trimpath -ldflags="$ldflags" -o "$out/$tool.tmp" "$pkg" ) &
build_pid=$!
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 30
  kill -0 "$build_pid" 2>/dev/null && echo "tools: still compiling $tool ($(( $(date +%s) - start ))s)..." >&2
done
wait "$build_pid"
mv "$out/$tool.tmp" "$out/$tool"
echo "tools: built $tool $version in $(( $(date +%s) - start ))s" >&2
echo "$out/$tool"
