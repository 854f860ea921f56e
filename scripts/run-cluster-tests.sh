#!/usr/bin/env bash
# The slow failure tests, each on its own cluster:
#   1. outage:    one Cassandra node, stopped and started under a running queuey   (OutageTests,  ~1 min)
#   2. cluster:   three Cassandra nodes on 127.0.K.1-3, replication 3              (ClusterTests, ~3 min)
#   3. zookeeper: a 3-node ZooKeeper ensemble on 127.0.0.1:(2181+10K)..+2, its leader killed and
#                 restarted under qdo workers                (tests/test_qdo_ensemble.py, ~1 min)
#   4. multinode: three Cassandra nodes, two queuey processes, the sharded queue directory
#                 (tests/test_cassandra_multinode.py, ~3 min)
# Each cluster lives in its own data dir under var/ and is stopped and wiped afterwards.
# Nothing else may be listening on 127.0.K.1-3:9042 or on the ZooKeeper ports meanwhile (stop
# `make test`'s services first); K is QUEUEY_SERVICES_SLOT (default 0, see scripts/service-lib.sh).
#
#   scripts/run-cluster-tests.sh [outage|cluster|zookeeper|multinode ...]      (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
slot=${QUEUEY_SERVICES_SLOT:-0}
zk_port=${QUEUEY_ZOOKEEPER_PORT:-$((2181 + 10 * slot))}
parts=("${@:-outage cluster zookeeper multinode}")
read -ra parts <<<"${parts[*]}"

current="" current_zk=""
cleanup() {
    status=$?
    if [[ -n $current ]]; then scripts/cassandra-stop.sh --data "$current" --clean || true; fi
    if [[ -n $current_zk ]]; then scripts/zookeeper-stop.sh --data "$current_zk" --clean || true; fi
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
        multinode)
            current="$root/var/cassandra-multinode"
            scripts/cassandra-start.sh --data "$current" --clean --nodes 3
            QUEUEY_CASSANDRA_DATA="$current" \
                QUEUEY_TEST_CASSANDRA_MULTINODE=127.0.$slot.1,127.0.$slot.2,127.0.$slot.3 \
                run_trial tests.test_cassandra_multinode
            ;;
        zookeeper)
            current_zk="$root/var/zookeeper-ensemble"
            hosts=$(scripts/zookeeper-start.sh --data "$current_zk" --clean --nodes 3 --port "$zk_port" | tail -n 1)
            QUEUEY_ZOOKEEPER_DATA="$current_zk" QUEUEY_TEST_ZOOKEEPER_ENSEMBLE="$hosts" \
                run_trial tests.test_qdo_ensemble
            scripts/zookeeper-stop.sh --data "$current_zk" --clean
            current_zk=""
            continue
            ;;
        *) echo "unknown part: $part (use outage, cluster, zookeeper, multinode)" >&2; exit 2 ;;
    esac
    scripts/cassandra-stop.sh --data "$current" --clean
    current=""
done
