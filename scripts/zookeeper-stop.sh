#!/usr/bin/env bash
# Stop every ZooKeeper node that scripts/zookeeper-start.sh started from a data
# dir (SIGTERM, then SIGKILL after QUEUEY_ZOOKEEPER_STOP_TIMEOUT, 20 s), or only
# node N; --kill sends SIGKILL at once (a crash). Keeps the data unless --clean.
#
#   scripts/zookeeper-stop.sh [--data DIR] [--node N] [--kill] [--clean]
set -euo pipefail
# shellcheck source=zookeeper-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/zookeeper-common.sh"

parse_common_opts "$@"
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
CLEAN=0 SIG=TERM ONLY=""
while (($#)); do
    case "$1" in
        --clean) CLEAN=1; shift ;;
        --kill) SIG=KILL; shift ;;
        --node) [[ $# -ge 2 ]] || die "--node needs a number"; ONLY="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
stop_data_dir_nodes "$SIG" "$ONLY"
if ((CLEAN)); then
    [[ -z "$ONLY" ]] || die "--clean with --node: refusing to wipe the data of a partly running ensemble"
    find "$DATA_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} + 2>/dev/null || true
    log "removed the ZooKeeper data in $DATA_DIR"
fi
exit 0
