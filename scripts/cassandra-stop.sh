#!/usr/bin/env bash
# Stop every node that scripts/cassandra-start.sh started from a data dir:
# SIGTERM, wait up to QUEUEY_CASSANDRA_STOP_TIMEOUT (60 s), then SIGKILL.
# Removes the pid files; keeps the data unless --clean is given.
#
#   scripts/cassandra-stop.sh [--data DIR] [--clean]
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

parse_common_opts "$@"
CLEAN=0
for a in ${REST_ARGS[@]+"${REST_ARGS[@]}"}; do
    case "$a" in
        --clean) CLEAN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $a" ;;
    esac
done

stop_data_dir_nodes TERM
((CLEAN)) && wipe_data_dir
exit 0
