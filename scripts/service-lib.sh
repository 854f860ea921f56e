# shellcheck shell=bash disable=SC2034,SC2016
# (SC2034: variables are used by the scripts that source this; SC2016: the
#  single-quoted bash -c programs get their values as arguments.)
# What the scripts of every local service (scripts/cassandra-*.sh and
# scripts/zookeeper-*.sh) share, sourced by their *-common.sh. Not run.
#
# The *-common.sh sets, before sourcing this:
#   SERVICE          cassandra or zookeeper: the log prefix "[SERVICE]", the
#                    pid files DATA/nodeN/SERVICE.pid, "another SERVICE script"
#   SERVICE_TITLE    Cassandra or ZooKeeper, in messages
#   SERVICE_PROCESS  what /proc/PID/cmdline of a node's JVM contains (grep pattern)
# and, for stop_nodes: STOP_TIMEOUT, STOP_POLL and KILL_GRACE (seconds) and a
# function stop_log (below). A service with value options of its own adds them
# to VALUE_OPTS and may define check_common_opts (see parse_common_opts).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

# Several checkouts can run their services side by side on one machine, each
# with its own QUEUEY_SERVICES_SLOT (0-9, default 0): slot K puts Cassandra's
# nodes on 127.0.K.N and moves every port of a service by a fixed step per slot.
SLOT="${QUEUEY_SERVICES_SLOT:-0}"
[[ "$SLOT" =~ ^[0-9]$ ]] || { printf 'QUEUEY_SERVICES_SLOT must be 0-9, not %q\n' "$SLOT" >&2; exit 1; }

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

# -- nodes and their pid files ----------------------------------------------------

node_dir()     { echo "$DATA_DIR/node$1"; }
node_pidfile() { echo "$DATA_DIR/node$1/$SERVICE.pid"; }

# Pid of node N if its JVM is alive (and really is one of this service), else fail.
node_pid() {
    local pf pid
    pf="$(node_pidfile "$1")"
    [[ -s "$pf" ]] || return 1
    pid="$(<"$pf")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$SERVICE_PROCESS" || return 1
    echo "$pid"
}

