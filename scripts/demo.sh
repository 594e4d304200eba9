#!/usr/bin/env bash
# The main job on the embedded default: builds the project, then runs `olocus-hsm demo` in a
# fresh temporary directory (a key of each algorithm generated, data signed and verified).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node packages/cli/dist/bin.js demo "$@"
