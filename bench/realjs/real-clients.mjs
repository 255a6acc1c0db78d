// The real-clients benchmark (issue 28): server CPU per delivered keystroke with stock JavaScript clients, the same
// workload against commandpost, Hocuspocus and automerge-repo's sync server. See README.md beside this file.
//
//   node real-clients.mjs --kind commandpost|hocuspocus|automerge-repo --url URL [--token ADMIN] --server-pid PID
//        [--typists 4] [--rate 5] [--duration 30] [--viewers 8] [--deadline 60] --json OUT
//   node real-clients.mjs report FILE.json...        one Markdown table of several runs, on stdout
//
// A run: T typists and V viewers join (each its own client and WebSocket, clients.mjs), then each typist types R
// marks a second for D seconds, open loop (on schedule whatever the server does), the typists staggered evenly
// within one period. Typist i types its own character (typist 0 'a', 1 'b', …), so any client can attribute the
// marks it holds by counting characters. Latency is the time a viewer first holds typist i's k-th mark minus the
// time it was typed: one process, one clock (`performance.now()`). The run waits until every viewer and every
// typist holds every mark, and fails (exit 1, no JSON) when that has not happened --deadline seconds after the last
// mark was typed.
//
// The measuring window runs from just before the first mark to the moment every client holds every mark, plus a
// fixed settle of SETTLE_MS for every server; over it: the server's CPU (utime + stime of /proc/PID/stat, whole
// process), its RSS (sampled), and the driver's own CPU (`process.cpuUsage()`). A delivered mark is a typed mark
// arriving at one viewer: typed marks × viewers, the definition of the issue (typists receiving each other's marks
// are checked but not counted).

import { parseArgs } from "node:util"
import { readFileSync, writeFileSync } from "node:fs"
import { execFileSync } from "node:child_process"
import { KINDS, prepare } from "./clients.mjs"

