#!/usr/bin/env bash
# nodetool against one node of a cluster started by scripts/cassandra-start.sh
# (its JMX port on 127.0.0.1; see scripts/cassandra-common.sh).
#
#   scripts/cassandra-nodetool.sh [--data DIR] [--node N] nodetool-args...
#
# e.g. scripts/cassandra-nodetool.sh tablestats queuey.queue_directory
#      scripts/cassandra-nodetool.sh --node 2 flush queuey
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

parse_common_opts "$@"
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
[[ "${1:-}" == -h || "${1:-}" == --help || $# -eq 0 ]] && { usage; exit 0; }
node=1
if [[ "$1" == --node ]]; then
    [[ $# -ge 2 ]] || die "--node needs a number"
    node="$2"; shift 2
fi
load_cluster_env || die "no cluster in $DATA_DIR (start one with scripts/cassandra-start.sh)"
if ! [[ "$node" =~ ^[0-9]+$ ]] || ((node < 1 || node > CLUSTER_NODES)); then
    die "node must be 1..$CLUSTER_NODES for the cluster in $DATA_DIR (got '$node')"
fi
require_dist
require_java
nodetool "$node" "$@"
