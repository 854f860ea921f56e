#!/usr/bin/env bash
# Start a local Cassandra for tests: one node (default) or a 3-node cluster on
# 127.0.0.1-3, all in the background, and wait until CQL answers on port 9042.
#
#   scripts/cassandra-start.sh [--nodes 1|2|3] [--data DIR] [--clean]
#
# --clean wipes the data dir first (refused while a node of it runs).
# Fetches Cassandra first if needed (scripts/cassandra-fetch.sh). Already running
# nodes are left alone. Stop with scripts/cassandra-stop.sh [--data DIR].
# Env: CASSANDRA_VERSION, QUEUEY_CASSANDRA_HOME, QUEUEY_CASSANDRA_DATA,
#      QUEUEY_CASSANDRA_NODES, MAX_HEAP_SIZE (1G), HEAP_NEWSIZE (256M, "" = unset),
#      QUEUEY_CASSANDRA_START_TIMEOUT (300 s per node), QUEUEY_CASSANDRA_NUM_TOKENS (16),
#      QUEUEY_CASSANDRA_CLUSTER_NAME, QUEUEY_CASSANDRA_RING_DELAY_MS (1000),
#      QUEUEY_CASSANDRA_YAML_EXTRA (file appended to cassandra.yaml),
#      JVM_EXTRA_OPTS (extra JVM flags), JAVA_HOME,
#      QUEUEY_CASSANDRA_KEEP_ON_FAILURE=1 (leave nodes running when start fails).
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

parse_common_opts "$@"
NODES="${QUEUEY_CASSANDRA_NODES:-1}"
parse_start_opts ${REST_ARGS[@]+"${REST_ARGS[@]}"}
[[ "$NODES" =~ ^[123]$ ]] || die "--nodes must be 1, 2 or 3 (got '$NODES')"

lock_data_dir
if ((CLEAN)); then
    wipe_data_dir
    lock_data_dir
fi

# A data dir belongs to one cluster shape and version.
if [[ -f "$DATA_DIR/cluster.env" ]]; then
    want_version="$CASSANDRA_VERSION" want_cluster="$CLUSTER_NAME"
    load_cluster_env
    if [[ "$CLUSTER_NODES" != "$NODES" ]]; then
        for ((n = 1; n <= CLUSTER_NODES; n++)); do
            if node_pid "$n" >/dev/null; then
                die "a $CLUSTER_NODES-node cluster is running from $DATA_DIR; stop it first (scripts/cassandra-stop.sh --data $DATA_DIR)"
            fi
        done
        die "$DATA_DIR holds a $CLUSTER_NODES-node cluster; remove it (rm -rf $DATA_DIR) or use another --data"
    fi
    if [[ "$CASSANDRA_VERSION" != "$want_version" || "$CLUSTER_NAME" != "$want_cluster" ]]; then
        die "$DATA_DIR holds cluster '$CLUSTER_NAME' of Cassandra $CASSANDRA_VERSION, not '$want_cluster' $want_version; remove it or use another --data"
    fi
fi

if [[ ! -f "$CASSANDRA_DIST/.queuey-complete" ]]; then
    "$SCRIPTS_DIR/cassandra-fetch.sh"
fi
require_dist
require_java

printf 'NODES=%q\nVERSION=%q\nCLUSTER=%q\nDIST=%q\n' \
    "$NODES" "$CASSANDRA_VERSION" "$CLUSTER_NAME" "$CASSANDRA_DIST" >"$DATA_DIR/cluster.env"

trap cleanup_failed_start EXIT
t0=$SECONDS
started=0
for ((n = 1; n <= NODES; n++)); do
    if pid="$(node_pid "$n")"; then
        log "node $n: already running (pid $pid)"
    else
        launch_node "$n"
        started=$((started + 1))
    fi
    # Nodes join one after the other.
    wait_for_node "$n"
done
if ((NODES > 1)); then
    wait_for_agreement "$NODES"
fi

if ((started == 0)); then
    log "Cassandra $CASSANDRA_VERSION already running ($NODES node(s)), nothing to do"
else
    log "Cassandra $CASSANDRA_VERSION: $NODES node(s) up in $((SECONDS - t0))s"
fi
hosts=""
for ((n = 1; n <= NODES; n++)); do
    log "  node $n: CQL $(node_ip "$n"):$CQL_PORT  JMX 127.0.0.1:$(node_jmx_port "$n")  pid file $(node_pidfile "$n")  log $(node_log "$n")"
    hosts+="${hosts:+,}$(node_ip "$n")"
done
log "contact points: $hosts (port $CQL_PORT)"
qdata="$(printf '%q' "$DATA_DIR")"
log "stop: scripts/cassandra-stop.sh --data $qdata"
((NODES > 1)) && log "one node: scripts/cassandra-node.sh --data $qdata stop|kill|start|status N"
exit 0