/** The fixed settle after the last delivery that the window includes, the same for every server. */
const SETTLE_MS = 1000
/** How often the server's RSS is sampled within the window. */
const RSS_SAMPLE_MS = 200
/** How long all clients together may take to join before the run gives up. */
const JOIN_DEADLINE_MS = 60_000

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      kind: { type: "string" },
      url: { type: "string" },
      token: { type: "string" },
      "server-pid": { type: "string" },
      typists: { type: "string", default: "4" },
      rate: { type: "string", default: "5" },
      duration: { type: "string", default: "30" },
      viewers: { type: "string", default: "8" },
      deadline: { type: "string", default: "60" },
      json: { type: "string" },
    },
    strict: true,
  })
  for (const required of ["kind", "url", "server-pid", "json"]) {
    if (!values[required]) throw new Error(`--${required} is required (see the header of real-clients.mjs)`)
  }
  if (!KINDS.includes(values.kind)) throw new Error(`--kind is one of ${KINDS.join(", ")}`)
  const number = name => {
    const value = Number(values[name])
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`)
    return value
  }
  const options = {
    kind: values.kind,
    url: values.url,
    token: values.token,
    serverPid: number("server-pid"),
    typists: number("typists"),
    rate: number("rate"),
    duration: number("duration"),
    viewers: number("viewers"),
    deadline: number("deadline"),
    json: values.json,
  }
  if (options.typists > 26) throw new Error("--typists is at most 26 (one letter each)")
  return options
}

/** Prints a progress line on stderr. */
function say(message) {
  process.stderr.write(`real-clients: ${message}\n`)
}

/** A system constant from getconf. */
function getconf(name) {
  return Number(execFileSync("getconf", [name], { encoding: "utf8" }).trim())
}

/** The CPU time (clock ticks, all threads) and resident set (pages) of process `pid`, from /proc/PID/stat. */
function procStat(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the command name, which is in parentheses and may hold spaces; fields[0] is field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return { ticks: Number(fields[11]) + Number(fields[12]), rssPages: Number(fields[21]) }
}

/** The CPUs process `pid` (or this one) may run on, as /proc says (`0`, `0-1`). */
function cpusAllowed(pid = "self") {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  return status.match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1] ?? "unknown"
}

function loadavg() {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")
}

/** The version of an npm package installed beside this script (read from its package.json: some packages' exports
 * hide it from `require`). */
function packageVersion(name) {
  const file = new URL(`node_modules/${name}/package.json`, import.meta.url)
  return JSON.parse(readFileSync(file, "utf8")).version
}

/** The `q` quantile (0..1) of sorted `values`, nearest rank. */
function quantile(sorted, q) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
}

const round = (value, digits = 1) => (value === null ? null : Number(value.toFixed(digits)))

/** Rejects after `ms` with `message`, unless `promise` settles first. */
function within(promise, ms, message) {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms))),
  ])
}

async function run(options) {
  const { kind, typists: T, rate: R, duration: D, viewers: V } = options
  const marksPerTypist = Math.round(R * D)
  const letters = Array.from({ length: T }, (_, i) => String.fromCharCode(97 + i))
  const clkTck = getconf("CLK_TCK")
  const pageKb = getconf("PAGESIZE") / 1024
  const loadBefore = loadavg()
  say(`${kind} at ${options.url}: ${T} typists × ${R}/s × ${D} s, ${V} viewers (load average ${loadBefore})`)

  // typedAt[i][k]: when typist i typed its k-th mark.
  const typedAt = letters.map(() => new Array(marksPerTypist))
  const latencies = []
  const clients = []
  let complete = 0
  let allDelivered
  const delivered = new Promise(resolve => (allDelivered = resolve))

  /** Counts, per typist, the marks in `text`. */
  const count = text => {
    const counts = new Array(T).fill(0)
    for (let p = 0; p < text.length; p++) {
      const i = text.charCodeAt(p) - 97
      if (i >= 0 && i < T) counts[i]++
    }
    return counts
  }

  // Join: on servers that take the document from a peer the first typist brings it, so it joins alone first.
  const session = await prepare(kind, options.url, options.token)
  const roles = [...letters.map((_, i) => ({ role: "typist", typist: i })), ...Array.from({ length: V }, () => ({ role: "viewer" }))]
  const joinStarted = performance.now()
  const join = async spec => ({ ...spec, client: await session.join(spec.role) })
  const first = await within(join(roles[0]), JOIN_DEADLINE_MS, "the first client did not join in time")
  const rest = await within(
    Promise.all(roles.slice(1).map(join)),
    JOIN_DEADLINE_MS,
    `not every client joined within ${JOIN_DEADLINE_MS} ms`,
  )
  clients.push(first, ...rest)
  say(`${clients.length} clients joined in ${Math.round(performance.now() - joinStarted)} ms`)

  // Every client starts from the same text; marks are counted beyond what it held then (the incident template's
  // summary may hold letters already).
  const initial = clients[0].client.text()
  for (const c of clients) {
    if (c.client.text() !== initial) throw new Error("the clients joined with different texts")
    c.base = count(initial)
    c.seen = new Array(T).fill(0)
    c.done = false
    c.client.onChange(() => {
      if (c.done) return
      const now = performance.now()
      const counts = count(c.client.text())
      let whole = true
      for (let i = 0; i < T; i++) {
        const held = counts[i] - c.base[i]
        if (c.role === "viewer") {
          for (let k = c.seen[i]; k < held; k++) latencies.push(now - typedAt[i][k])
        }
        c.seen[i] = Math.max(c.seen[i], held)
        whole &&= c.seen[i] >= marksPerTypist
      }
      if (whole) {
        c.done = true
        if (++complete === clients.length) allDelivered(now)
      }
    })
  }

  // The schedule: typist i's k-th mark at start + i·period/T + k·period.
  const period = 1000 / R
  const schedule = []
  for (let k = 0; k < marksPerTypist; k++) {
    for (let i = 0; i < T; i++) schedule.push({ at: (i * period) / T + k * period, i, k })
  }
  const lags = []

  const serverCpus = cpusAllowed(options.serverPid)
  const driverCpus = cpusAllowed()
  const rssSamples = []
  const startStat = procStat(options.serverPid)
  const startCpu = process.cpuUsage()
  const start = performance.now()
  const rssTimer = setInterval(() => rssSamples.push(procStat(options.serverPid).rssPages), RSS_SAMPLE_MS)

  // Open loop: each mark at its time, late ones at once (their lateness is reported), whatever the server does.
  await new Promise(resolve => {
    let next = 0
    const tick = () => {
      const now = performance.now() - start
      while (next < schedule.length && schedule[next].at <= now) {
        const { at, i, k } = schedule[next++]
        const typist = clients[i]
        typedAt[i][k] = performance.now()
        lags.push(typedAt[i][k] - start - at)
        typist.client.type(letters[i])
      }
      if (next < schedule.length) setTimeout(tick, Math.max(0, schedule[next].at - (performance.now() - start)))
      else resolve()
    }
    tick()
  })
  const typingEnded = performance.now()
  say(`typed ${schedule.length} marks in ${Math.round(typingEnded - start)} ms; waiting for every client to hold them`)

  let deliveredAt
  try {
    deliveredAt = await within(delivered, options.deadline * 1000, "deadline")
  } catch {
    clearInterval(rssTimer)
    const missing = clients
      .filter(c => !c.done)
      .map(c => `${c.role}${c.role === "typist" ? ` ${letters[c.typist]}` : ""} holds [${c.seen.join(", ")}]`)
    say(`FAILED: ${missing.length} of ${clients.length} clients lack marks ${options.deadline} s after the last ` +
      `was typed (each typist typed ${marksPerTypist}):\n  ${missing.join("\n  ")}`)
    process.exit(1)
  }
  await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
  const endStat = procStat(options.serverPid)
  const driverCpu = process.cpuUsage(startCpu)
  const end = performance.now()
  clearInterval(rssTimer)
  rssSamples.push(endStat.rssPages)
  const loadAfter = loadavg()

  const typed = schedule.length
  const deliveredMarks = typed * V
  if (latencies.length !== deliveredMarks) {
    throw new Error(`counted ${latencies.length} deliveries to viewers, expected ${deliveredMarks}`)
  }
  latencies.sort((a, b) => a - b)
  lags.sort((a, b) => a - b)
  const serverCpuMs = ((endStat.ticks - startStat.ticks) * 1000) / clkTck
  const driverCpuMs = (driverCpu.user + driverCpu.system) / 1000
  const result = {
    scenario: "real-clients",
    server: session.server,
    kind,
    clients: kind === "hocuspocus"
      ? { "@hocuspocus/provider": packageVersion("@hocuspocus/provider"), yjs: packageVersion("yjs") }
      : {
          "@automerge/automerge-repo": packageVersion("@automerge/automerge-repo"),
          "@automerge/automerge-repo-network-websocket": packageVersion("@automerge/automerge-repo-network-websocket"),
        },
    typists: T,
    rate_per_s: R,
    duration_s: D,
    viewers: V,
    marks_typed: typed,
    marks_delivered: deliveredMarks,
    window_ms: Math.round(end - start),
    settle_ms: SETTLE_MS,
    delivery_after_typing_ms: Math.round(deliveredAt - typingEnded),
    server_cpu_ms: round(serverCpuMs),
    server_cpu_per_delivered_mark_us: round((serverCpuMs * 1000) / deliveredMarks),
    server_cpu_per_typed_mark_us: round((serverCpuMs * 1000) / typed),
    clk_tck: clkTck,
    server_rss_kb: {
      start: Math.round(startStat.rssPages * pageKb),
      max: Math.round(Math.max(...rssSamples) * pageKb),
      end: Math.round(endStat.rssPages * pageKb),
    },
    latency_ms: {
      p50: round(quantile(latencies, 0.5)),
      p99: round(quantile(latencies, 0.99)),
      max: round(latencies[latencies.length - 1]),
    },
    typing_lag_ms: { p99: round(quantile(lags, 0.99)), max: round(lags[lags.length - 1]) },
    driver_cpu_ms: round(driverCpuMs),
    driver_cpu_per_typed_mark_us: round((driverCpuMs * 1000) / typed),
    cpus: { server: serverCpus, driver: driverCpus },
    loadavg_before: loadBefore,
    loadavg_after: loadAfter,
    node: process.version,
  }
  writeFileSync(options.json, JSON.stringify(result, null, 2) + "\n")
  say(`${result.server}: ${result.server_cpu_per_delivered_mark_us} µs server CPU per delivered mark, ` +
    `p50 ${result.latency_ms.p50} / p99 ${result.latency_ms.p99} ms`)

  await Promise.allSettled(clients.map(c => c.client.close()))
  // Stock clients may keep timers (reconnects, awareness) alive; the run is over.
  process.exit(0)
}

/** The servers in the order of the table's columns, with their short names. */
const SERVERS = [
  ["commandpost", "commandpost"],
  ["hocuspocus", "Hocuspocus"],
  ["automerge-repo-sync-server", "sync server"],
]

/** One Markdown table of the runs in `files`: a row per viewer count, columns per server. */
function report(files) {
  if (files.length === 0) throw new Error("usage: node real-clients.mjs report FILE.json...")
  const runs = files.map(file => JSON.parse(readFileSync(file, "utf8")))
  const servers = SERVERS.filter(([name]) => runs.some(r => r.server === name))
  const viewerCounts = [...new Set(runs.map(r => r.viewers))].sort((a, b) => a - b)
  const find = (name, viewers) => runs.find(r => r.server === name && r.viewers === viewers)
  const us = value => `${Math.round(value)} µs`
  const ms = value => (value >= 1000 ? `${(value / 1000).toFixed(2)} ms` : us(value))

  const first = runs[0]
  const lines = [
    `Real JavaScript clients: ${first.typists} typists × ${first.rate_per_s} marks/s × ${first.duration_s} s; ` +
      "server CPU over the window from the first mark to every viewer holding every mark, plus a " +
      `${first.settle_ms / 1000} s settle; a delivered mark is a typed mark at one viewer.`,
    "",
  ]
  const header = ["viewers"]
  for (const [, label] of servers) {
    header.push(`${label}: CPU per delivered mark`, `${label}: per typed mark`, `${label}: p50 / p99`)
  }
  const ratio = servers.length > 1 && servers[0][0] === "commandpost" && servers[1][0] === "hocuspocus"
  if (ratio) header.push("commandpost / Hocuspocus")
  lines.push(`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`)
  for (const viewers of viewerCounts) {
    const row = [String(viewers)]
    for (const [name] of servers) {
      const r = find(name, viewers)
      if (!r) {
        row.push("—", "—", "—")
        continue
      }
      row.push(
        us(r.server_cpu_per_delivered_mark_us),
        ms(r.server_cpu_per_typed_mark_us),
        `${Math.round(r.latency_ms.p50)} / ${Math.round(r.latency_ms.p99)} ms`,
      )
    }
    if (ratio) {
      const ours = find("commandpost", viewers)
      const theirs = find("hocuspocus", viewers)
      row.push(ours && theirs
        ? `${(ours.server_cpu_per_delivered_mark_us / theirs.server_cpu_per_delivered_mark_us).toFixed(2)}×`
        : "—")
    }
    lines.push(`| ${row.join(" | ")} |`)
  }
  lines.push("")
  for (const r of runs) {
    lines.push(
      `- ${r.server}, ${r.viewers} viewers: server CPU ${Math.round(r.server_cpu_ms)} ms over ${r.window_ms} ms ` +
        `(CPUs ${r.cpus.server}), RSS max ${Math.round(r.server_rss_kb.max / 1024)} MiB; latency max ` +
        `${Math.round(r.latency_ms.max)} ms; driver CPU ${Math.round(r.driver_cpu_ms)} ms (CPUs ${r.cpus.driver}), ` +
        `typing lag p99 ${Math.round(r.typing_lag_ms.p99)} ms; load average before ${r.loadavg_before}`,
    )
  }
  return lines.join("\n") + "\n"
}

// Last, so that every constant above is initialised before a mode runs.
if (process.argv[2] === "report") {
  process.stdout.write(report(process.argv.slice(3)))
} else {
  await run(parseCommandLine())
}
