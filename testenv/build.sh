#!/usr/bin/env bash
# Builds the local control plane (testenv: etcd + kube-apiserver + kube-controller-manager, and
# kubectl) once into a cache outside the repository, keyed by the hash of its inputs, and prints
# the binary's path as the last line of stdout. Progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/service-ca/testenv"
inputs_hash="$(cd "$here" && cat build.sh go.mod go.sum $(ls *.go | sort) | sha256sum | cut -c1-16)"
out="$cache_root/$inputs_hash"
if [[ -x "$out/testenv" && -e "$out/kubectl" ]]; then
  echo "$out/testenv"
  exit 0
fi
command -v go >/dev/null || { echo "testenv: Go is required to build the local control plane" >&2; exit 1; }
mkdir -p "$out"
echo "testenv: building kube-apiserver, kube-controller-manager, etcd and kubectl from the Kubernetes Go modules into $out (the first build takes several minutes)..." >&2
start=$(date +%s)
( cd "$here" && go mod download -x 2>&1 | grep -c '^# get' | sed 's/^/testenv: modules fetched: /' >&2 || true )
# Stamp the Kubernetes version the modules are pinned to (kubectl version, /version, discovery).
k8s_version="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="$(echo "$k8s_version" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
( cd "$here" && go build -ldflags="$ldflags" -o "$out/testenv.tmp" . ) &
build_pid=$!
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 30
  kill -0 "$build_pid" 2>/dev/null && echo "testenv: still compiling ($(( $(date +%s) - start ))s)..." >&2
done
wait "$build_pid"
mv "$out/testenv.tmp" "$out/testenv"
ln -sf testenv "$out/kubectl"
echo "testenv: built in $(( $(date +%s) - start ))s" >&2
echo "$out/testenv"
