#!/usr/bin/env bash
# `make run`: with KUBECONFIG unset, start the local control plane (state in .local/, kept across
# runs) in the background, then run the controller in the foreground against it. Ctrl-C stops
# the controller and the control plane it started; `make stop` stops a control plane left running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
local_dir="$root/.local"
started_here=0

if [[ -z "${KUBECONFIG:-}" ]]; then
  testenv="$(bash testenv/build.sh)"
  kubectl="$(dirname "$testenv")/kubectl"
  mkdir -p "$local_dir"
  export KUBECONFIG="$local_dir/kubeconfig"
  if [[ -f "$local_dir/testenv.pid" ]] && kill -0 "$(cat "$local_dir/testenv.pid")" 2>/dev/null; then
    echo "run: local control plane already running (pid $(cat "$local_dir/testenv.pid"))"
  else
    echo "run: starting the local control plane (state in $local_dir/testenv, log in $local_dir/testenv.log)"
    : > "$local_dir/testenv.log"
    nohup "$testenv" up --data-dir "$local_dir/testenv" --kubeconfig "$KUBECONFIG" \
      </dev/null >>"$local_dir/testenv.log" 2>&1 &
    echo $! > "$local_dir/testenv.pid"
    started_here=1
    for _ in $(seq 1 600); do
      grep -q '^ready ' "$local_dir/testenv.log" && break
      kill -0 "$(cat "$local_dir/testenv.pid")" 2>/dev/null || { cat "$local_dir/testenv.log"; echo "run: control plane failed to start" >&2; exit 1; }
      sleep 0.2
    done
    grep '^ready ' "$local_dir/testenv.log"
  fi
  # The CA lives in openshift-service-ca (deploy/ creates it on a real cluster).
  "$kubectl" --kubeconfig "$KUBECONFIG" create namespace openshift-service-ca --dry-run=client -o yaml \
    | "$kubectl" --kubeconfig "$KUBECONFIG" apply -f - >/dev/null
  echo
  echo "  kubectl:    $kubectl"
  echo "  try:        $kubectl --kubeconfig $KUBECONFIG get svc -A"
  echo "  stop it:    make stop"
  echo
fi

stop_control_plane() {
  if [[ $started_here == 1 ]]; then bash "$root/hack/stop.sh"; fi
}
trap stop_control_plane EXIT
cargo build -p service-ca
"$root/target/debug/service-ca" run "$@"
