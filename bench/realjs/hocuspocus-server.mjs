// Hocuspocus, the Yjs collaboration server, as the real-clients benchmark runs it: the stock `Server` of
// @hocuspocus/server with Hocuspocus' own persistence extension, @hocuspocus/extension-sqlite, on a loopback port
// the system picks. Nothing else is configured: every setting (the 2 s debounce of `onStoreDocument`, its 10 s
// maximum, the broadcast batching within one event-loop turn) is the default a deployment starts from.
//
// Usage:
//   node hocuspocus-server.mjs --database DIR/hocuspocus.sqlite
//
// Prints `hocuspocus listening on PORT` once it accepts connections (scripts/bench.sh waits for that line). SIGTERM
// or SIGINT stops it the stock way: connections close and pending stores are written first.
//
// How it stores, unlike commandpost: the SQLite extension writes a document's whole Yjs state (one upsert per
// document) when the debounced `onStoreDocument` hook runs, at most 2 s after the last change and at least every
// 10 s while changes keep coming. A change is acknowledged (and broadcast) before it is on disk; commandpost makes
// every change durable before it acknowledges it.

import { parseArgs } from "node:util"
import { Server } from "@hocuspocus/server"
import { SQLite } from "@hocuspocus/extension-sqlite"

const { values } = parseArgs({ options: { database: { type: "string" } }, strict: true })
if (!values.database) {
  console.error("usage: node hocuspocus-server.mjs --database FILE")
  process.exit(2)
}

const server = new Server({
  port: 0,
  address: "127.0.0.1",
  quiet: true,
  extensions: [new SQLite({ database: values.database })],
})
await server.listen()
console.log(`hocuspocus listening on ${server.httpServer.address().port}`)
