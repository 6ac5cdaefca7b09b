#!/usr/bin/env bash
# Install everything oea needs on a fresh machine: Java for Spark, a virtual environment with the
# pinned packages, the oea_core package, Delta Lake's jars (from Maven Central), the Azurite storage
# emulator for the azurite tests (from npm) and a Jupyter kernel bound to that environment.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }

if ! java -version >/dev/null 2>&1; then
  log "installing Java 17 (needed by Spark)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

if ! command -v mvn >/dev/null 2>&1; then
  log "installing Maven (fetches Delta Lake's jars from Maven Central)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq maven >/dev/null
fi

if ! command -v dot >/dev/null 2>&1; then
  log "installing Graphviz (oea flow graph)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq graphviz >/dev/null
fi

if [ ! -x /usr/sbin/sshd ]; then
  log "installing OpenSSH's server (the tests marked sftp run it as an unprivileged user; it is not started)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # policy-rc.d exit 101: the package's install does not start a system sshd on port 22
  NOSTART=""; [ -e /usr/sbin/policy-rc.d ] || NOSTART=1
  [ -z "$NOSTART" ] || printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  [ -z "$NOSTART" ] || $SUDO chmod +x /usr/sbin/policy-rc.d
  ( $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server >/dev/null ) \
    || log "could not install openssh-server with apt-get; the tests marked sftp need it"
  [ -z "$NOSTART" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing PostgreSQL (oea publish postgres needs its client tools; the tests marked postgres start a throwaway server)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # as for sshd: no system cluster is started
  NOSTART=""; [ -e /usr/sbin/policy-rc.d ] || NOSTART=1
  [ -z "$NOSTART" ] || printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  [ -z "$NOSTART" ] || $SUDO chmod +x /usr/sbin/policy-rc.d
  ( $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null ) \
    || log "could not install postgresql with apt-get; oea publish postgres and the tests marked postgres need it"
  [ -z "$NOSTART" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

if ! command -v npm >/dev/null 2>&1; then
  log "installing Node.js and npm (they install and run the Azurite storage emulator for the cloud-lake tests)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  ( $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null ) \
    || log "could not install nodejs and npm with apt-get; the tests marked azurite need them"
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { log "Python 3.10 or newer is needed (found $("$PYTHON" --version 2>&1))"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
log "installing pinned packages (requirements.txt)"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
# dbt in its own environment (requirements-dbt.txt says why); oea publish postgres runs its `dbt`.
if [ ! -x .venv/share/oea/dbt/bin/python ]; then
  log "creating .venv/share/oea/dbt (dbt-core, dbt-postgres)"
  "$PYTHON" -m venv .venv/share/oea/dbt
fi
.venv/share/oea/dbt/bin/python -m pip install -q --disable-pip-version-check -r requirements-dbt.txt
# Delta Lake's jars and the JDBC drivers, pinned in scripts/jars/pom.xml; the local Spark session loads them.
./scripts/fetch_jars.sh .venv/share/oea/jars
# Azurite, pinned in scripts/azurite/package-lock.json; only the azurite tests need it, so without npm or the
# npm registry set-up says so in one line and goes on.
./scripts/install_azurite.sh .venv/share/oea/azurite || log "going on without Azurite: the tests marked azurite cannot run"
# A kernel spec with this environment's absolute interpreter, so papermill and nbmake never pick another Python.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (oea)" >/dev/null
log "ready: $(.venv/bin/python -c 'import pyspark, deltalake; print("pyspark", pyspark.__version__, "deltalake", deltalake.__version__)')"
