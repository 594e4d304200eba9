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
