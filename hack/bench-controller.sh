#!/usr/bin/env bash
# Controller benchmark (part of `make bench`): runs the release binary against a fresh local
# control plane and measures
#   - idle RSS after start-up,
#   - 200 annotated Services created at once: time until all 200 Secrets exist, peak RSS,
#   - 1,000 annotated ConfigMaps across 50 namespaces: time until all are injected, peak RSS,
#   - RSS after 2,000 unrelated 8 KiB Secrets and ConfigMaps (must stay flat: metadata-only watches).
# Prints one line per measurement; numbers go into docs/benchmarks.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source hack/lib.sh
cargo build --release -q -p service-ca
start_control_plane
grep '^ready ' "$work/testenv.out" | sed 's/^/control plane: /'
k create namespace openshift-service-ca >/dev/null

target/release/service-ca run --kubeconfig "$work/kubeconfig" --admin-addr 127.0.0.1:0 \
  >"$work/controller.log" 2>&1 &
ctl=$!
pids+=("$ctl")
rss() { awk '/VmRSS/ {print $2}' "/proc/$ctl/status"; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$ctl/status"; }
until k -n openshift-service-ca get configmap signing-cabundle >/dev/null 2>&1; do sleep 0.2; done
sleep 2
echo "idle: RSS $(rss) KiB"

now_ms() { date +%s%3N; }
wait_count() { # command expected
  local cmd="$1" want="$2" got
  while true; do
    got="$(eval "$cmd" 2>/dev/null || echo 0)"
    [[ "$got" -ge "$want" ]] && return 0
    sleep 0.5
  done
}

k create namespace burst >/dev/null
for i in $(seq 1 200); do
  cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: svc-$i, namespace: burst, annotations: {service.beta.openshift.io/serving-cert-secret-name: svc-$i-tls}}
spec: {ports: [{port: 443}], selector: {app: svc-$i}}
EOF
done >"$work/services.yaml"
start=$(now_ms)
k apply -f "$work/services.yaml" >/dev/null
applied=$(( $(now_ms) - start ))
wait_count "k -n burst get secrets -l app.kubernetes.io/managed-by=service-ca --no-headers | wc -l" 200
echo "200 services: all secrets issued in $(( $(now_ms) - start )) ms from the first create (kubectl apply itself took ${applied} ms); peak RSS $(hwm) KiB"

for n in $(seq 1 50); do
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata: {name: inject-$n}"
done >"$work/namespaces.yaml"
k apply -f "$work/namespaces.yaml" >/dev/null
for n in $(seq 1 50); do
  for i in $(seq 1 20); do
    cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm-$i, namespace: inject-$n, annotations: {service.beta.openshift.io/inject-cabundle: "true"}}
EOF
  done
done >"$work/configmaps.yaml"
start=$(now_ms)
k apply -f "$work/configmaps.yaml" >/dev/null
applied=$(( $(now_ms) - start ))
wait_count "k get configmaps -A -o custom-columns=C:.data.service-ca\\\\.crt --no-headers | grep -c BEGIN" 1000
echo "1000 configmaps in 50 namespaces: all injected in $(( $(now_ms) - start )) ms from the first create (kubectl apply itself took ${applied} ms); peak RSS $(hwm) KiB"

before=$(rss)
payload="$(head -c 6000 /dev/urandom | base64 -w0)"
k create namespace unrelated >/dev/null
for i in $(seq 1 1000); do
  cat <<EOF
---
apiVersion: v1
kind: Secret
metadata: {name: s-$i, namespace: unrelated}
data: {blob: "$payload"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c-$i, namespace: unrelated}
binaryData: {blob: "$payload"}
EOF
done >"$work/unrelated.yaml"
k apply -f "$work/unrelated.yaml" >/dev/null
sleep 5
echo "2000 unrelated 8 KiB Secrets+ConfigMaps: RSS before ${before} KiB, after $(rss) KiB"
