#!/usr/bin/env bash
# Fetch Apache Cassandra $CASSANDRA_VERSION (default 5.0.9) from Maven Central
# with Maven and unpack it into
#   ${QUEUEY_CASSANDRA_HOME:-$HOME/.cache/queuey/cassandra}/apache-cassandra-<version>
# A second run does nothing when that directory is complete.
#
# QUEUEY_CASSANDRA_SOURCE picks how:
#   jars     (default) the server jar org.apache.cassandra:cassandra-all:<v> with its
#            runtime dependencies into lib/ (the same jars the binary tarball's lib/
#            has; the start script writes its own conf, so no bin/ or conf/ are
#            needed). Maven Central serves no binary tarball after 4.0-alpha2, so
#            for 5.0.x this is the way that works.
#   tarball  the binary distribution org.apache.cassandra:apache-cassandra:<v>:tar.gz:bin,
#            for a version (or a mirror) that serves it; Maven's error if not.
# QUEUEY_MVN_ARGS: extra Maven arguments (e.g. "-o" or "-Dmaven.repo.local=DIR").
set -euo pipefail
# shellcheck source=cassandra-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/cassandra-common.sh"

SOURCE="${QUEUEY_CASSANDRA_SOURCE:-jars}"
case "$SOURCE" in tarball|jars) ;; *) die "QUEUEY_CASSANDRA_SOURCE must be jars or tarball (got '$SOURCE')" ;; esac
[[ "$CASSANDRA_VERSION" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?(-[A-Za-z0-9.]+)?$ ]] || die "bad CASSANDRA_VERSION '$CASSANDRA_VERSION'"

if [[ -f "$CASSANDRA_DIST/.queuey-complete" ]]; then
    log "Cassandra $CASSANDRA_VERSION already in $CASSANDRA_DIST ($(<"$CASSANDRA_DIST/.queuey-complete"))"
    exit 0
fi
command -v mvn >/dev/null || die "mvn (Apache Maven) not found; install it (apt-get install maven)"
fetch_work_dir "$QUEUEY_CASSANDRA_HOME/.fetch-$CASSANDRA_VERSION.XXXXXX"
MVN_FLAGS=(-U)   # re-ask Central instead of trusting a cached "not found"

fetch_tarball() {
    local art="org.apache.cassandra:apache-cassandra:$CASSANDRA_VERSION:tar.gz:bin" tgz
    log "fetching $art from Maven Central ..."
    if ! run_mvn "$MAVEN_DEP_PLUGIN:copy" -Dartifact="$art" -DoutputDirectory="$WORK/dl"; then
        log "Maven could not fetch $art:"
        mvn_errors >&2
        return 1
    fi
    tgz="$(compgen -G "$WORK/dl/*.tar.gz" | head -n1)"
    mkdir -p "$WORK/x"
    tar -xzf "$tgz" -C "$WORK/x"
    mv "$WORK/x/apache-cassandra-$CASSANDRA_VERSION" "$WORK/dist"
    echo "tarball $art" >"$WORK/dist/.queuey-source"
}

fetch_jars() {
    local art="org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION"
    log "fetching $art and its runtime dependencies from Maven Central (about 100 jars, once; cached in $QUEUEY_CASSANDRA_HOME) ..."
    write_fetch_pom cassandra-fetch "$art"
    if ! fetch_pom_dependencies; then
        log "Maven could not fetch $art:"
        mvn_errors >&2
        return 1
    fi
    echo "jars $art + runtime dependencies" >"$WORK/dist/.queuey-source"
}

case "$SOURCE" in
    tarball) fetch_tarball || die "Maven Central does not serve the Cassandra $CASSANDRA_VERSION binary tarball (error above)" ;;
    jars)    fetch_jars || die "could not fetch Cassandra $CASSANDRA_VERSION jars (error above)" ;;
esac

# Check that what we got is the version we asked for.
main_jar="$(compgen -G "$WORK/dist/lib/apache-cassandra-$CASSANDRA_VERSION.jar" ||
            compgen -G "$WORK/dist/lib/cassandra-all-$CASSANDRA_VERSION.jar" || true)"
[[ -n "$main_jar" ]] || die "no Cassandra server jar in the download"
read_version() {  # version.properties from the server jar, with unzip or python3
    if command -v unzip >/dev/null; then
        unzip -p "$1" org/apache/cassandra/config/version.properties
    else
        python3 -c 'import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read("org/apache/cassandra/config/version.properties").decode())' "$1"
    fi
}
got="$(read_version "$main_jar" | sed -n 's/^CassandraVersion=//p')"
[[ "$got" == "$CASSANDRA_VERSION" ]] || die "downloaded jar says version '$got', expected $CASSANDRA_VERSION"
compgen -G "$WORK/dist/lib/jamm-*.jar" >/dev/null || die "jamm agent jar missing from the download"

install_fetched "$CASSANDRA_DIST" "$(<"$WORK/dist/.queuey-source")"
log "Cassandra $CASSANDRA_VERSION ready in $CASSANDRA_DIST ($(find "$CASSANDRA_DIST/lib" -name '*.jar' | wc -l) jars in lib/)"
