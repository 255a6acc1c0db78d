#!/usr/bin/env bash
# Builds the browser client (client-wasm) into web/pkg/: client_wasm_bg.wasm plus the ES-module glue
# (client_wasm.js, .d.ts) that `import init, { LiveIncident } from "/pkg/client_wasm.js"` loads with `--target web`.
#
# Idempotent and self-installing, following docs in shared/design/wasm-toolchain.md (the recipe tested on these
# machines):
#   1. the wasm32-unknown-unknown target from rustup, or, if rustup cannot download it, Debian's rustc-web with
#      -Zbuild-std (slower, but needs no download beyond apt);
#   2. wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock (the CLI refuses a module built
#      by another version), installed once into a cache outside the clone, keyed by version;
#   3. `cargo build --profile wasm-release` (opt-level "s", LTO; a profile of its own so the server's release build is
#      unaffected), then wasm-bindgen.
# wasm-opt is not run: Debian's binaryen 108 produces modules that fail to load, and the npm binaryen package is an
# optional ~15% saving (see the recipe) for a later step.
#
# Environment: COMMANDPOST_TOOLS overrides the tool cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/commandpost/tools).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=wasm32-unknown-unknown
PROFILE=wasm-release
OUT=web/pkg
TOOLS="${COMMANDPOST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/commandpost/tools}"

step() { printf '==> %s\n' "$*" >&2; }

# The wasm-bindgen version Cargo.lock resolved (the crate is pinned with "=x.y.z" in the root Cargo.toml).
wb_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}
WB_VER="$(wb_version)"
if [ -z "$WB_VER" ]; then
  echo "wasm-bindgen is not in Cargo.lock; run 'cargo generate-lockfile' or 'cargo check -p client-wasm' first" >&2
  exit 1
fi

# 1. Compiler for wasm32: rustup's target, else Debian's build-std route.
FALLBACK=0
if command -v rustup >/dev/null && rustup target add "$TARGET" >&2; then
  step "rustup target $TARGET ready"
else
  step "rustup could not provide $TARGET; falling back to Debian's rustc-web with -Zbuild-std"
  FALLBACK=1
  if ! [ -x /usr/bin/rustc ] || ! dpkg -s rustc-web rust-web-src lld-22 >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update
    # lld-22 explicitly: the rust-lld link in rust-web-llvm points at it.
    $SUDO apt-get install -y --no-install-recommends rustc-web cargo-web rust-web-src rust-web-llvm lld-22
  fi
fi

# 2. wasm-bindgen CLI, version-locked to the crate, cached outside the clone.
WB_ROOT="$TOOLS/wasm-bindgen-$WB_VER"
WB="$WB_ROOT/bin/wasm-bindgen"
if [ -x "$WB" ] && [ "$("$WB" --version)" = "wasm-bindgen $WB_VER" ]; then
  step "wasm-bindgen $WB_VER cached at $WB_ROOT"
else
  step "installing wasm-bindgen-cli $WB_VER into $WB_ROOT (about 5 minutes on 2 cores, once)"
  mkdir -p "$WB_ROOT"
  # No --locked: the CLI's own lockfile pins a crate newer than the registry mirror here.
  cargo install wasm-bindgen-cli --version "$WB_VER" --root "$WB_ROOT"
fi

# 3. Build, then generate the JavaScript bindings.
step "cargo build --profile $PROFILE --target $TARGET -p client-wasm"
if [ "$FALLBACK" -eq 0 ]; then
  cargo build --profile "$PROFILE" --target "$TARGET" -p client-wasm
else
  # Debian's cargo/rustc are hidden behind rustup's on PATH, hence the explicit paths.
  env PATH=/usr/bin:/bin RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    /usr/bin/cargo build --profile "$PROFILE" --target "$TARGET" -Zbuild-std=std,panic_abort -p client-wasm
fi

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
WASM="${TARGET_DIR:-target}/$TARGET/$PROFILE/client_wasm.wasm"
step "wasm-bindgen --target web -> $OUT"
rm -rf "$OUT"
# The name section only serves debuggers: 0.6 MB of 3.5 MB.
"$WB" --target web --remove-name-section --remove-producers-section --out-dir "$OUT" "$WASM"

SIZE=$(wc -c <"$OUT/client_wasm_bg.wasm")
GZ=$(gzip -9 -c "$OUT/client_wasm_bg.wasm" | wc -c)
step "built $OUT/client_wasm_bg.wasm: $SIZE bytes ($GZ gzipped)"
