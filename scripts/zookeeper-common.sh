# shellcheck shell=bash disable=SC2034,SC2016
# (SC2034: variables are used by the scripts that source this; SC2016: the
#  single-quoted bash -c programs get their values as arguments.)
# Shared helpers of scripts/zookeeper-*.sh. Sourced, not run.
#
# A ZooKeeper for tests, CI and users: a plain java process per node (no system
# service), with a generated config and data under DATA (--data DIR,
# $QUEUEY_ZOOKEEPER_DATA or <repo>/var/zookeeper):
#   DATA/ensemble.env            NODES and PORT of this data dir
#   DATA/nodeN/zoo.cfg           generated on every start
#   DATA/nodeN/data/myid         the node's id (1..3)
#   DATA/nodeN/zookeeper.log     its log (stdout and stderr)
#   DATA/nodeN/zookeeper.pid     the JVM's pid while it runs
# Node N serves clients on 127.0.0.1:(PORT + N - 1) (PORT = --port,
# $QUEUEY_ZOOKEEPER_PORT or 2181); an ensemble's nodes talk on
# 127.0.0.1:(28880 + N) (quorum) and 127.0.0.1:(38880 + N) (election).
#
# The jars: $QUEUEY_ZOOKEEPER_CLASSPATH if set; else Debian's `zookeeper`
# package (/usr/share/java/zookeeper.jar, `apt-get install -y zookeeper`);
# else the jars that scripts/zookeeper-fetch.sh put under
# $QUEUEY_ZOOKEEPER_HOME (default ~/.cache/queuey/zookeeper) from Maven Central.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts"
DATA_DIR="${QUEUEY_ZOOKEEPER_DATA:-$REPO_ROOT/var/zookeeper}"
BASE_PORT="${QUEUEY_ZOOKEEPER_PORT:-2181}"
ZOOKEEPER_VERSION="${ZOOKEEPER_VERSION:-3.8.4}"
QUEUEY_ZOOKEEPER_HOME="${QUEUEY_ZOOKEEPER_HOME:-$HOME/.cache/queuey/zookeeper}"
ZK_HEAP="${QUEUEY_ZOOKEEPER_HEAP:-256m}"
# 500 ms ticks: sessions may be as short as 1 s (2 ticks), handy for tests.
TICK_TIME="${QUEUEY_ZOOKEEPER_TICK_MS:-500}"
START_TIMEOUT="${QUEUEY_ZOOKEEPER_START_TIMEOUT:-60}"
STOP_TIMEOUT="${QUEUEY_ZOOKEEPER_STOP_TIMEOUT:-20}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

LAUNCHED=()

log() { printf '[zookeeper] %s\n' "$*" >&2; }
die() { printf '[zookeeper] ERROR: %s\n' "$*" >&2; exit 1; }

