#!/usr/bin/env bash
# cqlsh against a node started by scripts/cassandra-start.sh.
#
#   scripts/cassandra-cqlsh.sh [--data DIR] [--node N] [cqlsh args, e.g. -e "describe keyspaces"]
#
# The Maven jars carry no cqlsh, so the first run installs cqlsh from PyPI
# (QUEUEY_CQLSH_SPEC, default cqlsh==6.2.2, the cqlsh of Cassandra 5.0) into a
# venv at $QUEUEY_CASSANDRA_HOME/cqlsh-venv, using python3 (3.9+).
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

parse_common_opts "$@"
set -- ${REST_ARGS[@]+"${REST_ARGS[@]}"}
node=1
if [[ "${1:-}" == --node ]]; then
    [[ $# -ge 2 ]] || die "--node needs a number"
    node="$2"; shift 2
fi
[[ "$node" =~ ^[1-9]$ ]] || die "bad --node '$node'"

VENV="$QUEUEY_CASSANDRA_HOME/cqlsh-venv"
SPEC="${QUEUEY_CQLSH_SPEC:-cqlsh==6.2.2}"
if [[ ! -x "$VENV/bin/cqlsh" || "$(cat "$VENV/.spec" 2>/dev/null)" != "$SPEC" ]]; then
    command -v python3 >/dev/null || die "python3 not found (needed for cqlsh)"
    log "installing $SPEC into $VENV ..."
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$SPEC" || die "pip could not install $SPEC"
    echo "$SPEC" >"$VENV/.spec"
fi
exec "$VENV/bin/cqlsh" "$(node_ip "$node")" "$CQL_PORT" "$@"
