#!/usr/bin/env bash
# Runs every cargo fuzz target under fuzz/ (or the ones named as arguments) for FUZZ_SECONDS
# each (default 60) and fails if any of them finds a crash; the crashing input stays in
# fuzz/artifacts/<target>/, where `make test` replays it too until it is fixed and moved into
# fuzz/corpus/<target>/ (docs/reliability.md, "Fuzzing").
#
# New inputs go to a scratch corpus (fuzz/target/corpus/<target>/, kept across runs); the
# committed corpus fuzz/corpus/<target>/ is only read. FUZZ_MERGE=1 afterwards adds to it the
# scratch inputs that reach new coverage (libFuzzer -merge=1).
#
# libFuzzer needs instrumentation flags that only nightly compilers accept; RUSTC_BOOTSTRAP=1
# lets the stable compiler accept them. Installs the pinned cargo-fuzz on first use into
# ${XDG_CACHE_HOME:-~/.cache}/service-ca/cargo-fuzz/<version>/ (about 3 minutes, once).
# FUZZ_SANITIZER=none skips AddressSanitizer (faster; the product code has no unsafe).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-address}
root="${XDG_CACHE_HOME:-$HOME/.cache}/service-ca/cargo-fuzz/$FUZZ_VERSION"

if [[ "$("$root/bin/cargo-fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $FUZZ_VERSION" ]]; then
  echo "fuzz: installing cargo-fuzz $FUZZ_VERSION into $root (once per machine)" >&2
  start=$SECONDS
  "$CARGO" install --locked --quiet cargo-fuzz --version "$FUZZ_VERSION" --root "$root"
  echo "fuzz: cargo-fuzz installed in $((SECONDS - start)) s" >&2
fi
export PATH="$root/bin:$PATH"
export RUSTC_BOOTSTRAP=1

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <("$CARGO" fuzz list)
fi
[[ ${#targets[@]} -gt 0 ]] || { echo "fuzz: no targets" >&2; exit 1; }

echo "fuzz: building ${#targets[@]} targets (sanitizer: $SANITIZER)" >&2
"$CARGO" fuzz build --sanitizer "$SANITIZER"

failed=()
summary=()
for target in "${targets[@]}"; do
  scratch="fuzz/target/corpus/$target"
  log="fuzz/target/$target.log"
  mkdir -p "$scratch" "fuzz/artifacts/$target"
  echo "fuzz: $target for ${SECONDS_PER_TARGET} s" >&2
  status=0
  "$CARGO" fuzz run --sanitizer "$SANITIZER" "$target" "$scratch" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -print_final_stats=1 >"$log" 2>&1 || status=$?
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
  summary+=("$(printf '%-16s %10s execs %7s execs/s  exit %s' "$target" \
    "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$status")")
  if [[ $status -ne 0 ]]; then
    failed+=("$target")
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 8 >&2 || true
    echo "fuzz: $target failed (exit $status); full log: $log; inputs: fuzz/artifacts/$target/" >&2
  fi
  if [[ "${FUZZ_MERGE:-}" == 1 && $status -eq 0 ]]; then
    "$CARGO" fuzz run --sanitizer "$SANITIZER" "$target" "fuzz/corpus/$target" "$scratch" -- \
      -merge=1 >"fuzz/target/$target.merge.log" 2>&1
  fi
done

printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
