#!/usr/bin/env bash
# Installs (never starts) Lowkey Vault, the Azure Key Vault emulator used by
# packages/backend-azure's tests, from Maven Central by name and pinned version.
# Idempotent: a jar already present is kept. Tests start it on free loopback ports.
set -euo pipefail

LOWKEY_VERSION="${LOWKEY_VERSION:-7.3.74}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${OLOCUS_EMULATOR_DIR:-$ROOT/.emulators}/azure"
JAR="$DEST/lowkey-vault-app-$LOWKEY_VERSION.jar"

mkdir -p "$DEST"
# The cache folder is local to this checkout and never committed.
[ -f "$ROOT/.emulators/.gitignore" ] || printf '*\n' > "$ROOT/.emulators/.gitignore" 2>/dev/null || true

if [ -s "$JAR" ]; then
  echo "azure: Lowkey Vault $LOWKEY_VERSION already installed at $JAR"
  exit 0
fi

command -v mvn >/dev/null || { echo "azure: Maven (mvn) is required: apt-get install maven" >&2; exit 1; }
mvn -q dependency:copy \
  "-Dartifact=com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VERSION:jar" \
  "-DoutputDirectory=$DEST"
test -s "$JAR" || { echo "azure: download finished but $JAR is missing" >&2; exit 1; }
echo "azure: installed Lowkey Vault $LOWKEY_VERSION at $JAR"
