#!/usr/bin/env bash
# Runs every test of commandpost: formatting, lints, unit, property, golden and integration tests (real server on
# loopback, real JavaScript automerge-repo client). Installs what it needs itself, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The JavaScript automerge-repo client used by the interop tests (versions pinned in tests/js/package-lock.json).
if [ -f tests/js/package.json ]; then
  if ! command -v npm >/dev/null; then
    echo "npm is required for the JavaScript interop tests" >&2
    exit 1
  fi
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
