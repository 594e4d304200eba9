#!/usr/bin/env bash
# Installs everything the tests need (Debian packages, pnpm, npm packages), builds, and runs
# every test of every package. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
bash scripts/start-postgres.sh
bash scripts/setup.sh
pnpm typecheck
pnpm lint
pnpm lint:packages
# every change to what a package exports shows in review: a stale API report fails here
pnpm api:check
rm -rf packages/*/.test-results examples/.test-results
status=0
pnpm test || status=$?
node scripts/test-summary.mjs || status=$?
exit $status
