#!/usr/bin/env bash
# Memory under a hostile tenant (issue 11): N Services and N annotated ConfigMaps, each carrying
# ~200 KiB of annotations the controller does not read, created in one namespace while the
# controller runs cluster-wide against the local control plane. The Services are headless (they
# need no ClusterIP, so the run measures the controller, not IP allocation). Reports the controller's peak RSS
# (VmHWM) before and after, and checks that it still issues a certificate afterwards.
# Usage: hack/hostile-tenant.sh [N] [path/to/service-ca]   (default 1000, target/release/service-ca)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-1000}
bin=${2:-target/release/service-ca}
[[ -x $bin ]] || cargo build --release -p service-ca >&2
source hack/lib.sh
start_control_plane
k create namespace openshift-service-ca >/dev/null
k create namespace tenant >/dev/null
"$bin" run --kubeconfig "$work/kubeconfig" --admin-addr 127.0.0.1:0 >"$work/controller.log" 2>&1 &
pid=$!
pids+=("$pid")
sleep 15
hwm() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
echo "before: RSS $(rss) KiB, peak $(hwm) KiB"
python3 - "$n" "$work/objs" <<'PY'
import json, os, sys
n, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out)
junk = {f"tenant.example/junk-{i}": "x" * 50_000 for i in range(4)}   # ~200 KiB
for b in range(0, n, 50):
    items = []
    for i in range(b, min(b + 50, n)):
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "tenant",
            "annotations": junk}, "spec": {"clusterIP": "None", "ports": [{"port": 443}]}})
        items.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "tenant",
            "annotations": {**junk, "service.beta.openshift.io/inject-cabundle": "true"}}})
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(f"{out}/{b:06}.json", "w"))
PY
start=$(date +%s)
for f in "$work"/objs/*.json; do k create -f "$f" >/dev/null; done
echo "created $n Services and $n annotated ConfigMaps (~200 KiB annotations each) in $(( $(date +%s) - start )) s"
sleep 20
echo "after:  RSS $(rss) KiB, peak $(hwm) KiB"
k -n tenant create service clusterip probe --tcp=443:8443 >/dev/null
k -n tenant annotate service probe service.beta.openshift.io/serving-cert-secret-name=probe-tls >/dev/null
for _ in $(seq 60); do k -n tenant get secret probe-tls >/dev/null 2>&1 && break; sleep 1; done
k -n tenant get secret probe-tls >/dev/null && echo "still issuing: probe-tls created"
echo "final:  RSS $(rss) KiB, peak $(hwm) KiB"
