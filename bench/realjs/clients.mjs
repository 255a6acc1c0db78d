// The three kinds of real clients the real-clients scenario drives, behind one small interface, so the driver
// (real-clients.mjs) treats them alike. Every client is stock npm code with its own WebSocket:
//
//   commandpost     the automerge-repo 2.5.6 `Repo` with its `WebSocketClientAdapter`, authenticated as the web UI
//                   is (a one-use ticket from POST /api/sync-ticket per connection), on an incident declared over
//                   POST /api/incidents; typists hold a write token, viewers a read token
//   automerge-repo  the same client against automerge-repo's sync server (no auth); the first typist brings the
//                   document (`repo.create`), the others `repo.find` it
//   hocuspocus      a `Y.Doc` with a `HocuspocusProvider` (its own socket), on a document named by the run
//
// A client is `{ text(), type(ch), onChange(listener), close() }`: `text()` is the root text `summary`, `type(ch)`
// appends one character to it as one change (automerge-repo's `splice` on ["summary"], `Y.Text.insert`), and
// `onChange` hears every change, local or remote.

import { randomUUID } from "node:crypto"
import { Repo, encodeHeads, splice } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { HocuspocusProvider } from "@hocuspocus/provider"
import * as Y from "yjs"
import WebSocket from "ws"

// The provider needs a global WebSocket, which Node 20 lacks (Node 22 has one); Hocuspocus' own tests use `ws`.
globalThis.WebSocket ??= WebSocket

/** The kinds of server, by the name the driver's --kind takes. */
export const KINDS = ["commandpost", "automerge-repo", "hocuspocus"]

/**
 * Prepares a run against server `kind` at `url` (admin `token` for commandpost): returns `{ server, join(role) }`,
 * where `join("typist" | "viewer")` connects one more client, synced with the document, and `server` names the
 * server for reports. On servers that take documents from their peers, the first client joined brings it.
 */
export async function prepare(kind, url, token) {
  switch (kind) {
    case "commandpost":
      return prepareCommandpost(url, token)
    case "automerge-repo":
      return prepareSyncServer(url)
    case "hocuspocus":
      return prepareHocuspocus(url)
    default:
      throw new Error(`unknown --kind ${kind} (one of ${KINDS.join(", ")})`)
  }
}

/** The HTTP origin of a `ws://HOST/…` URL. */
function httpOrigin(url) {
  const parsed = new URL(url)
  parsed.protocol = parsed.protocol === "wss:" ? "https:" : "http:"
  return parsed.origin
}

/** POSTs `body` as JSON to `path` with a bearer token; returns the parsed answer, or throws with the server's. */
async function post(origin, path, bearer, body) {
  const response = await fetch(`${origin}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${bearer}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await response.text()
  if (!response.ok) throw new Error(`POST ${path} answered ${response.status}: ${text}`)
  return JSON.parse(text)
}

async function prepareCommandpost(url, adminToken) {
  if (!adminToken) throw new Error("--kind commandpost needs --token (an admin token)")
  const origin = httpOrigin(url)
  const declared = await post(origin, "/api/incidents", adminToken, { title: "real-clients benchmark" })
  const docUrl = `automerge:${declared.id}`
  const tokens = {}
  for (const [role, scope] of [
    ["typist", "write"],
    ["viewer", "read"],
  ]) {
    const created = await post(origin, "/api/tokens", adminToken, { name: `realjs-${scope}-${randomUUID()}`, scope })
    tokens[role] = created.token
  }
  return {
    server: "commandpost",
    async join(role) {
      // One ticket opens one connection; the adapter's reconnects would reuse it, so a dropped socket stays dropped
      // (and the run then fails on delivery, which is what it should do).
      const { ticket } = await post(origin, "/api/sync-ticket", tokens[role])
      const withTicket = new URL(url)
      withTicket.searchParams.set("ticket", ticket)
      return automergeClient(withTicket.toString(), docUrl)
    },
  }
}

async function prepareSyncServer(url) {
  let docUrl = null
  return {
    server: "automerge-repo-sync-server",
    async join() {
      const client = await automergeClient(url, docUrl)
      docUrl ??= client.url
      return client
    },
  }
}

/**
 * An automerge-repo client at `url` on document `docUrl`; with `docUrl` null, it creates the document (an empty
 * `summary`) and resolves once the server holds it, so that the clients after it can find it.
 */
async function automergeClient(url, docUrl) {
  const repo = new Repo({ network: [new WebSocketClientAdapter(url)] })
  let handle
  if (docUrl) {
    handle = await repo.find(docUrl)
  } else {
    handle = repo.create({ summary: "" })
    await serverHolds(repo, handle)
  }
  if (typeof handle.doc()?.summary !== "string") {
    throw new Error(`document ${handle.url} has no text "summary"`)
  }
  return {
    url: handle.url,
    text: () => handle.doc().summary,
    type(ch) {
      handle.change(doc => splice(doc, ["summary"], doc.summary.length, 0, ch))
    },
    onChange(listener) {
      handle.on("change", listener)
    },
    close: () => repo.shutdown(),
  }
}

/** Resolves when a peer (the server, our only one) has told us it has exactly the heads of `handle`. */
function serverHolds(repo, handle) {
  return new Promise(resolve => {
    const listener = ({ documentId, syncState }) => {
      if (documentId !== handle.documentId || !syncState.theirHeads) return
      const ours = handle.heads()
      const theirs = encodeHeads(syncState.theirHeads)
      if (theirs.length === ours.length && ours.every(head => theirs.includes(head))) {
        repo.synchronizer.off("sync-state", listener)
        resolve()
      }
    }
    repo.synchronizer.on("sync-state", listener)
  })
}

async function prepareHocuspocus(url) {
  const name = `real-clients-${randomUUID()}`
  return {
    server: "hocuspocus",
    async join() {
      const ydoc = new Y.Doc()
      const provider = new HocuspocusProvider({ url, name, document: ydoc })
      await new Promise((resolve, reject) => {
        provider.on("synced", resolve)
        provider.on("close", ({ event }) => reject(new Error(`Hocuspocus closed the socket: ${event?.code}`)))
      })
      const summary = ydoc.getText("summary")
      return {
        text: () => summary.toString(),
        type(ch) {
          summary.insert(summary.length, ch)
        },
        onChange(listener) {
          summary.observe(listener)
        },
        close: async () => provider.destroy(),
      }
    },
  }
}
