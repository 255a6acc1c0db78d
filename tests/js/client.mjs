// A scripted automerge-repo client: the stock JavaScript `Repo` with the stock `WebSocketClientAdapter`, pointed at
// a commandpost server. The Rust interop tests (tests/tests/js_interop.rs) run it to prove that the npm client works
// against the server in both directions.
//
// Usage:
//   COMMANDPOST_TOKEN=TOKEN node client.mjs --server ws://ADDR/sync --doc automerge:ID [--timeout-ms 30000]
//                   [--author js-interop] --steps '[STEP, ...]'
//
// Browsers cannot set headers on a WebSocket, and neither can the stock adapter, so the client authenticates as the
// web UI does: it asks POST /api/sync-ticket (same origin, Authorization: Bearer $COMMANDPOST_TOKEN) for a one-use
// ticket and opens /sync?ticket=…; the token never goes into a URL. Without COMMANDPOST_TOKEN it opens --server as
// given (a test handing it a spent ticket, say). A ticket opens one connection: the adapter's reconnects reuse its
// URL, so this client does not survive the server closing its socket.
//
// Each STEP is a JSON object, run in order once the document is ready:
//   {"op":"print","field":"summary"}                                  prints the field's text
//   {"op":"splice","field":"summary","pos":0,"del":0,"text":"Hi. "}  edits the text (UTF-16 positions, as in JS)
//   {"op":"wait","field":"summary","contains":"rolled back"}         waits until the text contains the string
//   {"op":"put","path":["roles","commander"],"value":"bob"}           sets a value by path, as any JS app can
//   {"op":"delete","path":["layout",5]}                               deletes a map key or a list item by path
//   {"op":"waitValue","path":["roles","commander"],"equals":"alice"}  waits until the value at the path equals it
//   {"op":"broadcast","message":{"name":"alice","field":"summary"}}   sends an ephemeral message (handle.broadcast)
//
// The client prints one JSON object per line on stdout, each with an "event":
//   {"event":"ready","url":…,"peerId":…}            the document was found and synced; steps start now
//   {"event":"text","field":…,"text":…}             the answer to a print step (text is null when absent)
//   {"event":"spliced","field":…,"text":…}          a splice was applied locally; text is the result
//   {"event":"seen","field":…,"text":…,"ms":…}      a wait step's string arrived, ms after the wait began
//   {"event":"value","path":[…],"value":…}          a waitValue step's value arrived
//   {"event":"ephemeral","message":…,"senderId":…,"fromServer":…}
//                                                   an ephemeral message for the document (presence, refusals);
//                                                   fromServer: its sender is the peer that answered our join
//   {"event":"flushed","heads":[…]}                 the server acknowledged every local change (it has our heads)
//   {"event":"done"}                                 every step ran; the repo is shut down and node exits 0
//   {"event":"unavailable","message":…}             the server answered that the document does not exist (exit 2)
//   {"event":"timeout","message":…}                 the deadline passed (exit 3)
//   {"event":"error","message":…}                   anything else went wrong (exit 1)

import { parseArgs } from "node:util"
import { Repo, encodeHeads, splice } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const EXIT_ERROR = 1
const EXIT_UNAVAILABLE = 2
const EXIT_TIMEOUT = 3

/** Prints one event as a line of JSON. */
function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n")
}

/** Reports a failure and exits with `code`, without waiting for anything else. */
function fail(event, message, code) {
  emit(event, { message })
  process.exit(code)
}

// The WebSocket adapter rethrows socket errors it does not expect (a refused upgrade, say) from an event handler,
// where nothing can catch them: report them in the same JSON form instead of a bare stack trace.
process.on("uncaughtException", err => fail("error", `uncaught: ${err?.stack ?? err}`, EXIT_ERROR))
process.on("unhandledRejection", err => fail("error", `unhandled rejection: ${err?.stack ?? err}`, EXIT_ERROR))

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      server: { type: "string" },
      doc: { type: "string" },
      steps: { type: "string", default: "[]" },
      "timeout-ms": { type: "string", default: "30000" },
      author: { type: "string", default: "js-interop" },
    },
    strict: true,
  })
  if (!values.server || !values.doc) {
    throw new Error("usage: COMMANDPOST_TOKEN=… node client.mjs --server ws://…/sync --doc automerge:… [--steps JSON]")
  }
  const steps = JSON.parse(values.steps)
  if (!Array.isArray(steps)) {
    throw new Error("--steps must be a JSON array")
  }
  const timeoutMs = Number(values["timeout-ms"])
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new Error("--timeout-ms must be a positive number")
  }
  return { server: values.server, doc: values.doc, steps, timeoutMs, author: values.author }
}

/**
 * The URL the adapter opens: with COMMANDPOST_TOKEN set, `server` with a ticket for that token from the server's
 * POST /api/sync-ticket; otherwise `server` as it is.
 */
async function syncUrl(server) {
  const token = process.env.COMMANDPOST_TOKEN
  if (!token) return server
  const url = new URL(server)
  const api = new URL("/api/sync-ticket", url)
  api.protocol = url.protocol === "wss:" ? "https:" : "http:"
  const response = await fetch(api, { method: "POST", headers: { Authorization: `Bearer ${token}` } })
  const body = await response.json().catch(() => null)
  if (!response.ok || typeof body?.ticket !== "string") {
    throw new Error(`POST /api/sync-ticket answered ${response.status}: ${JSON.stringify(body)}`)
  }
  url.searchParams.set("ticket", body.ticket)
  return url.toString()
}

/** The text of a root field, or null when the document has no string there. */
function fieldText(handle, field) {
  const value = handle.doc()?.[field]
  return typeof value === "string" ? value : null
}

