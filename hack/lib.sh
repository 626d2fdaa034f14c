# Sourced by the hack/ scripts that run a throw-away local control plane (benchmarks, takeover,
# hostile tenant). After `start_control_plane`:
#   $testenv, $kubectl   the cached testenv binary and its kubectl,
#   $work                a scratch directory (removed on exit), kubeconfig in $work/kubeconfig,
#   pids                 processes killed on exit (append the ones you start),
#   k ...                kubectl against the control plane.

start_control_plane() {
  testenv="$(bash testenv/build.sh | tail -1)"
  kubectl="$(dirname "$testenv")/kubectl"
  work="$(mktemp -d)"
  pids=()
  trap stop_control_plane EXIT
  "$testenv" up --data-dir "$work/testenv" --kubeconfig "$work/kubeconfig" \
    >"$work/testenv.out" 2>"$work/testenv.err" &
  pids+=($!)
  for _ in $(seq 1 600); do grep -q '^ready ' "$work/testenv.out" && return 0; sleep 0.2; done
  echo "the local control plane did not become ready in 120 s; its log ends with:" >&2
  tail -n 20 "$work/testenv.err" >&2
  return 1
}

# SIGKILL: a controller that cannot release its Lease is what some scripts measure, and nothing
# in the scratch directory needs a clean shutdown.
stop_control_plane() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

k() { "$kubectl" --kubeconfig "$work/kubeconfig" "$@"; }
