#!/usr/bin/env bash
# Installs (never starts) the AWS emulators the @olocus/hsm-backend-aws tests run against:
#   local-kms (Go module proxy)  -> $OLOCUS_EMULATORS_DIR/aws/bin/local-kms
#   moto[server] (PyPI), in a venv -> $OLOCUS_EMULATORS_DIR/aws/moto-venv/bin/moto_server
# Idempotent: a pinned version already in place is kept. The tests start both on free loopback ports.
# A venv rather than `pip install --user`: it works the same as root in CI and never touches the
# system's or pyenv's site-packages.
set -euo pipefail

LOCAL_KMS_MODULE=github.com/nsmithuk/local-kms
LOCAL_KMS_VERSION=v0.0.0-20260228092603-2a5e92d09ab6
MOTO_VERSION=5.2.5

ROOT="${OLOCUS_EMULATORS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/olocus-emulators}/aws"
mkdir -p "$ROOT/bin"

# --- local-kms -------------------------------------------------------------------------------
stamp="$ROOT/bin/local-kms.version"
if [ -x "$ROOT/bin/local-kms" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$LOCAL_KMS_VERSION" ]; then
  echo "aws.sh: local-kms $LOCAL_KMS_VERSION already installed" >&2
else
  command -v go >/dev/null || { echo "aws.sh: 'go' is not on PATH; install Go 1.22+ (https://go.dev/dl) and re-run" >&2; exit 1; }
  echo "aws.sh: installing local-kms $LOCAL_KMS_VERSION from the Go module proxy" >&2
  # Newer trees keep the main package under cmd/local-kms; try the module root first, then that.
  if ! GOBIN="$ROOT/bin" GOFLAGS=-mod=mod go install "$LOCAL_KMS_MODULE@$LOCAL_KMS_VERSION" 2>"$ROOT/go-install.log"; then
    GOBIN="$ROOT/bin" GOFLAGS=-mod=mod go install "$LOCAL_KMS_MODULE/cmd/local-kms@$LOCAL_KMS_VERSION" 2>>"$ROOT/go-install.log" \
      || { cat "$ROOT/go-install.log" >&2; echo "aws.sh: go install of local-kms failed" >&2; exit 1; }
  fi
  echo "$LOCAL_KMS_VERSION" >"$stamp"
fi

# --- moto ------------------------------------------------------------------------------------
VENV="$ROOT/moto-venv"
if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto,sys; sys.exit(0 if moto.__version__=='$MOTO_VERSION' else 1)" 2>/dev/null; then
  echo "aws.sh: moto $MOTO_VERSION already installed" >&2
else
  PY="${PYTHON:-python3}"
  command -v "$PY" >/dev/null || { echo "aws.sh: python3 is not on PATH; install Python 3.9+ and re-run" >&2; exit 1; }
  echo "aws.sh: installing moto[server]==$MOTO_VERSION from PyPI into $VENV" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

echo "aws.sh: local-kms: $ROOT/bin/local-kms" >&2
echo "aws.sh: moto_server: $VENV/bin/moto_server" >&2
