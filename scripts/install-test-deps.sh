#!/usr/bin/env bash
# Debian packages the tests use as real components and independent checkers.
# Installs only what is missing, so a prepared machine starts the tests at once.
set -euo pipefail
want=(softhsm2 opensc p11-kit p11-kit-modules libp11-kit-dev openssl gcc chromium bsdutils)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Cloud KMS emulators for the cloud backends' tests, by name and pinned version from the Go module
# proxy and PyPI (built once, then kept in ~/.cache/olocus-emulators). Azure's emulator (Lowkey
# Vault) is not served by the Maven mirror this machine reaches: its tests use a wire-level fake.
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/emulators/aws.sh"
bash "$here/emulators/gcp.sh"
