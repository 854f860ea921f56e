#!/usr/bin/env bash
# Run the whole test suite against real services: starts Cassandra (and ZooKeeper,
# once qdo needs it) with the project's own scripts, runs trial, stops them again.
# Set QUEUEY_TEST_SERVICES=none to run only what needs no service (the others skip,
# except under CI=true, where a missing service fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
services=${QUEUEY_TEST_SERVICES:-cassandra zookeeper}
slot=${QUEUEY_SERVICES_SLOT:-0}   # see scripts/service-lib.sh: several checkouts side by side
zk_port=${QUEUEY_ZOOKEEPER_PORT:-$((2181 + 10 * slot))}

cleanup() {
    status=$?
    if [[ $services == *cassandra* ]]; then scripts/cassandra-stop.sh --clean || true; fi
    if [[ $services == *zookeeper* ]]; then scripts/zookeeper-stop.sh --clean || true; fi
    exit $status
}
trap cleanup EXIT

if [[ $services == *cassandra* ]]; then
    scripts/cassandra-start.sh --clean
    export QUEUEY_TEST_CASSANDRA=127.0.$slot.1:9042
fi
if [[ $services == *zookeeper* ]]; then
    scripts/zookeeper-start.sh --clean --port "$zk_port" >/dev/null
    export QUEUEY_TEST_ZOOKEEPER=127.0.0.1:$zk_port
fi

# With every service up, a skipped test that tests/known_skips.txt does not list fails the run.
if [[ $services == *cassandra* && $services == *zookeeper* ]]; then
    export QUEUEY_KNOWN_SKIPS="${QUEUEY_KNOWN_SKIPS-$root/tests/known_skips.txt}"
fi
"$root/scripts/trial.sh" --temp-directory=var/_trial_temp "${@:-tests}"
