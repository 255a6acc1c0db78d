#!/usr/bin/env bash
# Reproduces the load figures of BENCHMARKS.md: builds the release server and commandpost-bench, then runs every
# scenario against commandpost, against automerge-repo's own sync server (npm @automerge/automerge-repo-sync-server)
# and against Hocuspocus (npm @hocuspocus/server, with Yjs peers), both pinned in bench/js/, on this machine, in this
# run: war-room, the sweep, trace and join-storm against all three; ack-cost and many-incidents are about commandpost
# alone. The real-clients scenario drives stock JavaScript clients (bench/realjs/, its own pins) against commandpost,
# Hocuspocus (with its SQLite persistence) and the sync server. Each scenario gets a fresh server of each kind on a
# free loopback port (with a temporary data directory where it keeps one). Results land in target/bench/<time>/ as
# JSON, and as Markdown tables in figures.md there.
#
#   bash scripts/bench.sh                  modest sizes, about 15 minutes (the default: the machine is shared)
#   bash scripts/bench.sh --full           the issue's sizes (5-minute war room, 1,000 viewers, the whole trace, …)
#   bash scripts/bench.sh --only war-room  one scenario: war-room, sweep, ack-cost, trace, join-storm,
#                                          many-incidents or real-clients; repeatable
#   bash scripts/bench.sh --profile        also records a perf profile of commandpost while the war room types
#                                          (perf report -i target/bench/<time>/commandpost.perf.data)
#   bash scripts/bench.sh --sweep "25 50"  the viewer counts of the sweep (each server stops at its first count whose
#                                          p99 is over 100 ms or that fails: the sweep looks for the most it carries)
#   bash scripts/bench.sh --out DIR        results in DIR
#   bash scripts/bench.sh --no-pin         real-clients leaves the servers and its driver unpinned (by default, where
#                                          taskset exists, the server runs on CPU 0 and the Node driver on CPU 1)
#
# real-clients: 4 typists × 5 marks/s with 8 and with 16 viewers, each against a fresh commandpost, Hocuspocus and
# sync server; 10 s of typing by default, the issue's 30 s with --full. Its `npm ci` builds better-sqlite3 (for
# Hocuspocus' persistence) from source, a minute or two.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }

full=false
profile=false
pin_cpus=true
only=()
sweep_counts=()
out="target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=true ;;
    --profile) profile=true ;;
    --no-pin) pin_cpus=false ;;
    --only) only+=("$2"); shift ;;
    --out) out="$2"; shift ;;
    --sweep) read -ra sweep_counts <<< "$2"; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
