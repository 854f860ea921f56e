# shellcheck shell=bash disable=SC2034
# (SC2034: variables are used by the scripts that source this.)
# What the scripts of every local service (scripts/cassandra-*.sh and
# scripts/zookeeper-*.sh) share, sourced by their *-common.sh. Not run.
#
# The *-common.sh sets, before sourcing this:
#   SERVICE          cassandra or zookeeper: the log prefix "[SERVICE]",
#                    "another SERVICE script"
# A service with value options of its own adds them to VALUE_OPTS and may
# define check_common_opts (see parse_common_opts).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

LAUNCHED=()   # nodes launched by this script run

log() { printf '[%s] %s\n' "$SERVICE" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SERVICE" "$*" >&2; exit 1; }

# The running script's header comment (from line 2 up to its first other line).
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

# -- options -------------------------------------------------------------------

# The options that take a value, "--NAME VALUE" or "--NAME=VALUE", by NAME:
# "VARIABLE what-it-needs". Every service has --data.
declare -A VALUE_OPTS=([data]="DATA_DIR a directory")

# Parse the VALUE_OPTS options; the other args go to REST_ARGS. Then makes
# DATA_DIR absolute, so generated configs stay valid whatever the cwd, and
# runs check_common_opts if the service has one.
parse_common_opts() {
    local name spec
    REST_ARGS=()
    while (($#)); do
        name="${1#--}"; name="${name%%=*}"
        spec=""
        if [[ "$1" == --?* && -n "$name" ]]; then spec="${VALUE_OPTS[$name]:-}"; fi
        if [[ -z "$spec" ]]; then
            REST_ARGS+=("$1"); shift
        elif [[ "$1" == *=* ]]; then
            printf -v "${spec%% *}" '%s' "${1#*=}"; shift
        else
            [[ $# -ge 2 ]] || die "--$name needs ${spec#* }"
            printf -v "${spec%% *}" '%s' "$2"; shift 2
        fi
    done
    [[ "$DATA_DIR" == /* ]] || DATA_DIR="$PWD/$DATA_DIR"
    DATA_DIR="${DATA_DIR%/}"
    if declare -F check_common_opts >/dev/null; then check_common_opts; fi
}

# The start scripts' options after parse_common_opts: --nodes N (sets NODES,
# whose default the script sets first), --clean (CLEAN=1) and --help.
parse_start_opts() {
    CLEAN=0
    while (($#)); do
        case "$1" in
            --nodes) [[ $# -ge 2 ]] || die "--nodes needs a number"; NODES="$2"; shift 2 ;;
            --nodes=*) NODES="${1#--nodes=}"; shift ;;
            --clean) CLEAN=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
}

# One start/node script at a time per data dir: a lock on DATA/.lock, held on
# fd 9 until the script exits (the nodes it launches do not inherit fd 9).
lock_data_dir() {
    mkdir -p "$DATA_DIR"
    exec 9>"$DATA_DIR/.lock"
    flock -n 9 || die "another $SERVICE script is working on $DATA_DIR"
}
