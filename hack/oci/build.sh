#!/usr/bin/env bash
# Builds the image tool (imagebuild, ./main.go) or crane, both from go-containerregistry pinned in
# hack/oci/go.mod, once into a cache outside the repository keyed by the hash of their inputs, and
# prints the binary's path as the last line of stdout. Progress goes to stderr. A module of its
# own, so changing it never invalidates the helm/promtool cache (hack/tools).
# Usage: hack/oci/build.sh imagebuild|crane
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tool="${1:-}"
case "$tool" in
  imagebuild) pkg=. ;;
  crane) pkg=github.com/google/go-containerregistry/cmd/crane ;;
  *) echo "usage: $0 imagebuild|crane" >&2; exit 2 ;;
esac
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/service-ca/oci"
inputs_hash="$(cd "$here" && { echo "$tool"; cat build.sh go.mod go.sum main.go; } | sha256sum | cut -c1-16)"
out="$cache_root/$inputs_hash"
if [[ -x "$out/$tool" ]]; then
  echo "$out/$tool"
  exit 0
fi
command -v go >/dev/null || { echo "oci: Go is required to build $tool" >&2; exit 1; }
mkdir -p "$out"
echo "oci: building $tool into $out..." >&2
start=$(date +%s)
( cd "$here" && go build -trimpath -ldflags="-s -w" -o "$out/$tool.tmp.$$" "$pkg" )
mv "$out/$tool.tmp.$$" "$out/$tool"
echo "oci: built $tool in $(( $(date +%s) - start ))s" >&2
echo "$out/$tool"
