#!/usr/bin/env bash
# Run trial with the given arguments, then print its result as one plain line,
# "trial: N passed, N failed, N skipped", which CI logs can be read by.
# Exits with trial's own status.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$root/.venv/bin/trial" "$@" | tee "$log"
status=${PIPESTATUS[0]}
summary=$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1)
count() { local n; n=$(grep -oE "\b$1=[0-9]+" <<<"$summary" | head -n 1 | cut -d= -f2); echo "${n:-0}"; }
passed=$(count successes)
failed=$(( $(count failures) + $(count errors) + $(count unexpectedSuccesses) ))
skipped=$(count skips)
echo "trial: $passed passed, $failed failed, $skipped skipped"
exit "$status"
