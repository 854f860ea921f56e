# shellcheck shell=bash disable=SC2034,SC2016
# (SC2034: variables are used by the scripts that source this; SC2016: the
#  single-quoted bash -c programs get their values as arguments.)
# Shared helpers for the scripts/cassandra-*.sh scripts. Sourced, not run.
#
# Layout (DATA = --data DIR, $QUEUEY_CASSANDRA_DATA or <repo>/var/cassandra):
#   DATA/cluster.env              nodes count, version, cluster name of this data dir
#   DATA/nodeN/conf/              generated cassandra.yaml, logback.xml, jvm.args
#   DATA/nodeN/{data,commitlog,saved_caches,hints,logs}/
#   DATA/nodeN/cassandra.pid      pid of the node's JVM while it runs
# Node N listens on 127.0.K.N (storage 7000, CQL 9042), JMX on
# 127.0.0.1:(7099 + 100*N + 1000*K), where K is QUEUEY_SERVICES_SLOT (default 0).

SERVICE=cassandra SERVICE_TITLE=Cassandra SERVICE_PROCESS=CassandraDaemon
# shellcheck source=service-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/service-lib.sh"

# Pinned default: the newest 5.0.x on Maven Central when this was written.
CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
QUEUEY_CASSANDRA_HOME="${QUEUEY_CASSANDRA_HOME:-$HOME/.cache/queuey/cassandra}"
CASSANDRA_DIST="${CASSANDRA_DIST:-$QUEUEY_CASSANDRA_HOME/apache-cassandra-$CASSANDRA_VERSION}"
DATA_DIR="${QUEUEY_CASSANDRA_DATA:-$REPO_ROOT/var/cassandra}"
CLUSTER_NAME="${QUEUEY_CASSANDRA_CLUSTER_NAME:-Queuey Test Cluster}"
MAX_HEAP_SIZE="${MAX_HEAP_SIZE:-1G}"
HEAP_NEWSIZE="${HEAP_NEWSIZE-256M}"   # set to "" for no -Xmn
NUM_TOKENS="${QUEUEY_CASSANDRA_NUM_TOKENS:-16}"
START_TIMEOUT="${QUEUEY_CASSANDRA_START_TIMEOUT:-300}"
STOP_TIMEOUT="${QUEUEY_CASSANDRA_STOP_TIMEOUT:-60}"
STOP_POLL=0.5 KILL_GRACE=1
CQL_PORT=9042
STORAGE_PORT=7000

