#!/usr/bin/env bash
# One-shot CLI (issue 12): whole-process wall time of `olocus-hsm sign` / `verify`, paired in one
# hyperfine run against `node -e 0` and `pkcs11-tool --sign` on the same SoftHSM token.
# Needs: hyperfine (apt-get install hyperfine), softhsm2, opensc, openssl, a built CLI (pnpm --filter @olocus/hsm-cli build).
# Usage: bash bench/cli-one-shot/run.sh [RUNS]   (writes hyperfine's JSON and Markdown into $OUT, default ./cli-one-shot-results)
set -euo pipefail
RUNS=${1:-15}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/packages/cli/dist/bin.js"
MODULE=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
OUT=${OUT:-$PWD/cli-one-shot-results}
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 2; }
[ -f "$BIN" ] || { echo "$BIN is missing: pnpm --filter @olocus/hsm-cli build" >&2; exit 2; }
WORK=$(mktemp -d /tmp/olocus-one-shot-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tokens" "$OUT"
cd "$WORK"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" > softhsm2.conf
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
# Throwaway token and store: these values protect nothing.
export OLOCUS_HSM_PIN=123456 OLOCUS_HSM_PASSPHRASE=one-shot-bench-passphrase
softhsm2-util --init-token --free --label bench --pin "$OLOCUS_HSM_PIN" --so-pin 12345678 >/dev/null
pkcs11-tool --module "$MODULE" --token-label bench --login --pin env:OLOCUS_HSM_PIN --keypairgen --key-type EC:prime256v1 --id 01 --label raw >/dev/null 2>&1
node "$BIN" init --dir p11 --backend pkcs11 --module "$MODULE" --token-label bench >/dev/null 2>&1
node "$BIN" --config p11/config.json keys create --id plain --algorithm ECDSA_P256 --no-rotation >/dev/null 2>&1
node "$BIN" --config p11/config.json keys create --id logical --algorithm ECDSA_P256 >/dev/null 2>&1
node "$BIN" init --dir sw >/dev/null 2>&1
node "$BIN" --config sw/config.json keys create --id plain --algorithm ECDSA_P256 --no-rotation >/dev/null 2>&1
# A software store protected by a random master key (HKDF, no scrypt): a throwaway key, mode 0600.
(umask 077; openssl rand -base64 32 > mk.key)
node "$BIN" init --dir mk --master-key-file mk.key >/dev/null 2>&1
node "$BIN" --config mk/config.json keys create --id plain --algorithm ECDSA_P256 --no-rotation >/dev/null 2>&1
# The same store with sign threads forced on (what a one-shot sign did before it signed inline).
mkdir -p p11-threads
node -e '
const fs = require("fs"); const c = JSON.parse(fs.readFileSync("p11/config.json", "utf8")); const d = process.cwd() + "/p11/";
c.backend.options = { ...c.backend.options, signThreads: 2, dispatch: "threads" };
c.audit = { ...(c.audit ?? {}), storage: { kind: "sqlite", path: d + "audit.db" } };
c.rotation = { ...c.rotation, storage: { kind: "sqlite", path: d + "rotation.db" } };
fs.writeFileSync("p11-threads/config.json", JSON.stringify(c));'
echo 'a release artefact' > msg
for c in p11 sw mk; do node "$BIN" --config $c/config.json sign --key plain --in msg --out $c.sig 2>/dev/null; done
node "$BIN" --config p11/config.json sign --key logical --in msg --out logical.sig 2>/dev/null
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$OUT/hyperfine.json" --export-markdown "$OUT/hyperfine.md" \
  -n 'node -e 0' 'node -e 0' \
  -n 'pkcs11-tool --sign' "pkcs11-tool --module $MODULE --token-label bench --login --pin env:OLOCUS_HSM_PIN --sign -m ECDSA --id 01 -i msg -o raw.sig" \
  -n 'olocus sign (PKCS#11, plain key)' "node $BIN --config p11/config.json sign --key plain --in msg --out p11.sig" \
  -n 'olocus sign (PKCS#11, plain key, sign threads forced)' "node $BIN --config p11-threads/config.json sign --key plain --in msg --out p11t.sig" \
  -n 'olocus verify (PKCS#11, plain key)' "node $BIN --config p11/config.json verify --key plain --in msg --signature p11.sig" \
  -n 'olocus sign (PKCS#11, logical key)' "node $BIN --config p11/config.json sign --key logical --in msg --out logical.sig" \
  -n 'olocus verify (PKCS#11, logical key)' "node $BIN --config p11/config.json verify --key logical --in msg --signature logical.sig" \
  -n 'olocus sign (software, plain key)' "node $BIN --config sw/config.json sign --key plain --in msg --out sw.sig" \
  -n 'olocus verify (software, plain key)' "node $BIN --config sw/config.json verify --key plain --in msg --signature sw.sig" \
  -n 'olocus sign (software, master key, plain key)' "node $BIN --config mk/config.json sign --key plain --in msg --out mk.sig" \
  -n 'olocus verify (software, master key, plain key)' "node $BIN --config mk/config.json verify --key plain --in msg --signature mk.sig"
node -e '
const r = require(process.argv[1]).results;
for (const x of r) console.log(`${x.command.padEnd(56)} median ${(x.median * 1000).toFixed(1).padStart(7)} ms  user ${(x.user * 1000).toFixed(0).padStart(4)} ms  sys ${(x.system * 1000).toFixed(0).padStart(3)} ms`);
' "$OUT/hyperfine.json"
