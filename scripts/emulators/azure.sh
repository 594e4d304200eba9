#!/usr/bin/env bash
# Installs (never starts) Lowkey Vault, the Azure Key Vault emulator, from Maven Central by name
# and pinned version, into the checkout's git-ignored .emulators/azure. Idempotent.
#
# As of 2026-12 the Maven registry this project's machines reach does not serve the app jar
# (com.github.nagyesta.lowkey-vault:lowkey-vault-app, any version: "Could not find artifact";
# only lowkey-vault-client and lowkey-vault-testcontainers are served). The backend-azure tests
# therefore run against the project's own wire-level Key Vault
# (packages/backend-azure/test/fake-key-vault.ts) and do not need this jar: a failed download is
# reported and the script exits 0, so test setup goes on. Pass --strict to exit non-zero instead.
# When the jar is there, start it with Java 25 (7.x):
#   /usr/lib/jvm/temurin-25-jdk-amd64/bin/java -jar .emulators/azure/lowkey-vault-app-7.3.74.jar \
#     --server.port=PORT --LOWKEY_VAULT_RELAXED_PORTS=true
set -euo pipefail

LOWKEY_VERSION="${LOWKEY_VERSION:-7.3.74}"
STRICT=0
[ "${1:-}" = "--strict" ] && STRICT=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${OLOCUS_EMULATOR_DIR:-$ROOT/.emulators}"
DEST="$CACHE/azure"
JAR="$DEST/lowkey-vault-app-$LOWKEY_VERSION.jar"

mkdir -p "$DEST"
# the cache folder is local to this checkout and never committed
[ -f "$CACHE/.gitignore" ] || printf '*\n' > "$CACHE/.gitignore"

if [ -s "$JAR" ]; then
  echo "azure: Lowkey Vault $LOWKEY_VERSION already installed at $JAR"
  exit 0
fi

fail() {
  echo "azure: $1" >&2
  echo "azure: the backend-azure tests do not need it (they use packages/backend-azure/test/fake-key-vault.ts)" >&2
  [ "$STRICT" = 1 ] && exit 1
  exit 0
}

command -v mvn >/dev/null || fail "Maven (mvn) is missing: apt-get install maven"
if ! mvn -q dependency:copy \
  "-Dartifact=com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VERSION:jar" \
  "-DoutputDirectory=$DEST" >"$DEST/mvn.log" 2>&1; then
  fail "Lowkey Vault $LOWKEY_VERSION is not served by the Maven registry (see $DEST/mvn.log)"
fi
test -s "$JAR" || fail "the download finished but $JAR is missing"
echo "azure: installed Lowkey Vault $LOWKEY_VERSION at $JAR"