# On a failed start, stop the nodes this run launched, unless
# QUEUEY_CASSANDRA_KEEP_ON_FAILURE=1 (to poke at them). Data and logs stay.
cleanup_failed_start() {
    local rc=$?
    if ((rc != 0 && ${#LAUNCHED[@]} > 0)); then
        if [[ "${QUEUEY_CASSANDRA_KEEP_ON_FAILURE:-0}" == 1 ]]; then
            log "start failed; node(s) ${LAUNCHED[*]} left running (QUEUEY_CASSANDRA_KEEP_ON_FAILURE=1); stop: scripts/cassandra-stop.sh --data $DATA_DIR"
        else
            log "start failed; stopping node(s) ${LAUNCHED[*]} started by this run (logs kept in $DATA_DIR)"
            STOP_TIMEOUT=20 stop_nodes TERM "${LAUNCHED[@]}" || true
        fi
    fi
    exit "$rc"
}

node_ip()       { echo "127.0.$SLOT.$1"; }
node_jmx_port() { echo $((7099 + 100 * $1 + 1000 * SLOT)); }   # slot 0: 7199, 7299, 7399
node_log()      { echo "$DATA_DIR/node$1/logs/system.log"; }

# Load DATA/cluster.env (NODES, VERSION, CLUSTER) written by the start script.
load_cluster_env() {
    [[ -f "$DATA_DIR/cluster.env" ]] || return 1
    local NODES VERSION CLUSTER DIST   # keep the file's names out of the caller's scope
    # shellcheck disable=SC1091
    source "$DATA_DIR/cluster.env"
    CLUSTER_NODES="$NODES"
    CASSANDRA_VERSION="$VERSION"
    CLUSTER_NAME="$CLUSTER"
    CASSANDRA_DIST="$DIST"
}

require_dist() {
    [[ -f "$CASSANDRA_DIST/.queuey-complete" ]] ||
        die "Cassandra $CASSANDRA_VERSION not found in $CASSANDRA_DIST (run scripts/cassandra-fetch.sh)"
}

require_java() {
    local v
    command -v "$JAVA" >/dev/null || die "java not found (set JAVA_HOME or install a JDK 11 or 17)"
    v="$("$JAVA" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')"
    case "$v" in
        11|17) ;;
        *) die "Cassandra 5.0 runs on Java 11 or 17; '$JAVA' is Java $v (set JAVA_HOME)" ;;
    esac
}

# The CQL check needs no client: send a native-protocol v4 OPTIONS frame and
# expect a SUPPORTED (opcode 0x06) response frame (version byte 0x84).
cql_ping() {
    local ip="$1" port="${2:-$CQL_PORT}" reply
    reply="$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "\x04\x00\x00\x00\x05\x00\x00\x00\x00" >&3
        head -c 9 <&3 | od -An -tx1' "$ip" "$port" 2>/dev/null)" || return 1
    reply="${reply//[[:space:]]/}"
    [[ "${reply:0:2}" == 84 && "${reply:8:2}" == 06 ]]
}

# nodetool against node N's JMX, e.g. `nodetool 1 status`.
nodetool() {
    local n="$1"; shift
    # A node that hangs (paused, or stuck in GC) must not hang the caller too.
    timeout "${QUEUEY_NODETOOL_TIMEOUT:-60}" "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djdk.attach.allowAttachSelf=true \
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
        --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
        --add-opens java.base/java.lang=ALL-UNNAMED \
        --add-opens java.base/java.nio=ALL-UNNAMED \
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
        -Dcassandra.storagedir="$(node_dir "$n")/data" \
        -Dlogback.configurationFile="file:$(node_dir "$n")/conf/logback-tools.xml" \
        -cp "$CASSANDRA_DIST/lib/*" org.apache.cassandra.tools.NodeTool \
        -h 127.0.0.1 -p "$(node_jmx_port "$n")" "$@"
}

# Write node N's config: cassandra.yaml, logback files and the JVM arg file.
write_node_conf() {
    local n="$1" dir ip conf jamm
    dir="$(node_dir "$n")"; ip="$(node_ip "$n")"; conf="$dir/conf"
    mkdir -p "$conf/triggers" "$dir"/{data,commitlog,saved_caches,hints,cdc_raw,logs}

    cat >"$conf/cassandra.yaml" <<EOF
# Generated by scripts/cassandra-start.sh; rewritten on every start.
cluster_name: '$CLUSTER_NAME'
num_tokens: $NUM_TOKENS
allocate_tokens_for_local_replication_factor: 3
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$(node_ip 1):$STORAGE_PORT"
listen_address: $ip
rpc_address: $ip
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
# A fresh test cluster has no data to stream: join at once.
auto_bootstrap: false
# Open connections to peers at start-up but do not wait 10 s for them.
block_for_peers_timeout_in_secs: 0
data_file_directories:
  - $dir/data
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/saved_caches
hints_directory: $dir/hints
cdc_raw_directory: $dir/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
disk_failure_policy: stop
commit_failure_policy: stop
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
# Small machine, throw-away data: no snapshots or backups, few background threads.
auto_snapshot: false
incremental_backups: false
snapshot_before_compaction: false
concurrent_compactors: 1
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
materialized_views_enabled: false
sasi_indexes_enabled: false
EOF
    if [[ -n "${QUEUEY_CASSANDRA_YAML_EXTRA:-}" ]]; then
        [[ -f "$QUEUEY_CASSANDRA_YAML_EXTRA" ]] || die "QUEUEY_CASSANDRA_YAML_EXTRA=$QUEUEY_CASSANDRA_YAML_EXTRA is not a file"
        { echo "# from $QUEUEY_CASSANDRA_YAML_EXTRA"; cat "$QUEUEY_CASSANDRA_YAML_EXTRA"; } >>"$conf/cassandra.yaml"
    fi

    cat >"$conf/logback.xml" <<'EOF'
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.SizeAndTimeBasedRollingPolicy">
      <fileNamePattern>${cassandra.logdir}/system.log.%d{yyyy-MM-dd}.%i.zip</fileNamePattern>
      <maxFileSize>20MB</maxFileSize>
      <maxHistory>3</maxHistory>
      <totalSizeCap>200MB</totalSizeCap>
    </rollingPolicy>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="SYSTEMLOG"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
EOF
    cat >"$conf/logback-tools.xml" <<'EOF'
<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %date{"HH:mm:ss,SSS"} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
EOF

    jamm="$(compgen -G "$CASSANDRA_DIST/lib/jamm-*.jar" | head -n1 || true)"
    # One argument per line (java @argfile). Mirrors conf/jvm-server.options and
    # conf/jvm17-server.options of the 5.0 distribution, sized for a small box.
    {
        echo "-Xms$MAX_HEAP_SIZE"
        echo "-Xmx$MAX_HEAP_SIZE"
        if [[ -n "$HEAP_NEWSIZE" ]]; then echo "-Xmn$HEAP_NEWSIZE"; fi
        echo "-Xss256k"
        echo "-XX:+UseG1GC"
        echo "-XX:+ParallelRefProcEnabled"
        echo "-XX:MaxTenuringThreshold=1"
        echo "-XX:MaxGCPauseMillis=300"
        echo "-XX:+UseThreadPriorities"
        echo "-XX:+PerfDisableSharedMem"
        echo "-XX:+ExitOnOutOfMemoryError"
        echo "-XX:+HeapDumpOnOutOfMemoryError"
        echo "-XX:HeapDumpPath=$dir/logs"
        echo "-Xlog:gc=info:file=$dir/logs/gc.log:time,uptime:filecount=3,filesize=5m"
        echo "-ea"
        echo "-da:net.openhft..."
        echo "-Djava.net.preferIPv4Stack=true"
        if [[ -n "$jamm" ]]; then echo "-javaagent:$jamm"; fi
        # JPMS: what Cassandra 5.0 needs on Java 11/17.
        echo "-Djdk.attach.allowAttachSelf=true"
        local m
        for m in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
                 java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql \
                 java.base/java.lang.ref jdk.unsupported/sun.misc \
                 jdk.compiler/com.sun.tools.javac.file jdk.attach/sun.tools.attach; do
            echo "--add-exports"; echo "$m=ALL-UNNAMED"
        done
        for m in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
                 java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
                 java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal \
                 java.base/sun.nio.ch java.base/java.io java.base/java.lang.reflect \
                 jdk.compiler/com.sun.tools.javac java.base/java.lang java.base/java.util \
                 java.base/java.nio java.base/java.util.concurrent java.base/java.util.concurrent.atomic \
                 java.base/java.math java.base/java.net; do
            echo "--add-opens"; echo "$m=ALL-UNNAMED"
        done
        echo "-Dio.netty.tryReflectionSetAccessible=true"
        echo "-Dio.netty.allocator.useCacheForAllThreads=true"
        echo "-Dio.netty.allocator.maxOrder=11"
        # JMX only on loopback, no auth; one port per node.
        echo "-Dcassandra.jmx.local.port=$(node_jmx_port "$n")"
        echo "-Dcom.sun.management.jmxremote.authenticate=false"
        # Fast start for a local test cluster.
        echo "-Dcassandra.skip_wait_for_gossip_to_settle=0"
        echo "-Dcassandra.ring_delay_ms=${QUEUEY_CASSANDRA_RING_DELAY_MS:-1000}"
        echo "-Dcassandra.skip_paxos_repair_on_topology_change=true"
        # Paths.
        echo "-Dcassandra.config=file://$conf/cassandra.yaml"
        echo "-Dcassandra.storagedir=$dir/data"
        echo "-Dcassandra.triggers_dir=$conf/triggers"
        echo "-Dcassandra.logdir=$dir/logs"
        echo "-Dlogback.configurationFile=file:$conf/logback.xml"
        echo "-Dcassandra-pidfile=$(node_pidfile "$n")"
        echo "-cp"
        echo "$conf:$CASSANDRA_DIST/lib/*"
        # Extra flags, whitespace separated (no spaces inside a flag).
        local -a extra=()
        read -ra extra <<<"${JVM_EXTRA_OPTS:-}"
        if ((${#extra[@]})); then printf '%s\n' "${extra[@]}"; fi
    } | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/.*/"&"/' >"$conf/jvm.args"  # quote for @argfile
}

# Start node N in the background (no wait). Refuses if its ports are taken.
launch_node() {
    local n="$1" dir ip
    dir="$(node_dir "$n")"; ip="$(node_ip "$n")"
    if port_in_use "$ip" "$CQL_PORT"; then
        die "$ip:$CQL_PORT is already in use by another process (another Cassandra?); stop it first"
    fi
    if port_in_use 127.0.0.1 "$(node_jmx_port "$n")"; then
        die "JMX port 127.0.0.1:$(node_jmx_port "$n") is already in use; stop that process first"
    fi
    write_node_conf "$n"
    spawn_node "$n" "$dir/logs/stdout.log" \
        env MALLOC_ARENA_MAX=4 "$JAVA" "@$dir/conf/jvm.args" org.apache.cassandra.service.CassandraDaemon
    log "node $n: started pid $SPAWNED_PID on $ip (CQL $ip:$CQL_PORT, JMX 127.0.0.1:$(node_jmx_port "$n"))"
}

# Print the end of node N's logs.
show_node_logs() {
    local n="$1" f
    for f in "$(node_dir "$n")/logs/stdout.log" "$(node_log "$n")"; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n 40 $f -----" >&2
        tail -n 40 "$f" >&2
    done
}

# Wait until node N answers CQL and nodetool reports native transport active.
wait_for_node() {
    local n="$1" timeout="${2:-$START_TIMEOUT}" ip start
    ip="$(node_ip "$n")"; start=$SECONDS
    log "node $n: waiting up to ${timeout}s for CQL on $ip:$CQL_PORT ..."
    while :; do
        if ! node_pid "$n" >/dev/null; then
            show_node_logs "$n"
            die "node $n exited during start-up (logs above)"
        fi
        if cql_ping "$ip"; then
            if nodetool "$n" info 2>/dev/null | grep -q '^Native Transport active *: *true'; then
                log "node $n: CQL up after $((SECONDS - start))s"
                return 0
            fi
        fi
        if ((SECONDS - start >= timeout)); then
            show_node_logs "$n"
            die "node $n: no CQL on $ip:$CQL_PORT after ${timeout}s (logs above)"
        fi
        sleep 1
    done
}

# What node M sees of the ring: "IP STATE" lines (UN, DN, UJ, ...), sorted.
ring_view() {  # m
    nodetool "$1" status 2>/dev/null | awk '/^[UD][NLJM] / {print $2, $1}' | sort
}

# What every node should see: the running nodes of the first COUNT Up/Normal, the others Down.
expected_view() {  # count
    local k
    for ((k = 1; k <= $1; k++)); do
        if node_pid "$k" >/dev/null; then echo "$(node_ip "$k") UN"; else echo "$(node_ip "$k") DN"; fi
    done | sort
}

# Wait until every running node of the first COUNT sees the ring as it is: the
# running nodes Up/Normal, the stopped or killed ones Down. Gossip takes a while
# to agree (a killed node is marked down only by the failure detector, a restarted
# one is marked up again by each peer in turn); a strong request that a
# coordinator sends meanwhile sees a different cluster than the caller assumes.
wait_for_agreement() {  # count [timeout]
    local count="$1" timeout="${2:-$START_TIMEOUT}" start m want view agreed
    start=$SECONDS
    log "waiting until every running node sees the same $count-node ring ..."
    while :; do
        want="$(expected_view "$count")"
        agreed=1
        for ((m = 1; m <= count; m++)); do
            node_pid "$m" >/dev/null || continue
            view="$(ring_view "$m")"
            if [[ "$view" != "$want" ]]; then agreed=0; break; fi
        done
        if ((agreed)); then
            log "ring agreed after $((SECONDS - start))s: $(tr '\n' ' ' <<<"$want")"
            return 0
        fi
        if ((SECONDS - start >= timeout)); then
            echo "expected:" >&2; echo "$want" >&2
            echo "node $m sees:" >&2; echo "$view" >&2
            die "the nodes do not agree on the ring after ${timeout}s"
        fi
        sleep 1
    done
}

# What stop_nodes says of each node.
stop_log() {  # signalled|not-running|stopped n [pid signal]
    case "$1" in
        signalled) log "node $2: stopping pid $3 (SIG$4) ..." ;;
        not-running) log "node $2: not running" ;;
        stopped) log "node $2: stopped" ;;
    esac
}

kill_node() {
    local n="$1" pid
    if ! pid="$(node_pid "$n")"; then
        rm -f "$(node_pidfile "$n")"
        log "node $n: not running"
        return 0
    fi
    log "node $n: killing pid $pid (SIGKILL)"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    rm -f "$(node_pidfile "$n")"
}

# Delete what these scripts put in DATA_DIR (never anything else); nodes must be stopped.
wipe_data_dir() {
    local pf n
    for pf in "$DATA_DIR"/node*/cassandra.pid; do
        [[ -e "$pf" ]] || continue
        n="${pf%/cassandra.pid}"; n="${n##*/node}"
        if node_pid "$n" >/dev/null; then die "node $n is running; stop it before wiping $DATA_DIR"; fi
    done
    rm -rf "$DATA_DIR"/node[0-9] "$DATA_DIR/cluster.env" "$DATA_DIR/.lock"
    rmdir "$DATA_DIR" 2>/dev/null || true
    log "removed the Cassandra data in $DATA_DIR"
}
