#!/usr/bin/env bash
# Starts commandpost with its web UI on the embedded store: builds the browser client (scripts/build-wasm.sh,
# which installs its own toolchain the first time), then the release server, which embeds the client, and runs
# `commandpost serve` with any arguments given (see `serve --help`; default address 127.0.0.1:7420).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-wasm.sh
exec cargo run --release -p server -- serve "$@"
