#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licenses, bans and sources always; RustSec
# advisories when the advisory database can be fetched (it lives on GitHub, which a machine with
# only package-registry access cannot reach: the check then says so on one line and goes on).
#
# Installs the pinned cargo-deny into ~/.cargo/bin when it is missing (a few minutes, once per
# machine). DENY_ADVISORIES=require makes an unreachable database an error instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
DENY_VERSION=0.20.2
FETCH_TIMEOUT=${DENY_FETCH_TIMEOUT:-120}

installed="$("$CARGO" deny --version 2>/dev/null || true)"
if [[ "$installed" != "cargo-deny $DENY_VERSION" ]]; then
  echo "deny: installing cargo-deny $DENY_VERSION (found: ${installed:-none}); once per machine" >&2
  start=$SECONDS
  "$CARGO" install --locked --quiet cargo-deny --version "$DENY_VERSION"
  echo "deny: cargo-deny installed in $((SECONDS - start)) s" >&2
fi

checks=(licenses bans sources)
fetch_log="$(mktemp)"
trap 'rm -f "$fetch_log"' EXIT
if timeout "$FETCH_TIMEOUT" "$CARGO" deny fetch db >"$fetch_log" 2>&1; then
  checks=(advisories "${checks[@]}")
else
  status=$?
  reason="$(grep -v '^\s*$' "$fetch_log" | tail -n 1 | tr -s ' \t' ' ' | cut -c1-160)"
  [[ $status -eq 124 ]] && reason="no answer in ${FETCH_TIMEOUT} s"
  if [[ "${DENY_ADVISORIES:-}" == require ]]; then
    echo "deny: advisory database unreachable (${reason:-exit $status}) and DENY_ADVISORIES=require" >&2
    exit 1
  fi
  echo "advisories skipped: advisory database unreachable (${reason:-exit $status})"
fi

exec "$CARGO" deny check --hide-inclusion-graph "${checks[@]}"
