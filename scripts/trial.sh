#!/usr/bin/env bash
# Run trial with the given arguments, then print its result as one plain line,
# "trial: N passed, N failed, N skipped", which CI logs can be read by.
# Exits with trial's own status.
#
# With QUEUEY_KNOWN_SKIPS=FILE (test ids, one a line, # comments), a skipped
# test that FILE does not list is reported and fails the run: a test that
# quietly stops running is as bad as one that fails. scripts/run-tests.sh
# gives tests/known_skips.txt; scripts/run-cluster-tests.sh gives /dev/null.
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

# The ids of the skipped tests, from trial's closing report: in each [SKIPPED]
# block (between two rules), the lines after its last empty line.
skipped_ids() {
    awk '
        function flush(   i, last) {
            if (skipping) {
                last = 0
                for (i = 1; i <= n; i++) if (lines[i] == "") last = i
                for (i = last + 1; i <= n; i++) if (lines[i] ~ /^[A-Za-z_][A-Za-z0-9_.]*$/) print lines[i]
            }
            skipping = 0; n = 0
        }
        (/^=+$/ || /^-+$/) && length($0) >= 70 { flush(); next }
        $0 == "[SKIPPED]" { skipping = 1; next }
        skipping { lines[++n] = $0 }
        END { flush() }
    ' "$log" | sort -u
}

if [[ -n "${QUEUEY_KNOWN_SKIPS:-}" ]]; then
    unlisted=$(comm -23 <(skipped_ids) <(grep -vE '^[[:space:]]*(#|$)' "$QUEUEY_KNOWN_SKIPS" | sort -u))
    if [[ -n "$unlisted" ]]; then
        echo "trial: $(wc -l <<<"$unlisted") skipped test(s) not listed in $QUEUEY_KNOWN_SKIPS:"
        sed 's/^/trial:   /' <<<"$unlisted"
        status=1
    elif ((skipped)); then
        echo "trial: every skipped test is listed in $QUEUEY_KNOWN_SKIPS"
    fi
fi
echo "trial: $passed passed, $failed failed, $skipped skipped"
exit "$status"
