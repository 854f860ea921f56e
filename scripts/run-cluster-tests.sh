#!/usr/bin/env bash
# The slow Cassandra failure tests (tests/test_cassandra_cluster.py), each on its own cluster:
#   1. one node, stopped and started under a running queuey   (OutageTests,  ~1 min)
#   2. three nodes on 127.0.K.1-3, replication 3              (ClusterTests, ~3 min)
# Each cluster lives in its own data dir under var/ and is stopped and wiped afterwards.
# Nothing else may be listening on 127.0.K.1-3:9042 meanwhile (stop `make test`'s node first);
# K is QUEUEY_SERVICES_SLOT (default 0, see scripts/service-lib.sh).
#
#   scripts/run-cluster-tests.sh [outage|cluster ...]      (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
slot=${QUEUEY_SERVICES_SLOT:-0}
parts=("${@:-outage cluster}")
read -ra parts <<<"${parts[*]}"

current=""
cleanup() {
    status=$?
    if [[ -n $current ]]; then scripts/cassandra-stop.sh --data "$current" --clean || true; fi
    exit $status
}
trap cleanup EXIT

run_trial() {  # no test may skip here
    QUEUEY_KNOWN_SKIPS=/dev/null "$root/scripts/trial.sh" --temp-directory=var/_trial_temp_cluster "$@"
}

for part in "${parts[@]}"; do
    case "$part" in
        outage)
            current="$root/var/cassandra-outage"
            scripts/cassandra-start.sh --data "$current" --clean --nodes 1
            QUEUEY_CASSANDRA_DATA="$current" QUEUEY_TEST_CASSANDRA_OUTAGE=127.0.$slot.1:9042 \
                run_trial tests.test_cassandra_cluster.OutageTests
            ;;
        cluster)
            current="$root/var/cassandra-cluster"
            scripts/cassandra-start.sh --data "$current" --clean --nodes 3
            QUEUEY_CASSANDRA_DATA="$current" QUEUEY_TEST_CASSANDRA_CLUSTER=127.0.$slot.1,127.0.$slot.2,127.0.$slot.3 \
                run_trial tests.test_cassandra_cluster.ClusterTests
            ;;
        *) echo "unknown part: $part (use outage, cluster)" >&2; exit 2 ;;
    esac
    scripts/cassandra-stop.sh --data "$current" --clean
    current=""
done