# "--data DIR" and "--port N"; the rest goes to REST_ARGS.
parse_common_opts() {
    REST_ARGS=()
    while (($#)); do
        case "$1" in
            --data) [[ $# -ge 2 ]] || die "--data needs a directory"; DATA_DIR="$2"; shift 2 ;;
            --data=*) DATA_DIR="${1#--data=}"; shift ;;
            --port) [[ $# -ge 2 ]] || die "--port needs a number"; BASE_PORT="$2"; shift 2 ;;
            --port=*) BASE_PORT="${1#--port=}"; shift ;;
            *) REST_ARGS+=("$1"); shift ;;
        esac
    done
    [[ "$DATA_DIR" == /* ]] || DATA_DIR="$PWD/$DATA_DIR"
    DATA_DIR="${DATA_DIR%/}"
    if ! [[ "$BASE_PORT" =~ ^[0-9]+$ ]] || ! ((BASE_PORT > 0 && BASE_PORT < 65534)); then
        die "bad port '$BASE_PORT'"
    fi
}

node_dir()         { echo "$DATA_DIR/node$1"; }
node_pidfile()     { echo "$DATA_DIR/node$1/zookeeper.pid"; }
node_log()         { echo "$DATA_DIR/node$1/zookeeper.log"; }
node_port()        { echo $((BASE_PORT + $1 - 1)); }
node_quorum_port() { echo $((28880 + $1)); }
node_elect_port()  { echo $((38880 + $1)); }

# Pid of node N if its JVM is alive (and really is a ZooKeeper), else fail.
node_pid() {
    local pf pid
    pf="$(node_pidfile "$1")"
    [[ -s "$pf" ]] || return 1
    pid="$(<"$pf")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'org.apache.zookeeper.server' || return 1
    echo "$pid"
}

load_ensemble_env() {
    [[ -f "$DATA_DIR/ensemble.env" ]] || return 1
    local NODES PORT
    # shellcheck disable=SC1091
    source "$DATA_DIR/ensemble.env"
    ENSEMBLE_NODES="$NODES"
    BASE_PORT="$PORT"
}

# The classpath of the server, or fail with advice.
zookeeper_classpath() {
    local binding="" fetched="$QUEUEY_ZOOKEEPER_HOME/apache-zookeeper-$ZOOKEEPER_VERSION"
    if [[ -n "${QUEUEY_ZOOKEEPER_CLASSPATH:-}" ]]; then
        echo "$QUEUEY_ZOOKEEPER_CLASSPATH"
    elif [[ -f /usr/share/java/zookeeper.jar ]]; then
        # Debian's jar names its dependencies in its manifest; add a logging binding.
        if [[ -f /usr/share/java/slf4j-simple.jar ]]; then binding=":/usr/share/java/slf4j-simple.jar"; fi
        echo "/usr/share/java/zookeeper.jar$binding"
    elif [[ -f "$fetched/.queuey-complete" ]]; then
        echo "$fetched/lib/*"
    else
        return 1
    fi
}

require_java() {
    command -v "$JAVA" >/dev/null || die "java not found (apt-get install -y default-jre-headless, or set JAVA_HOME)"
}

# Send a four-letter word to 127.0.0.1:PORT and print the answer.
four_letter() {  # port word
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1; printf "%s" "$1" >&3; cat <&3' "$1" "$2" 2>/dev/null
}

port_in_use() {  # port
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# The node's mode once it serves: standalone, leader or follower.
node_mode() {
    four_letter "$(node_port "$1")" srvr | sed -n 's/^Mode: //p'
}

write_node_conf() {  # n nodes
    local n="$1" nodes="$2" dir i
    dir="$(node_dir "$n")"
    mkdir -p "$dir/data" "$dir/datalog"
    echo "$n" >"$dir/data/myid"
    {
        echo "# Generated by scripts/zookeeper-start.sh; rewritten on every start."
        echo "tickTime=$TICK_TIME"
        echo "initLimit=20"
        echo "syncLimit=10"
        echo "dataDir=$dir/data"
        echo "dataLogDir=$dir/datalog"
        echo "clientPortAddress=127.0.0.1"
        echo "clientPort=$(node_port "$n")"
        echo "maxClientCnxns=0"
        echo "minSessionTimeout=$((2 * TICK_TIME))"
        echo "maxSessionTimeout=60000"
        echo "admin.enableServer=false"
        echo "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,conf"
        echo "autopurge.snapRetainCount=3"
        echo "autopurge.purgeInterval=1"
        echo "forceSync=${QUEUEY_ZOOKEEPER_FORCE_SYNC:-yes}"
        if ((nodes > 1)); then
            for ((i = 1; i <= nodes; i++)); do
                echo "server.$i=127.0.0.1:$(node_quorum_port "$i"):$(node_elect_port "$i")"
            done
        fi
    } >"$dir/zoo.cfg"
}

launch_node() {  # n nodes
    local n="$1" nodes="$2" dir pid cp
    dir="$(node_dir "$n")"
    if port_in_use "$(node_port "$n")"; then
        die "127.0.0.1:$(node_port "$n") is already in use by another process (another ZooKeeper?); stop it or use --port"
    fi
    cp="$(zookeeper_classpath)" || die "no ZooKeeper jars: apt-get install -y zookeeper, or run scripts/zookeeper-fetch.sh"
    write_node_conf "$n" "$nodes"
    : >"$(node_log "$n")"
    # setsid: its own session, so a Ctrl-C in the calling shell does not reach it.
    setsid "$JAVA" -Xms32m "-Xmx$ZK_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djava.net.preferIPv4Stack=true \
        -Dzookeeper.admin.enableServer=false \
        -Dorg.slf4j.simpleLogger.defaultLogLevel="${QUEUEY_ZOOKEEPER_LOG_LEVEL:-info}" \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dzookeeper.log.dir="$dir" \
        -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
        >>"$(node_log "$n")" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$(node_pidfile "$n")"
    LAUNCHED+=("$n")
    log "node $n: started pid $pid, clients on 127.0.0.1:$(node_port "$n")"
}

# Wait until node N answers `ruok` and, in an ensemble, knows its role.
wait_for_node() {  # n nodes
    local n="$1" nodes="$2" deadline mode
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        node_pid "$n" >/dev/null || { tail -n 30 "$(node_log "$n")" >&2 || true; die "node $n exited during start (log: $(node_log "$n"))"; }
        if [[ "$(four_letter "$(node_port "$n")" ruok)" == imok ]]; then
            mode="$(node_mode "$n")"
            if [[ "$mode" == standalone || "$mode" == leader || "$mode" == follower ]]; then
                log "node $n: serving ($mode)"
                return 0
            fi
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$(node_log "$n")" >&2 || true
            die "node $n did not serve within ${START_TIMEOUT}s (log: $(node_log "$n"))"
        fi
        sleep 0.2
    done
}

stop_nodes() {  # signal n...
    local sig="$1" n pid deadline alive
    shift
    local -A pids=()
    for n in "$@"; do
        if pid="$(node_pid "$n")"; then
            kill "-$sig" "$pid" 2>/dev/null || true
            pids[$n]="$pid"
        else
            rm -f "$(node_pidfile "$n")"
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
                log "node $n: still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
                kill -KILL "${pids[$n]}" 2>/dev/null || true
            done
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    for n in "${!pids[@]}"; do
        rm -f "$(node_pidfile "$n")"
        log "node $n: stopped (pid ${pids[$n]})"
    done
}

# On a failed start, stop what this run launched.
cleanup_failed_start() {
    local rc=$?
    if ((rc != 0 && ${#LAUNCHED[@]} > 0)); then
        log "start failed; stopping node(s) ${LAUNCHED[*]} started by this run (logs kept in $DATA_DIR)"
        STOP_TIMEOUT=5 stop_nodes KILL "${LAUNCHED[@]}" || true
    fi
    exit "$rc"
}
