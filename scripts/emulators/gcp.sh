#!/usr/bin/env bash
# Installs (never starts) the Cloud KMS emulator the @olocus/hsm-backend-gcp tests run against:
#   gcp-kms-emulator server-dual (Go module proxy) -> $OLOCUS_EMULATORS_DIR/gcp/bin/server-dual
# Idempotent: the pinned version already in place is kept. The tests start it on free loopback
# ports (plaintext gRPC + HTTP gateway) and stop it themselves.
set -euo pipefail

GCP_KMS_EMULATOR_MODULE=github.com/blackwell-systems/gcp-kms-emulator
# v0.8.2 (named in CLOUD-TESTING.md) is not served by the Go module proxy this machine reaches (403);
# v0.8.1 is.
GCP_KMS_EMULATOR_VERSION=v0.8.1

ROOT="${OLOCUS_EMULATORS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/olocus-emulators}/gcp"
mkdir -p "$ROOT/bin"

stamp="$ROOT/bin/server-dual.version"
if [ -x "$ROOT/bin/server-dual" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$GCP_KMS_EMULATOR_VERSION" ]; then
  echo "gcp.sh: gcp-kms-emulator $GCP_KMS_EMULATOR_VERSION already installed" >&2
else
  command -v go >/dev/null || { echo "gcp.sh: 'go' is not on PATH; install Go 1.25+ (https://go.dev/dl) and re-run" >&2; exit 1; }
  echo "gcp.sh: installing gcp-kms-emulator $GCP_KMS_EMULATOR_VERSION (cmd/server-dual) from the Go module proxy" >&2
  # `go install module/cmd/server-dual@version` reads the module's version list for deprecation
  # notices, and the proxy refuses that list (403); a throw-away module that requires the pinned
  # version builds the same main package without asking for the list.
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cat >"$work/go.mod" <<GOMOD
module olocus.local/gcp-kms-emulator-build

go 1.25

require $GCP_KMS_EMULATOR_MODULE $GCP_KMS_EMULATOR_VERSION
GOMOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/server-dual"\n' "$GCP_KMS_EMULATOR_MODULE" >"$work/tools.go"
  if ! (cd "$work" && GOFLAGS=-mod=mod go mod tidy && GOFLAGS=-mod=mod go build -o "$ROOT/bin/server-dual" "$GCP_KMS_EMULATOR_MODULE/cmd/server-dual") >"$ROOT/go-install.log" 2>&1; then
    cat "$ROOT/go-install.log" >&2
    echo "gcp.sh: building gcp-kms-emulator $GCP_KMS_EMULATOR_VERSION failed" >&2
    exit 1
  fi
  echo "$GCP_KMS_EMULATOR_VERSION" >"$stamp"
fi

echo "gcp.sh: server-dual: $ROOT/bin/server-dual" >&2
