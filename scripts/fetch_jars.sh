#!/usr/bin/env bash
# Copy the JVM jars of scripts/jars/pom.xml (Delta Lake for Spark 3.5, JDBC drivers) into a folder
# the local Spark session lists in spark.jars, so nothing is resolved when a session starts.
#   scripts/fetch_jars.sh DIR      (scripts/setup.sh passes .venv/share/oea/jars)
# OEA_MAVEN_REPO points at a Maven Central mirror; the default is Maven Central itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:?usage: scripts/fetch_jars.sh DIR}"
REPO_URL="${OEA_MAVEN_REPO:-https://repo.maven.apache.org/maven2}"
POM=scripts/jars/pom.xml
STAMP="$DEST/.pom.sha256"
want=$(sha256sum "$POM" | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && ls "$DEST"/delta-spark_*.jar >/dev/null 2>&1; then
  echo "setup: Spark jars are in place ($DEST)" >&2
  exit 0
fi
command -v mvn >/dev/null 2>&1 || {
  echo "setup: Maven (mvn) is needed to fetch Delta Lake's jars: apt-get install maven" >&2; exit 1; }

mvn_copy() {
  mvn -q -B "$@" -f "$POM" -Doea.maven.repo="$REPO_URL" dependency:copy-dependencies \
    -DincludeScope=runtime -DexcludeGroupIds=org.scala-lang -DoutputDirectory="$tmp" >"$tmp.log" 2>&1
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/oea-jars.XXXXXX")
trap 'rm -rf "$tmp" "$tmp.log"' EXIT
# Offline first (a warm ~/.m2 needs no network); then Maven Central, said in one line when unreachable.
if ! mvn_copy -o; then
  rm -rf "$tmp"; mkdir -p "$tmp"
  probe="$REPO_URL/io/delta/delta-spark_2.12/3.3.2/delta-spark_2.12-3.3.2.pom"
  if ! python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)' "$probe" \
      >/dev/null 2>&1; then
    echo "setup: cannot reach Maven Central ($REPO_URL), where Delta Lake's and the JDBC drivers' jars come from: check the network or proxy, or set OEA_MAVEN_REPO to a mirror" >&2
    exit 1
  fi
  mvn_copy || { echo "setup: mvn could not fetch the jars of $POM (see the log below)" >&2; tail -20 "$tmp.log" >&2; exit 1; }
fi
mkdir -p "$DEST"
rm -f "$DEST"/*.jar
cp "$tmp"/*.jar "$DEST"/
echo "$want" > "$STAMP"
echo "setup: Spark jars installed in $DEST: $(cd "$DEST" && ls *.jar | tr '\n' ' ')" >&2
