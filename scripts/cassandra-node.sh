#!/usr/bin/env bash
# Control ONE node of a cluster started by scripts/cassandra-start.sh
# (for failure tests on the 3-node cluster).
#
#   scripts/cassandra-node.sh [--data DIR] stop|kill|start|status N
#
#   stop    SIGTERM, wait up to 60 s, then SIGKILL
#   kill    SIGKILL at once (a crash)
#   start   start it again with the same config, wait until its CQL answers
#   status  running or not, and whether CQL answers
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

parse_common_opts "$@"
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { usage; exit 0; }
[[ $# -eq 2 ]] || { usage >&2; die "expected: stop|kill|start|status N"; }
action="$1" n="$2"

load_cluster_env || die "no cluster in $DATA_DIR (start one with scripts/cassandra-start.sh)"
if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > CLUSTER_NODES)); then
    die "node must be 1..$CLUSTER_NODES for the cluster in $DATA_DIR (got '$n')"
fi

case "$action" in
    stop) stop_nodes TERM "$n" ;;
    kill) kill_node "$n" ;;
    start)
        lock_data_dir
        require_dist
        require_java
        trap cleanup_failed_start EXIT
        if pid="$(node_pid "$n")"; then
            log "node $n: already running (pid $pid)"
        else
            launch_node "$n"
        fi
        wait_for_node "$n"
        ;;
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
        ;;
    *) usage >&2; die "unknown action: $action" ;;
esac
