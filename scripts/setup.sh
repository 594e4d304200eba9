#!/usr/bin/env bash
# Installs what building the project needs on a fresh Debian machine with Node 20 (run as root
# or with sudo available): pnpm 10, the workspace's npm packages (native addons built against
# the system's Node headers), then builds every package.
set -euo pipefail
cd "$(dirname "$0")/.."

need_node_major=20
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt "$need_node_major" ]; then
  echo "setup: Node.js >= 20.19 is required (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if ! command -v pnpm >/dev/null 2>&1 || ! pnpm --version 2>/dev/null | grep -q '^10\.'; then
  echo "setup: installing pnpm 10" >&2
  npm install -g pnpm@10 >/dev/null
fi

# pkcs11js and better-sqlite3 compile against Node's headers; Debian's Node ships them in /usr.
if [ -d /usr/include/node ]; then export npm_config_nodedir=/usr; fi
pnpm install --frozen-lockfile
pnpm build
