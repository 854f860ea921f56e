#!/usr/bin/env bash
# Fetch ZooKeeper's server jars (org.apache.zookeeper:zookeeper:$ZOOKEEPER_VERSION,
# default 3.8.4, with its runtime dependencies) from Maven Central with Maven
# into ${QUEUEY_ZOOKEEPER_HOME:-~/.cache/queuey/zookeeper}/apache-zookeeper-<v>/lib.
# Only needed where Debian's `zookeeper` package cannot be installed; the start
# script prefers /usr/share/java/zookeeper.jar. A second run does nothing.
set -euo pipefail
# shellcheck source=zookeeper-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/zookeeper-common.sh"

DEST="$QUEUEY_ZOOKEEPER_HOME/apache-zookeeper-$ZOOKEEPER_VERSION"
if [[ -f "$DEST/.queuey-complete" ]]; then
    log "ZooKeeper $ZOOKEEPER_VERSION already in $DEST"
    exit 0
fi
command -v mvn >/dev/null || die "mvn (Apache Maven) not found; apt-get install -y maven (or apt-get install -y zookeeper)"
fetch_work_dir "$QUEUEY_ZOOKEEPER_HOME/.fetch.XXXXXX"
# metrics-core and snappy-java are optional in ZooKeeper's pom, yet the server
# needs them (its binary tarball ships them).
write_fetch_pom zookeeper-fetch "org.apache.zookeeper:zookeeper:$ZOOKEEPER_VERSION" \
    io.dropwizard.metrics:metrics-core:4.1.12.1 org.xerial.snappy:snappy-java:1.1.10.5
log "fetching org.apache.zookeeper:zookeeper:$ZOOKEEPER_VERSION and its dependencies ..."
if ! fetch_pom_dependencies; then
    mvn_errors >&2
    die "Maven could not fetch ZooKeeper $ZOOKEEPER_VERSION"
fi
compgen -G "$WORK/dist/lib/zookeeper-$ZOOKEEPER_VERSION.jar" >/dev/null || die "no zookeeper-$ZOOKEEPER_VERSION.jar in the download"
install_fetched "$DEST" "maven org.apache.zookeeper:zookeeper:$ZOOKEEPER_VERSION"
log "ZooKeeper $ZOOKEEPER_VERSION jars ready in $DEST/lib"
