#!/usr/bin/env bash
# Control ONE node of a cluster started by scripts/cassandra-start.sh
# (for failure tests on the 3-node cluster).
#
#   scripts/cassandra-node.sh [--data DIR] stop|kill|start|pause|resume|status N
#   scripts/cassandra-node.sh [--data DIR] start all
#   scripts/cassandra-node.sh [--data DIR] settle
#
#   stop    SIGTERM, wait up to 60 s, then SIGKILL
#   kill    SIGKILL at once (a crash)
#   start   start it again with the same config, wait until its CQL answers
#           ("all": every node that is not running, one after the other)
#   pause   SIGSTOP: the node hangs, its peers still think it up for a while
#   resume  SIGCONT after pause (then settle, once no node is paused)
#   status  running or not, and whether CQL answers
#   settle  wait until every running node sees the running nodes up and the others down
#
# stop, kill and start return once every running node agrees on the ring
# (see wait_for_agreement): then a test knows what cluster its next request meets.
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

parse_common_opts "$@"
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { usage; exit 0; }
load_cluster_env || die "no cluster in $DATA_DIR (start one with scripts/cassandra-start.sh)"
if [[ "${1:-}" == settle && $# -eq 1 ]]; then
    wait_for_agreement "$CLUSTER_NODES"
    exit 0
fi
[[ $# -eq 2 ]] || { usage >&2; die "expected: stop|kill|start|pause|resume|status N, start all, or settle"; }
action="$1" n="$2"

nodes=("$n")
if [[ "$action" == start && "$n" == all ]]; then
    nodes=()
    for ((k = 1; k <= CLUSTER_NODES; k++)); do nodes+=("$k"); done
elif ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > CLUSTER_NODES)); then
    die "node must be 1..$CLUSTER_NODES for the cluster in $DATA_DIR (got '$n')"
fi

signal_node() {  # n signal
    local pid
    pid="$(node_pid "$1")" || die "node $1 is not running"
    log "node $1: SIG$2 to pid $pid"
    kill "-$2" "$pid"
}

case "$action" in
    stop) stop_nodes TERM "$n" ;;
    kill) kill_node "$n" ;;
    start)
        lock_data_dir
        require_dist
        require_java
        trap cleanup_failed_start EXIT
        for k in "${nodes[@]}"; do
            if pid="$(node_pid "$k")"; then
                log "node $k: already running (pid $pid)"
            else
                launch_node "$k"
            fi
            wait_for_node "$k"
        done
        ;;
    pause) signal_node "$n" STOP; exit 0 ;;
    resume) signal_node "$n" CONT; exit 0 ;;
    status)
        if pid="$(node_pid "$n")"; then
            if cql_ping "$(node_ip "$n")"; then
                log "node $n: running (pid $pid), CQL answers on $(node_ip "$n"):$CQL_PORT"
            else
                log "node $n: running (pid $pid), CQL not answering (yet)"
            fi
        else
            log "node $n: not running"
            exit 3
        fi
        exit 0
        ;;
    *) usage >&2; die "unknown action: $action" ;;
esac
wait_for_agreement "$CLUSTER_NODES"
