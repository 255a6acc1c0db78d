// Hocuspocus (npm @hocuspocus/server, pinned in package.json), the Yjs peer of the benchmarks: a stock server with
// its defaults (documents in memory, no extensions, no onAuthenticate hook) on a free loopback port. It prints
// "Listening on port PORT" once it accepts connections, for scripts/bench.sh and the smoke test to read.
import { Server } from "@hocuspocus/server";

const server = new Server({ port: 0, address: "127.0.0.1", quiet: true });
await server.listen();
console.log(`Listening on port ${server.httpServer.address().port}`);
