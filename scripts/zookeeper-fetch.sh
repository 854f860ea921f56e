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
mkdir -p "$QUEUEY_ZOOKEEPER_HOME"
WORK="$(mktemp -d "$QUEUEY_ZOOKEEPER_HOME/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>queuey.local</groupId><artifactId>zookeeper-fetch</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.zookeeper</groupId><artifactId>zookeeper</artifactId>
      <version>$ZOOKEEPER_VERSION</version>
    </dependency>
    <!-- optional in ZooKeeper's pom, yet the server needs them (its binary tarball ships them) -->
    <dependency>
      <groupId>io.dropwizard.metrics</groupId><artifactId>metrics-core</artifactId><version>4.1.12.1</version>
    </dependency>
    <dependency>
      <groupId>org.xerial.snappy</groupId><artifactId>snappy-java</artifactId><version>1.1.10.5</version>
    </dependency>
  </dependencies>
</project>
POM
log "fetching org.apache.zookeeper:zookeeper:$ZOOKEEPER_VERSION and its dependencies ..."
# shellcheck disable=SC2086
if ! mvn -B -q ${QUEUEY_MVN_ARGS:-} -f "$WORK/pom.xml" \
        org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$WORK/dist/lib" >"$WORK/mvn.log" 2>&1; then
    grep -E '^\[ERROR\]' "$WORK/mvn.log" | head -n 5 >&2 || true
    die "Maven could not fetch ZooKeeper $ZOOKEEPER_VERSION"
fi
compgen -G "$WORK/dist/lib/zookeeper-$ZOOKEEPER_VERSION.jar" >/dev/null || die "no zookeeper-$ZOOKEEPER_VERSION.jar in the download"
echo "maven org.apache.zookeeper:zookeeper:$ZOOKEEPER_VERSION, fetched $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$WORK/dist/.queuey-complete"
rm -rf "$DEST"
mv "$WORK/dist" "$DEST"
log "ZooKeeper $ZOOKEEPER_VERSION jars ready in $DEST/lib"