wanted() { [ ${#only[@]} -eq 0 ] || printf '%s\n' "${only[@]}" | grep -qx "$1"; }

# Sizes. The defaults keep a run to a few minutes on a shared 2-core machine; --full is what the issue asks for.
if $full; then
  war=(--editors 50 --rate 5 --viewers 1000 --duration 300 --window 30 --history 1000)
  sweep_viewers=(5 10 25 50 100 250 500 1000 1500 2000)
  sweep=(--editors 5 --rate 5 --duration 60 --window 10 --history 1000)
  trace=(--viewers 100)
  storm=(--clients 1000 --history 50000 --over 10)
  many_store=10000
  many=(--load 1000 --viewers 1000)
  real_clients=(--typists 4 --rate 5 --duration 30)
else
  war=(--editors 10 --rate 5 --viewers 200 --duration 20 --window 5 --history 1000)
  sweep_viewers=(25 50 100 200)
  sweep=(--editors 5 --rate 5 --duration 10 --window 5 --history 1000)
  trace=(--viewers 20 --limit 20000)
  storm=(--clients 200 --history 10000 --over 2)
  many_store=2000
  many=(--load 500 --viewers 500)
  real_clients=(--typists 4 --rate 5 --duration 10)
fi
real_clients_viewers=(8 16)
[ ${#sweep_counts[@]} -gt 0 ] && sweep_viewers=("${sweep_counts[@]}")

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
pids=()
# The command prefix that starts a server (taskset, for real-clients); empty: wherever the kernel likes.
pin=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# real-clients needs only the server; every other scenario needs commandpost-bench too.
packages=(-p server)
[ ${#only[@]} -eq 0 ] || printf '%s\n' "${only[@]}" | grep -qvx real-clients && packages+=(-p bench)
step "building the release binaries (${packages[*]})"
cargo build --release "${packages[@]}"
# Where cargo put them: CARGO_TARGET_DIR, when set, moves the target directory.
release="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release"
server_bin="$release/commandpost"
bench_bin="$release/commandpost-bench"

step "installing automerge-repo's sync server and Hocuspocus (bench/js, pinned)"
(cd bench/js && npm ci --no-audit --no-fund --loglevel=error)
peer_js="$PWD/bench/js/node_modules/@automerge/automerge-repo-sync-server/src/index.js"
hocuspocus_js="$PWD/bench/js/hocuspocus-server.mjs"

# The version of an installed npm package of the peers, e.g. @automerge/automerge.
npm_version() { node -p "require('./bench/js/node_modules/$1/package.json').version"; }

if wanted real-clients; then
  step "installing the real clients and Hocuspocus (bench/realjs, pinned)"
  (cd bench/realjs && npm ci --no-audit --no-fund --loglevel=error)
fi
realjs="$PWD/bench/realjs"
# The version of an npm package of bench/realjs (read from its package.json: some packages' exports hide it).
realjs_version() { node -p "JSON.parse(require('fs').readFileSync('$realjs/node_modules/$1/package.json')).version"; }

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  dirty=""
  git diff --quiet HEAD -- server wire incident-doc || dirty=" (with uncommitted changes)"
  echo "commit: $(git rev-parse --short HEAD)$dirty"
  echo "cpu: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "memory: $(free -h | awk '/Mem:/ {print $2}')"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version)"
  echo "peer: @automerge/automerge-repo-sync-server $(npm_version @automerge/automerge-repo-sync-server)" \
    "with automerge-repo $(npm_version @automerge/automerge-repo), automerge $(npm_version @automerge/automerge)"
  echo "peer: @hocuspocus/server $(npm_version @hocuspocus/server) with yjs $(npm_version yjs)," \
    "y-protocols $(npm_version y-protocols)"
  if wanted real-clients; then
    echo "real clients: @automerge/automerge-repo $(realjs_version @automerge/automerge-repo)," \
      "@automerge/automerge-repo-network-websocket $(realjs_version @automerge/automerge-repo-network-websocket)," \
      "@automerge/automerge $(realjs_version @automerge/automerge); @hocuspocus/provider" \
      "$(realjs_version @hocuspocus/provider), yjs $(realjs_version yjs), ws $(realjs_version ws)"
    echo "hocuspocus: @hocuspocus/server $(realjs_version @hocuspocus/server) with @hocuspocus/extension-sqlite" \
      "$(realjs_version @hocuspocus/extension-sqlite) (better-sqlite3 $(realjs_version better-sqlite3))," \
      "yjs $(realjs_version yjs), y-protocols $(realjs_version y-protocols)"
  fi
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

# Waits up to 10 s for a server's log $1 to say it is listening, and prints what `sed -n` with the expressions
# after $2 takes from it (the address or port, or the line itself). When nothing shows, prints the log and fails
# saying that $2 did not start: call it as `x="$(wait_for_line ...)" || exit 1`.
wait_for_line() {
  local log="$1" what="$2"; shift 2
  local found=""
  for _ in $(seq 100); do
    found="$(sed -n "$@" "$log")"
    [ -n "$found" ] && break
    sleep 0.1
  done
  [ -n "$found" ] || { cat "$log" >&2; echo "$what did not start" >&2; return 1; }
  printf '%s\n' "$found"
}

# Starts commandpost on a free port with a fresh data directory and an admin token; sets url, token, pid and dir.
# $1 is an optional config file's contents; with $2, restarts on that data directory (same token) instead.
start_commandpost() {
  local config=()
  if [ -n "${2:-}" ]; then
    dir="$2"
  else
    dir="$(mktemp -d "$work/commandpost.XXXX")"
    token="$("$server_bin" token create --name bench --scope admin --data-dir "$dir/data")"
  fi
  if [ -n "${1:-}" ]; then
    printf '%s\n' "$1" > "$dir/config.toml"
    config=(--config "$dir/config.toml")
  fi
  : > "$dir/log"
  "${pin[@]}" "$server_bin" serve "${config[@]}" --listen 127.0.0.1:0 --data-dir "$dir/data" \
    >> "$dir/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  local address
  address="$(wait_for_line "$dir/log" commandpost -e 's#^commandpost listening on http://##p')" || exit 1
  url="ws://$address/sync"
}

# Starts automerge-repo's sync server on a free port with a fresh data directory; sets url, pid.
start_peer() {
  local dir; dir="$(mktemp -d "$work/peer.XXXX")"
  local port
  port="$(node -e 'const s = require("net").createServer()
    s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })')"
  # Started from its own directory: it serves ./public and keeps its data in DATA_DIR.
  : > "$dir/log"
  (cd "$dir" && PORT="$port" DATA_DIR="$dir/data" exec "${pin[@]}" node "$peer_js") >> "$dir/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_for_line "$dir/log" "the sync server" -e '/Listening on port/p' > /dev/null || exit 1
  url="ws://127.0.0.1:$port"
}

# Starts Hocuspocus on a free port; sets url, pid. $1 is its script: bench/js/hocuspocus-server.mjs (stock, documents
# in memory) for the Yjs peers' scenarios, bench/realjs/hocuspocus-server.mjs (stock, stored by its SQLite extension,
# given --database) for real-clients; the rest are the script's arguments.
start_hocuspocus() {
  local dir; dir="$(mktemp -d "$work/hocuspocus.XXXX")"
  local script="$1"; shift
  : > "$dir/log"
  "${pin[@]}" node "$script" "$@" >> "$dir/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  local port
  port="$(wait_for_line "$dir/log" Hocuspocus -e 's/^hocuspocus listening on //p' -e 's/^Listening on port //p')" \
    || exit 1
  url="ws://127.0.0.1:$port"
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# A scenario that fails (a server that never converges, say) is reported, and the others still run; the script
# exits non-zero at the end.
failures=()
failed() { step "FAILED: $1 (its error is above)"; failures+=("$1"); }

# Runs scenario $1 against commandpost: $2 names the result file, the rest are the scenario's arguments.
against_commandpost() {
  local scenario="$1" name="$2"; shift 2
  step "$scenario against commandpost ($*)"
  # A run that fails writes no file: an older one left in --out must not stand in for it.
  rm -f "$out/$name.commandpost.json"
  start_commandpost
  local hooks=()
  if $profile && [ "$name" = war-room ]; then
    # perf samples the server while the editors type, not while viewers connect.
    hooks=(--on-start "perf record -F 999 -p {pid} -o $out/commandpost.perf.data 2>/dev/null &
                       echo \$! > $work/perf.pid"
           --on-stop "kill -INT \$(cat $work/perf.pid); sleep 1")
  fi
  "$bench_bin" "$scenario" --url "$url" --token "$token" --server-pid "$pid" --json "$out/$name.commandpost.json" \
    "${hooks[@]}" "$@" || failed "$name against commandpost"
  stop "$pid"
}

# The same against automerge-repo's sync server.
against_peer() {
  local scenario="$1" name="$2"; shift 2
  step "$scenario against automerge-repo-sync-server ($*)"
  rm -f "$out/$name.peer.json"
  start_peer
  "$bench_bin" "$scenario" --url "$url" --kind automerge-repo --server-pid "$pid" --json "$out/$name.peer.json" \
    "$@" || failed "$name against the sync server"
  stop "$pid"
}

# The same against Hocuspocus, with Yjs peers.
against_hocuspocus() {
  local scenario="$1" name="$2"; shift 2
  step "$scenario against Hocuspocus ($*)"
  rm -f "$out/$name.hocuspocus.json"
  start_hocuspocus "$hocuspocus_js"
  "$bench_bin" "$scenario" --url "$url" --kind hocuspocus --server-pid "$pid" --json "$out/$name.hocuspocus.json" \
    "$@" || failed "$name against Hocuspocus"
  stop "$pid"
}

all_three() {
  against_commandpost "$@"
  against_peer "$@"
  against_hocuspocus "$@"
}

# Whether result file $1 exists and its keystroke → viewer p99 is within 100 ms (the limit `report --sweep` applies,
# SWEEP_P99_LIMIT_MS in bench/src/main.rs).
carried() {
  [ -f "$1" ] && node -e 'process.exit(require(process.argv[1]).report.latency.p99_ms <= 100 ? 0 : 1)' "$1"
}

wanted war-room && all_three war-room war-room "${war[@]}"
if wanted sweep; then
  # Counts rise; past a server's first count over the limit, larger ones would only measure a growing queue.
  ours=true theirs=true yjs=true
  for viewers in "${sweep_viewers[@]}"; do
    if $ours; then
      against_commandpost war-room "sweep-$viewers" "${sweep[@]}" --viewers "$viewers"
      carried "$out/sweep-$viewers.commandpost.json" || ours=false
    fi
    if $theirs; then
      against_peer war-room "sweep-$viewers" "${sweep[@]}" --viewers "$viewers"
      carried "$out/sweep-$viewers.peer.json" || theirs=false
    fi
    if $yjs; then
      against_hocuspocus war-room "sweep-$viewers" "${sweep[@]}" --viewers "$viewers"
      carried "$out/sweep-$viewers.hocuspocus.json" || yjs=false
    fi
  done
fi
if wanted ack-cost; then
  step "ack-cost: Automerge alone, one acknowledgement per history length"
  "$bench_bin" ack-cost --json "$out/ack-cost.json" || failed "ack-cost"
fi
wanted trace && all_three trace trace "${trace[@]}"
wanted join-storm && all_three join-storm join-storm "${storm[@]}"
if wanted many-incidents; then
  step "many-incidents against commandpost ($many_store stored, ${many[*]})"
  # Incidents unload after 20 s without peers, so the scenario can watch them go. Declaring loads every incident,
  # so the measuring phase runs on a restarted server (see bench/src/scenario/many_incidents.rs).
  start_commandpost "unload-after-secs = 20"
  "$bench_bin" store-incidents --url "$url" --token "$token" --store "$many_store" --ids "$dir/ids.json"
  stop "$pid"
  start_commandpost "unload-after-secs = 20" "$dir"
  "$bench_bin" many-incidents --url "$url" --token "$token" --server-pid "$pid" --ids "$dir/ids.json" \
    --json "$out/many-incidents.commandpost.json" "${many[@]}" || failed "many-incidents"
  stop "$pid"
fi

if wanted real-clients; then
  # The server on CPU 0 and the driver on CPU 1: the server's figure does not then depend on how busy the driver is
  # (the driver's JSON records both processes' CPUs).
  driver_pin=()
  if $pin_cpus && command -v taskset > /dev/null && [ "$(nproc)" -ge 2 ]; then
    pin=(taskset -c 0)
    driver_pin=(taskset -c 1)
  fi
  # The three servers take turns at each viewer count, so that they see much the same load from the rest of the
  # machine.
  for viewers in "${real_clients_viewers[@]}"; do
    for side in commandpost hocuspocus peer; do
      name="real-clients-$viewers.$side"
      step "real-clients against $side ($viewers viewers, ${real_clients[*]})"
      rm -f "$out/$name.json"
      auth=()
      case "$side" in
        commandpost) start_commandpost; kind=commandpost; auth=(--token "$token") ;;
        hocuspocus) start_hocuspocus "$realjs/hocuspocus-server.mjs" --database "$work/hocuspocus.$viewers.sqlite"; kind=hocuspocus ;;
        peer) start_peer; kind=automerge-repo ;;
      esac
      "${driver_pin[@]}" node "$realjs/real-clients.mjs" --kind "$kind" --url "$url" "${auth[@]}" \
        --server-pid "$pid" --viewers "$viewers" "${real_clients[@]}" --json "$out/$name.json" || failed "$name"
      stop "$pid"
    done
  done
  pin=()
fi

step "writing $out/figures.md"
{
  cat "$out/machine.txt"
  echo
  files=()
  for name in war-room trace join-storm many-incidents; do
    for side in commandpost peer hocuspocus; do
      [ -f "$out/$name.$side.json" ] && files+=("$out/$name.$side.json")
    done
  done
  [ -f "$out/ack-cost.json" ] && files+=("$out/ack-cost.json")
  [ ${#files[@]} -gt 0 ] && "$bench_bin" report "${files[@]}"
  sweep_files=()
  for viewers in "${sweep_viewers[@]}"; do
    for side in commandpost peer hocuspocus; do
      [ -f "$out/sweep-$viewers.$side.json" ] && sweep_files+=("$out/sweep-$viewers.$side.json")
    done
  done
  [ ${#sweep_files[@]} -gt 0 ] && "$bench_bin" report --sweep "${sweep_files[@]}"
  real_files=()
  for viewers in "${real_clients_viewers[@]}"; do
    for side in commandpost hocuspocus peer; do
      [ -f "$out/real-clients-$viewers.$side.json" ] && real_files+=("$out/real-clients-$viewers.$side.json")
    done
  done
  if [ ${#real_files[@]} -gt 0 ]; then
    echo
    node "$realjs/real-clients.mjs" report "${real_files[@]}"
  fi
  true
} > "$out/figures.md"
cat "$out/figures.md"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}" >&2
  exit 1
fi