/** Resolves when `predicate()` holds, checking now and after every change of the document. */
function until(handle, predicate) {
  return new Promise(resolve => {
    if (predicate()) {
      resolve()
      return
    }
    const onChange = () => {
      if (predicate()) {
        handle.off("change", onChange)
        resolve()
      }
    }
    handle.on("change", onChange)
  })
}

/**
 * Tracks, per peer, the heads the peer last told us it has for our document, from the synchronizer's sync-state
 * events. automerge-repo only keeps these by storage id (and the server announces none), so we listen ourselves.
 */
function trackRemoteHeads(repo, documentId) {
  const byPeer = new Map()
  const listeners = new Set()
  repo.synchronizer.on("sync-state", ({ peerId, documentId: id, syncState }) => {
    if (id !== documentId || !syncState.theirHeads) return
    byPeer.set(peerId, encodeHeads(syncState.theirHeads))
    for (const listener of listeners) listener()
  })
  return {
    /** Resolves when some peer's heads are exactly `heads()` (re-read on every event, as syncing may add changes). */
    until(heads) {
      const same = theirs => {
        const ours = heads()
        return theirs.length === ours.length && ours.every(h => theirs.includes(h))
      }
      const holds = () => [...byPeer.values()].some(same)
      return new Promise(resolve => {
        if (holds()) {
          resolve()
          return
        }
        const listener = () => {
          if (holds()) {
            listeners.delete(listener)
            resolve()
          }
        }
        listeners.add(listener)
      })
    },
  }
}

async function runStep(handle, step, author) {
  switch (step.op) {
    case "print":
      emit("text", { field: step.field, text: fieldText(handle, step.field) })
      return
    case "splice": {
      const { field, pos, del = 0, text = "" } = step
      handle.change(doc => {
        splice(doc, [field], pos, del, text)
        // The schema asks every writer to stamp the field with a new {at, by} map.
        if (doc.updated && typeof doc.updated === "object") {
          doc.updated[field] = { at: new Date(), by: author }
        }
      })
      emit("spliced", { field, text: fieldText(handle, field) })
      return
    }
    case "wait": {
      const started = performance.now()
      await until(handle, () => (fieldText(handle, step.field) ?? "").includes(step.contains))
      emit("seen", {
        field: step.field,
        text: fieldText(handle, step.field),
        ms: Math.round(performance.now() - started),
      })
      return
    }
    case "put": {
      const { path, value } = step
      handle.change(doc => {
        let target = doc
        for (const key of path.slice(0, -1)) target = target[key]
        target[path[path.length - 1]] = value
      })
      return
    }
    case "delete": {
      const { path } = step
      handle.change(doc => {
        let target = doc
        for (const key of path.slice(0, -1)) target = target[key]
        const last = path[path.length - 1]
        if (Array.isArray(target)) target.deleteAt(last)
        else delete target[last]
      })
      return
    }
    case "broadcast":
      handle.broadcast(step.message)
      return
    case "waitValue": {
      const read = () => step.path.reduce((value, key) => value?.[key], handle.doc())
      await until(handle, () => String(read()) === String(step.equals))
      emit("value", { path: step.path, value: String(read()) })
      return
    }
    default:
      throw new Error(`unknown step ${JSON.stringify(step)}`)
  }
}

async function main() {
  let options
  try {
    options = parseCommandLine()
  } catch (err) {
    fail("error", err.message, EXIT_ERROR)
  }
  const { server, doc, steps, timeoutMs, author } = options

  // One deadline for the whole run, so that a server that never answers cannot hang the test that drives us.
  setTimeout(() => fail("timeout", `not done after ${timeoutMs} ms`, EXIT_TIMEOUT), timeoutMs).unref()

  let url
  try {
    url = await syncUrl(server)
  } catch (err) {
    fail("error", err.message, EXIT_ERROR)
  }
  const adapter = new WebSocketClientAdapter(url)
  // The server's peer id, from its answer to our join: a notice (`{"refused": …}`) is the server's only when it
  // comes from this peer (docs/schema.md).
  let serverPeerId
  adapter.on("peer-candidate", ({ peerId }) => (serverPeerId = peerId))
  const repo = new Repo({ network: [adapter] })
  let handle
  try {
    const documentId = doc.startsWith("automerge:") ? doc.slice("automerge:".length).split("#")[0] : doc
    const remote = trackRemoteHeads(repo, documentId)
    try {
      handle = await repo.find(doc)
    } catch (err) {
      if (/unavailable/i.test(String(err?.message))) {
        await repo.shutdown()
        fail("unavailable", err.message, EXIT_UNAVAILABLE)
      }
      throw err
    }
    emit("ready", { url: handle.url, peerId: repo.peerId })
    handle.on("ephemeral-message", ({ message, senderId }) =>
      emit("ephemeral", { message, senderId, fromServer: senderId === serverPeerId }),
    )

    let edited = false
    for (const step of steps) {
      await runStep(handle, step, author)
      edited ||= step.op === "splice" || step.op === "put"
    }
    if (edited) {
      // Our changes count as delivered once the server says it has exactly our heads; the server only sends sync
      // messages after its changes are durable, so they are on its disk too.
      await remote.until(() => handle.heads())
      emit("flushed", { heads: handle.heads() })
    }
  } catch (err) {
    fail("error", err?.stack ?? String(err), EXIT_ERROR)
  }

  await repo.shutdown()
  emit("done")
  // Nothing should keep node alive now; if something does, that is a bug worth seeing, so exit with an error.
  setTimeout(() => fail("error", "node did not exit after the repo shut down", EXIT_ERROR), 5000).unref()
}

await main()
