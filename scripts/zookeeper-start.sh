#!/usr/bin/env bash
# Start a local ZooKeeper: one node (default) or a 3-node ensemble on 127.0.0.1,
# each a plain java process in the background, and wait until it serves.
#
#   scripts/zookeeper-start.sh [--nodes 1|3] [--port PORT] [--data DIR] [--clean]
#
# Clients connect to 127.0.0.1:PORT (default 2181; an ensemble also serves on
# PORT+1 and PORT+2). --clean wipes the data dir first. Already running nodes
# are left alone. Prints the connection string on stdout as its last line.
# Stop with scripts/zookeeper-stop.sh [--data DIR].
# Env: QUEUEY_ZOOKEEPER_DATA, QUEUEY_ZOOKEEPER_PORT, QUEUEY_ZOOKEEPER_NODES,
#      QUEUEY_ZOOKEEPER_CLASSPATH, QUEUEY_ZOOKEEPER_HEAP (256m),
#      QUEUEY_ZOOKEEPER_TICK_MS (500), QUEUEY_ZOOKEEPER_FORCE_SYNC (yes),
#      QUEUEY_ZOOKEEPER_START_TIMEOUT (60 s), JAVA_HOME.
set -euo pipefail
# shellcheck source=zookeeper-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/zookeeper-common.sh"

parse_common_opts "$@"
NODES="${QUEUEY_ZOOKEEPER_NODES:-1}"
parse_start_opts ${REST_ARGS[@]+"${REST_ARGS[@]}"}
[[ "$NODES" == 1 || "$NODES" == 3 ]] || die "--nodes must be 1 or 3 (got '$NODES')"

lock_data_dir
if [[ -f "$DATA_DIR/ensemble.env" ]]; then
    want_port="$BASE_PORT"
    load_ensemble_env
    running=()
    for ((n = 1; n <= ENSEMBLE_NODES; n++)); do
        if node_pid "$n" >/dev/null; then running+=("$n"); fi
    done
    if ((${#running[@]})) && [[ "$ENSEMBLE_NODES" != "$NODES" || "$BASE_PORT" != "$want_port" ]]; then
        die "a $ENSEMBLE_NODES-node ZooKeeper on port $BASE_PORT runs from $DATA_DIR; stop it first (scripts/zookeeper-stop.sh --data $DATA_DIR)"
    fi
    if ((CLEAN)) && ((${#running[@]})); then
        die "--clean: ZooKeeper still runs from $DATA_DIR; stop it first"
    fi
    BASE_PORT="$want_port"
fi
if ((CLEAN)); then
    find "$DATA_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
    log "removed the ZooKeeper data in $DATA_DIR"
fi
if [[ -f "$DATA_DIR/ensemble.env" ]]; then
    prev_port="$BASE_PORT"; load_ensemble_env
    if [[ "$ENSEMBLE_NODES" != "$NODES" ]]; then
        die "$DATA_DIR holds a $ENSEMBLE_NODES-node ensemble; use --clean or another --data"
    fi
    BASE_PORT="$prev_port"
fi
require_java
if ! zookeeper_classpath >/dev/null; then
    log "no ZooKeeper jars (Debian's zookeeper package is not installed): fetching them from Maven Central"
    "$SCRIPTS_DIR/zookeeper-fetch.sh"
fi
printf 'NODES=%q\nPORT=%q\n' "$NODES" "$BASE_PORT" >"$DATA_DIR/ensemble.env"

trap cleanup_failed_start EXIT
t0=$SECONDS
for ((n = 1; n <= NODES; n++)); do
    if pid="$(node_pid "$n")"; then
        log "node $n: already running (pid $pid)"
    else
        launch_node "$n" "$NODES"
    fi
done
for ((n = 1; n <= NODES; n++)); do
    wait_for_node "$n" "$NODES"
done
hosts=""
for ((n = 1; n <= NODES; n++)); do
    hosts+="${hosts:+,}127.0.0.1:$(node_port "$n")"
done
log "ZooKeeper ($NODES node(s)) serving after $((SECONDS - t0))s; logs under $DATA_DIR/node*/zookeeper.log"
log "stop: scripts/zookeeper-stop.sh --data $(printf '%q' "$DATA_DIR")"
echo "$hosts"
