#!/usr/bin/env bash
# `make stop`: stop the local control plane started by `make run` (its data stays in .local/).
set -euo pipefail
pidfile="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.local/testenv.pid"
if [[ -f "$pidfile" ]] && pid="$(cat "$pidfile")" && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  echo "stop: local control plane stopped"
else
  echo "stop: no local control plane running"
fi
rm -f "$pidfile"
