#!/usr/bin/env bash
# Scale benchmark (part of `make bench`, issue 15): the release binary, cluster-wide, against a
# fresh local control plane.
#   1. cold start: SCALE_SERVICES (default 2000) annotated Services in 20 namespaces exist before
#      the controller starts; time and controller CPU until every Secret exists; the floor
#      (N x mean RSA-2048 key generation / cores, KEYGEN_MEAN_MS, default from docs/benchmarks.md);
#   2. idle: controller CPU over 30 s with nothing to do (pool full);
#   3. a burst of 50 Services created back to back, create -> Secret (served from the pool);
#   4. one annotated ConfigMap at a time, create -> bundle readable (tight GET loop);
#   5. SCALE_CONFIGMAPS (default 1000) annotated ConfigMaps, then a forced CA rotation: time until
#      every ConfigMap holds the new bundle, and until every Service is signed by the new CA.
# API requests are counted with the API server's own apiserver_request_total (all clients: the
# script's polling is LIST only, so LIST and WATCH are reported apart from the writes and GETs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n_svc=${SCALE_SERVICES:-2000}
n_cm=${SCALE_CONFIGMAPS:-1000}
keygen_ms=${KEYGEN_MEAN_MS:-52}
source hack/lib.sh
cargo build --release -q -p service-ca
cargo build --release -q -p service-ca-testing --example latency
latency="$root/target/release/examples/latency"
start_control_plane
now_ms() { date +%s%3N; }
tck=$(getconf CLK_TCK)
cpu_s() { awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
# apiserver_request_total summed by verb and resource, for the resources the controller touches.
requests() {
  k get --raw /metrics | awk '
    /^apiserver_request_total\{/ {
      verb = $0; sub(/.*verb="/, "", verb); sub(/".*/, "", verb)
      res = $0; sub(/.*[{,]resource="/, "", res); sub(/".*/, "", res)
      if (res ~ /^(secrets|services|configmaps|events|leases)$/) { sum[verb " " res] += $NF }
    }
    END { for (k in sum) print k, sum[k] }' | sort
}
# Difference of two `requests` snapshots: "verb resource count" lines with a non-zero change.
request_diff() {
  awk 'NR == FNR { before[$1 " " $2] = $3; next }
       { d = $3 - before[$1 " " $2]; if (d > 0) printf "%s %s %d\n", $1, $2, d }' "$1" "$2"
}
per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
wait_for() { # description command expected
  local what="$1" cmd="$2" want="$3" got deadline=$(( $(date +%s) + 900 ))
  while true; do
    got="$(eval "$cmd" 2>/dev/null || echo 0)"
    [[ "$got" -ge "$want" ]] && return 0
    if [[ $(date +%s) -gt $deadline ]]; then echo "bench-scale: $what: $got of $want after 900 s" >&2; exit 1; fi
    sleep 1
  done
}

k create namespace openshift-service-ca >/dev/null
echo "== cold start: $n_svc Services exist, then the controller starts"
per_ns=$(( (n_svc + 19) / 20 ))
for n in $(seq 1 20); do
  echo "---"; echo "apiVersion: v1"; echo "kind: Namespace"; echo "metadata: {name: scale-$n}"
  for i in $(seq 1 "$per_ns"); do
    [[ $(( (n - 1) * per_ns + i )) -le $n_svc ]] || break
    cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: svc-$i, namespace: scale-$n, annotations: {service.beta.openshift.io/serving-cert-secret-name: svc-$i-tls}}
spec: {ports: [{port: 443}]}
EOF
  done
done >"$work/services.yaml"
k create -f "$work/services.yaml" >/dev/null
requests >"$work/req0"
start=$(now_ms)
target/release/service-ca run --kubeconfig "$work/kubeconfig" --admin-addr 127.0.0.1:0 \
  >"$work/controller.log" 2>&1 &
ctl=$!
pids+=("$ctl")
count_secrets='k get secrets -A -l app.kubernetes.io/managed-by=service-ca --no-headers | wc -l'
wait_for "cold start" "$count_secrets" "$n_svc"
cold_ms=$(( $(now_ms) - start ))
cold_cpu=$(cpu_s "$ctl")
requests >"$work/req1"
request_diff "$work/req0" "$work/req1" >"$work/cold.req"
writes=$(awk '$1 !~ /^(LIST|WATCH)$/ && $2 != "leases" && $2 != "events" { s += $3 } END { print s + 0 }' "$work/cold.req")
floor_ms=$(awk -v n="$n_svc" -v m="$keygen_ms" -v c="$(nproc)" 'BEGIN { printf "%d", n * m / c }')
echo "cold start: $n_svc Secrets in $cold_ms ms, controller CPU ${cold_cpu} s ($(per "$(awk -v c="$cold_cpu" 'BEGIN{print c*1000}')" "$n_svc") ms per certificate); floor $n_svc x ${keygen_ms} ms / $(nproc) cores = ${floor_ms} ms (ratio $(per "$cold_ms" "$floor_ms")); peak RSS $(awk '/VmHWM/ {print $2}' /proc/$ctl/status) KiB"
echo "cold start requests (non-LIST/WATCH on Secrets/Services/ConfigMaps): $writes, $(per "$writes" "$n_svc") per certificate"
sed 's/^/  /' "$work/cold.req"

echo "== idle"
sleep 5
c0=$(cpu_s "$ctl")
sleep 30
c1=$(cpu_s "$ctl")
echo "idle 30 s: controller CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }') s; RSS $(awk '/VmRSS/ {print $2}' /proc/$ctl/status) KiB"

echo "== burst of 50 Services (warm, pool full)"
k create namespace burst >/dev/null
sleep 2
"$latency" "$work/kubeconfig" burst burst 50

echo "== one annotated ConfigMap at a time (x50)"
k create namespace probe >/dev/null
"$latency" "$work/kubeconfig" configmap probe 50

echo "== $n_cm annotated ConfigMaps, then a forced CA rotation"
per_ns=$(( (n_cm + 19) / 20 ))
for n in $(seq 1 20); do
  for i in $(seq 1 "$per_ns"); do
    [[ $(( (n - 1) * per_ns + i )) -le $n_cm ]] || break
    cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm-$i, namespace: scale-$n, annotations: {service.beta.openshift.io/inject-cabundle: "true"}}
EOF
  done
done >"$work/configmaps.yaml"
k create -f "$work/configmaps.yaml" >/dev/null
# sha256 prefix of a bundle text, the same way for the published and the injected copies.
bundle_hashes() { # stdin: `kubectl get configmaps -o json`; prints the hash of each injected scale-* bundle
  python3 -c '
import hashlib, json, sys
for cm in json.load(sys.stdin)["items"]:
    b = (cm.get("data") or {}).get("service-ca.crt")
    if cm["metadata"]["namespace"].startswith("scale-") and b is not None:
        print(hashlib.sha256(b.encode()).hexdigest()[:16])'
}
bundle_count() { # how many injected ConfigMaps in scale-* hold the bundle with hash $1
  k get configmaps -A -o json | bundle_hashes | grep -c "^$1" || true
}
published_hash() {
  k -n openshift-service-ca get configmap signing-cabundle -o json |
    python3 -c 'import hashlib, json, sys; print(hashlib.sha256(json.load(sys.stdin)["data"]["ca-bundle.crt"].encode()).hexdigest()[:16])'
}
old_bundle="$(published_hash)"
wait_for "first injection" "bundle_count $old_bundle" "$n_cm"
secret_versions() { # "namespace/name resourceVersion" of every issued serving Secret in scale-*
  k get secrets -A -l app.kubernetes.io/managed-by=service-ca -o jsonpath='{range .items[*]}{.metadata.namespace}{"/"}{.metadata.name}{" "}{.metadata.resourceVersion}{"\n"}{end}' | grep '^scale-' || true
}
secret_versions >"$work/versions-before"
sleep 3
requests >"$work/req2"
c0=$(cpu_s "$ctl")
start=$(now_ms)
k -n openshift-service-ca annotate secret signing-key service-ca.operators.openshift.io/force-rotation=bench >/dev/null
until new_bundle="$(published_hash)" && [[ $new_bundle != "$old_bundle" ]]; do sleep 0.2; done
wait_for "re-injection" "bundle_count $new_bundle" "$n_cm"
cm_ms=$(( $(now_ms) - start ))
resigned_count() { # scale-* serving Secrets rewritten since the rotation (a rotated CA keeps its subject)
  secret_versions | awk 'NR == FNR { before[$1] = $2; next } ($1 in before) && before[$1] != $2 { n++ } END { print n + 0 }' "$work/versions-before" -
}
wait_for "re-issue" resigned_count "$n_svc"
svc_ms=$(( $(now_ms) - start ))
requests >"$work/req3"
request_diff "$work/req2" "$work/req3" >"$work/rotation.req"
cm_writes=$(awk '$2 == "configmaps" && $1 !~ /^(LIST|WATCH)$/ { s += $3 } END { print s + 0 }' "$work/rotation.req")
echo "rotation: $n_cm ConfigMaps hold the new bundle after $cm_ms ms; all $n_svc serving Secrets re-issued after $svc_ms ms; controller CPU $(awk -v a="$c0" -v b="$(cpu_s "$ctl")" 'BEGIN { printf "%.2f", b - a }') s; peak RSS $(awk '/VmHWM/ {print $2}' /proc/$ctl/status) KiB"
echo "rotation requests on ConfigMaps (non-LIST/WATCH, includes the CA's own bundle ConfigMap): $cm_writes, $(per "$cm_writes" "$n_cm") per injection"
sed 's/^/  /' "$work/rotation.req"
