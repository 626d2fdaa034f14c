#!/usr/bin/env bash
# Checks and unit-tests the alerts (`make monitoring-test`): promtool (built by hack/tools/build.sh)
# checks the rules of prometheusrule.yaml (its `spec:`, a plain rule file) and runs every test in
# tests/ against them; the dashboard must be valid JSON.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
promtool="${PROMTOOL:-$(bash "$here/../../hack/tools/build.sh" promtool | tail -1)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The PrometheusRule's spec, un-indented: everything after the top-level `spec:` line.
awk 'started { sub(/^  /, ""); print } /^spec:/ { started = 1 }' "$here/prometheusrule.yaml" \
  > "$work/rules.yaml"
grep -q '^groups:' "$work/rules.yaml" || { echo "monitoring: no spec.groups in prometheusrule.yaml" >&2; exit 1; }
"$promtool" check rules "$work/rules.yaml"
cp "$here"/tests/*.yaml "$work/"
( cd "$work" && "$promtool" test rules $(cd "$here/tests" && ls *.yaml | sort) )
"$promtool" --version 2>&1 | head -1 >&2
# The dashboard: valid JSON (its queries are checked against metrics.rs by tests/helm.rs).
if command -v python3 >/dev/null; then
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$here/dashboard.json"
fi
echo "monitoring: rules and dashboard OK" >&2
