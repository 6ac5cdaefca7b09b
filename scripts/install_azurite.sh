#!/usr/bin/env bash
# Install the Azurite Azure Storage emulator pinned in scripts/azurite/package-lock.json into DIR, for the
# tests marked `azurite` (tests/servers/azurite.py starts it from DIR/node_modules/.bin/azurite-blob).
#   scripts/install_azurite.sh DIR      (scripts/setup.sh passes .venv/share/oea/azurite)
# Skips the work when DIR already holds that lock file's install. Needs npm and the npm registry (or the
# mirror npm is configured for); without them it says so in one line and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:?usage: scripts/install_azurite.sh DIR}"
SPEC=scripts/azurite
STAMP="$DEST/.package-lock.sha256"
want=$(sha256sum "$SPEC/package-lock.json" | cut -d' ' -f1)
version=$(sed -n 's/.*"azurite": "\(.*\)".*/\1/p' "$SPEC/package.json")

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$DEST/node_modules/.bin/azurite-blob" ]; then
  echo "setup: Azurite $version is in place ($DEST)" >&2
  exit 0
fi
command -v npm >/dev/null 2>&1 || {
  echo "setup: npm is needed to install Azurite $version (the azurite tests' storage emulator): apt-get install npm" >&2
  exit 1; }

mkdir -p "$DEST"
cp "$SPEC/package.json" "$SPEC/package-lock.json" "$DEST/"
log="$DEST/npm-install.log"
# ci: exactly the lock file's versions; --prefer-offline: a warm npm cache needs no network;
# --ignore-scripts: no package's install script runs (Azurite needs none: protobufjs's only checks versions).
if ! npm ci --prefix "$DEST" --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline \
    --fetch-retries=1 --fetch-timeout=30000 >"$log" 2>&1; then
  registry=$(npm config get registry 2>/dev/null || echo "the npm registry")
  if ! npm ping --fetch-retries=0 --fetch-timeout=15000 >/dev/null 2>&1; then
    echo "setup: cannot reach $registry, where Azurite $version comes from: check the network or proxy, or point npm at a mirror (npm config set registry URL)" >&2
  else
    echo "setup: npm could not install Azurite $version into $DEST (see the log below)" >&2
    tail -20 "$log" >&2
  fi
  exit 1
fi
rm -f "$log"
echo "$want" > "$STAMP"
echo "setup: Azurite $("$DEST/node_modules/.bin/azurite-blob" --version) installed in $DEST" >&2