port_in_use() {  # ip port
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Run node N's command in the background in a session of its own (setsid: a
# Ctrl-C in the calling shell does not reach it), its output appended to LOG
# (emptied first). Writes the pid to the node's pid file and to SPAWNED_PID,
# and adds N to LAUNCHED. Returns once the child runs the command: until its
# exec, /proc/PID/cmdline is still this shell's (or empty), and node_pid would
# take the node for dead ("exited during start-up") on a loaded machine.
spawn_node() {  # n log command...
    local n="$1" out="$2"
    shift 2
    : >"$out"
    setsid "$@" >>"$out" 2>&1 </dev/null 9>&- &
    SPAWNED_PID=$!
    echo "$SPAWNED_PID" >"$(node_pidfile "$n")"
    LAUNCHED+=("$n")
    local stat
    while stat="$(cat "/proc/$SPAWNED_PID/stat" 2>/dev/null)"; do
        stat="${stat##*) }"
        [[ "${stat:0:1}" == Z ]] && break   # died before its exec: node_pid will say so
        tr '\0' ' ' <"/proc/$SPAWNED_PID/cmdline" | grep -q "$SERVICE_PROCESS" && break
        sleep 0.05
    done
}

# Send SIGNAL to the given nodes together, wait up to STOP_TIMEOUT for all of
# them, then SIGKILL what is left. Removes their pid files. The service words
# what is said of each node: stop_log signalled N PID SIGNAL, stop_log
# not-running N, stop_log stopped N PID.
stop_nodes() {  # signal n...
    local sig="$1" n pid deadline alive
    shift
    local -A pids=()
    for n in "$@"; do
        if pid="$(node_pid "$n")"; then
            stop_log signalled "$n" "$pid" "$sig"
            kill "-$sig" "$pid" 2>/dev/null || true
            pids[$n]="$pid"
        else
            rm -f "$(node_pidfile "$n")"
            stop_log not-running "$n"
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        alive=0
        for n in "${!pids[@]}"; do
            if kill -0 "${pids[$n]}" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        if ((SECONDS >= deadline)); then
            for n in "${!pids[@]}"; do
                if kill -0 "${pids[$n]}" 2>/dev/null; then
                    log "node $n: still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
                    kill -KILL "${pids[$n]}" 2>/dev/null || true
                fi
            done
            sleep "$KILL_GRACE"
            break
        fi
        sleep "$STOP_POLL"
    done
    for n in "${!pids[@]}"; do
        rm -f "$(node_pidfile "$n")"
        stop_log stopped "$n" "${pids[$n]}"
    done
}

# stop_nodes SIGNAL for every node with a pid file under DATA_DIR (whatever the
# data dir's env file says), or only for node ONLY.
stop_data_dir_nodes() {  # signal [only]
    local sig="$1" only="${2:-}" pf n
    local -a found=()
    for pf in "$DATA_DIR"/node*/"$SERVICE.pid"; do
        [[ -e "$pf" ]] || continue
        n="${pf%/"$SERVICE".pid}"; n="${n##*/node}"
        [[ "$n" =~ ^[0-9]+$ ]] || continue
        if [[ -z "$only" || "$only" == "$n" ]]; then found+=("$n"); fi
    done
    if ((${#found[@]})); then
        stop_nodes "$sig" "${found[@]}"
    else
        log "no $SERVICE_TITLE pid files under $DATA_DIR: nothing running"
    fi
}

# -- jars from Maven Central (the fetch scripts) -------------------------------------

MAVEN_DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
MVN_FLAGS=()   # a fetch script's own Maven flags

# A scratch dir WORK from a mktemp template (its parent made first), removed on exit.
fetch_work_dir() {  # template
    mkdir -p "$(dirname "$1")"
    WORK="$(mktemp -d "$1")"
    trap 'rm -rf "$WORK"' EXIT
}

# Run Maven quietly, with MVN_FLAGS and $QUEUEY_MVN_ARGS (e.g. "-o" or
# "-Dmaven.repo.local=DIR"); its output goes to WORK/mvn.log.
run_mvn() {
    # shellcheck disable=SC2086
    mvn -B -q ${MVN_FLAGS[@]+"${MVN_FLAGS[@]}"} ${QUEUEY_MVN_ARGS:-} "$@" >"$WORK/mvn.log" 2>&1
}

# Maven's own error lines from WORK/mvn.log, without the generic "re-run with -X" advice.
mvn_errors() {
    sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/mvn.log" | grep -E '^\[ERROR\] .' |
        grep -vE 'Re-run Maven|full stack trace|^\[ERROR\] \[Help|For more information' | head -n 5 || true
}

# Write WORK/pom/pom.xml, a pom (artifactId NAME) that depends on each
# groupId:artifactId:version given.
write_fetch_pom() {  # name dependency...
    local name="$1" dep group artifact version
    shift
    mkdir -p "$WORK/pom"
    {
        echo '<project xmlns="http://maven.apache.org/POM/4.0.0">'
        echo '  <modelVersion>4.0.0</modelVersion>'
        echo "  <groupId>queuey.local</groupId><artifactId>$name</artifactId><version>1</version>"
        echo '  <packaging>pom</packaging>'
        echo '  <dependencies>'
        for dep in "$@"; do
            IFS=: read -r group artifact version <<<"$dep"
            echo '    <dependency>'
            echo "      <groupId>$group</groupId><artifactId>$artifact</artifactId>"
            echo "      <version>$version</version>"
            echo '    </dependency>'
        done
        echo '  </dependencies>'
        echo '</project>'
    } >"$WORK/pom/pom.xml"
}

# The runtime jars of that pom's dependencies (with their own) into WORK/dist/lib.
fetch_pom_dependencies() {
    run_mvn -f "$WORK/pom/pom.xml" "$MAVEN_DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$WORK/dist/lib"
}

# Mark WORK/dist complete ("WHAT, fetched <UTC time>") and move it to DEST, in
# place of whatever was there.
install_fetched() {  # dest what
    echo "$2, fetched $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$WORK/dist/.queuey-complete"
    rm -rf "$1"
    mv "$WORK/dist" "$1"
}
