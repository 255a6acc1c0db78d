#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz / libFuzzer) for a bounded time and prints, per target, how many inputs
# it executed. A crash fails the script; libFuzzer leaves the input in fuzz/artifacts/<target>/ (replay it with
# `cargo fuzz run -s none <target> <file>` from the repository root).
#
# Usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   default: COMMANDPOST_FUZZ_SECONDS or 45 seconds, every target.
#
# What it needs, installed once:
#   - cargo-fuzz, pinned, into the tool cache outside the clone (COMMANDPOST_TOOLS, default
#     ${XDG_CACHE_HOME:-$HOME/.cache}/commandpost/tools, as scripts/build-wasm.sh does);
#   - a C++ compiler (libfuzzer-sys builds libFuzzer from source).
# Only stable Rust is needed: with `-s none` cargo-fuzz passes stable flags only (`-Cpasses=sancov-module`,
# `-Cllvm-args=-sanitizer-coverage-…`, `--cfg fuzzing`). No sanitizer: every crate of ours forbids unsafe code, so
# what the fuzzers hunt is panics (debug assertions and overflow checks on), hangs and runaway memory.
#
# The seeds in fuzz/corpus/<target>/ (and templates/ for the template parser) are read, never written: what libFuzzer
# learns goes to fuzz/target/corpus/<target>/, which later local runs reuse.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
TOOLS="${COMMANDPOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/commandpost/tools}"
SECONDS_PER_TARGET="${1:-${COMMANDPOST_FUZZ_SECONDS:-45}}"
shift || true
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=(wire_decode sync_message template_parse)

step() { printf '==> %s\n' "$*" >&2; }

ROOT="$TOOLS/cargo-fuzz-$CARGO_FUZZ_VERSION"
CARGO_FUZZ="$ROOT/bin/cargo-fuzz"
if [ -x "$CARGO_FUZZ" ] && [ "$("$CARGO_FUZZ" --version)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  step "cargo-fuzz $CARGO_FUZZ_VERSION cached at $ROOT"
else
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION into $ROOT (about 2 minutes on 2 cores, once)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$ROOT"
fi

if ! command -v c++ >/dev/null; then
  step "installing g++ (libFuzzer is C++)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++
fi

step "building the fuzz targets (instrumented release build, in fuzz/target)"
"$CARGO_FUZZ" build -s none

for target in "${TARGETS[@]}"; do
  work="fuzz/target/corpus/$target"
  mkdir -p "$work"
  seeds=("fuzz/corpus/$target")
  [ "$target" = template_parse ] && seeds+=(templates)
  step "fuzzing $target for ${SECONDS_PER_TARGET}s"
  log="fuzz/target/$target.log"
  if ! "$CARGO_FUZZ" run -s none "$target" "$work" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs="$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -n 1)"
  corpus="$(find "$work" -type f | wc -l)"
  printf 'fuzz %s: %s executions in %ss, no crash (corpus %s inputs)\n' \
    "$target" "${runs:-?}" "$SECONDS_PER_TARGET" "$corpus"
done
