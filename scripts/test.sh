#!/usr/bin/env bash
# Runs every test of commandpost: formatting, lints, unit, property, golden and integration tests (real server on
# loopback, real JavaScript automerge-repo client, real headless Chromium against the web UI), the client's
# wasm-bindgen tests in Node, schemathesis against a real server (every operation of its OpenAPI description, for a
# bounded time), and every fuzz target for a bounded time (COMMANDPOST_FUZZ_SECONDS per target, default
# 45). Installs what it needs itself, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }

# Headless Chromium and its WebDriver, for the browser tests; ngircd (a real IRC server) for the IRC bot's tests
# (Debian's packages; nothing is downloaded by a test tool). Test certificates are made in Rust (tests/src/ca.rs).
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ] || ! [ -x /usr/sbin/ngircd ]; then
  step "installing chromium, chromium-driver and ngircd"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    ngircd
  # The package starts a system-wide ngircd on port 6667; the tests start their own, so stop it if it runs.
  if command -v systemctl >/dev/null && systemctl is-active --quiet ngircd 2>/dev/null; then
    $SUDO systemctl stop ngircd || true
  fi
fi

# The JavaScript automerge-repo client used by the interop tests, and axe-core for the browser tests' accessibility
# check (versions pinned in tests/js/package-lock.json).
if ! command -v npm >/dev/null; then
  echo "npm is required for the JavaScript interop tests" >&2
  exit 1
fi
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
# Hocuspocus, for the load generator's smoke test of its Yjs peers (bench/tests/hocuspocus_smoke.rs; pinned in
# bench/js/package-lock.json).
(cd bench/js && npm ci --no-audit --no-fund --loglevel=error)

# A real SMTP server for the mail tests (tests/py/smtp_server.py): aiosmtpd, pinned, in a virtual environment of its
# own under the tools cache, where tests/src/smtp.rs looks for it.
TOOLS="${COMMANDPOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/commandpost/tools}"
AIOSMTPD_VER=1.4.6
if ! [ -x "$TOOLS/aiosmtpd-$AIOSMTPD_VER/bin/python" ]; then
  step "installing aiosmtpd $AIOSMTPD_VER"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv
  fi
  python3 -m venv "$TOOLS/aiosmtpd-$AIOSMTPD_VER"
  "$TOOLS/aiosmtpd-$AIOSMTPD_VER/bin/pip" install -q "aiosmtpd==$AIOSMTPD_VER"
fi

# The browser client, which the server serves and the browser tests load (installs its toolchain once).
bash scripts/build-wasm.sh

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "wasm-bindgen tests of client-wasm (Node)"
WB_VER="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$TOOLS/wasm-bindgen-$WB_VER/bin/wasm-bindgen-test-runner" \
  cargo test --target wasm32-unknown-unknown -p client-wasm --test web

step "cargo test --workspace"
cargo test --workspace

step "schemathesis against a real server, from its OpenAPI description (scripts/schemathesis.sh)"
bash scripts/schemathesis.sh

step "fuzz targets, ${COMMANDPOST_FUZZ_SECONDS:-45}s each (scripts/fuzz.sh)"
bash scripts/fuzz.sh "${COMMANDPOST_FUZZ_SECONDS:-45}"
