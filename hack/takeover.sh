#!/usr/bin/env bash
# Takeover time of a follower (issue 10): two replicas of the release binary run against a fresh
# local control plane holding N annotated Services and N annotated ConfigMaps; once everything is
# issued and the follower has been standing by for a while, the leader is SIGKILLed (it cannot
# release the Lease), a new Service is created, and the script reports
#   - kill -> lease taken by the follower (bounded by the Lease duration, 15 s),
#   - lease taken -> the new Service's Secret exists (what warm caches save: no re-list),
#   - kill -> Secret.
# Usage: hack/takeover.sh [N] [path/to/service-ca]   (default 500, target/release/service-ca)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-500}
bin=${2:-target/release/service-ca}
[[ -x $bin ]] || cargo build --release -q -p service-ca
source hack/lib.sh
start_control_plane
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f s", b - a }'; }
k create namespace openshift-service-ca >/dev/null
k create namespace load >/dev/null
{
  for i in $(seq 1 "$n"); do
    cat <<EOF
---
apiVersion: v1
kind: Service
metadata:
  name: s$i
  namespace: load
  annotations:
    service.beta.openshift.io/serving-cert-secret-name: s$i-tls
spec:
  clusterIP: None
  ports: [{port: 443}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: c$i
  namespace: load
  annotations:
    service.beta.openshift.io/inject-cabundle: "true"
EOF
  done
} > "$work/load.yaml"
k create -f "$work/load.yaml" >/dev/null

replica() {
  local name=$1
  POD_NAME=$name RUST_LOG=warn "$bin" run --kubeconfig "$work/kubeconfig" \
    --admin-addr 127.0.0.1:0 >"$work/$name.log" 2>&1 &
  pids+=($!)
}
issued() { k get secrets -n load --no-headers 2>/dev/null | grep -c kubernetes.io/tls || true; }
holder() { k get lease -n openshift-service-ca -o jsonpath='{.items[0].spec.holderIdentity}' 2>/dev/null || true; }

replica replica-a
a=$!
for _ in $(seq 1 100); do [[ $(holder) == replica-a ]] && break; sleep 0.2; done
replica replica-b
start=$(now)
until [[ $(issued) -ge $n ]]; do sleep 1; done
echo "setup: $n Services issued by replica-a in $(elapsed "$start" "$(now)")"
sleep 10 # replica-b stands by with its watches running
kill -9 "$a"
killed=$(now)
k create service clusterip probe -n load --clusterip=None >/dev/null
k annotate service probe -n load service.beta.openshift.io/serving-cert-secret-name=probe-tls >/dev/null
until [[ $(holder) == replica-b ]]; do sleep 0.05; done
taken=$(now)
until k get secret probe-tls -n load >/dev/null 2>&1; do sleep 0.05; done
done_at=$(now)
echo "takeover: kill -> lease $(elapsed "$killed" "$taken"); lease -> new Secret $(elapsed "$taken" "$done_at"); kill -> new Secret $(elapsed "$killed" "$done_at")"
