/**
 * The network half of sync. `LiveIncident` speaks automerge-repo's protocol but does no I/O; this module owns the
 * WebSocket to `/sync`, hands it every frame, sends whatever the model queued, and reconnects after the delay the
 * model computes (exponential backoff with jitter, so a restarted server is not stampeded).
 *
 * A WebSocket cannot carry the token in a header and URLs end up in proxy logs, so every (re)connection first asks
 * the server for a one-use ticket (`POST /api/sync-ticket`, with the header) and opens `/sync?ticket=…`.
 */

import { syncTicket } from "./api.js";

/**
 * Connects `live` to the server. `hooks.frame(bytes)` passes one incoming frame to the model (the page wraps
 * `live.receive` to keep carets in place) and may throw on a protocol error; `hooks.after()` runs after every
 * exchange so the page can show the new status; `hooks.failed(error)` reports a refused frame.
 * Returns `{flush, stop}`: call `flush()` after every local call on `live`.
 */
export function startSync(live, hooks) {
  let socket = null;
  let retry = null;
  let stopped = false;

  const flush = () => {
    const frames = live.takeOutgoing();
    // Frames queued while the socket is down are dropped: the sync protocol is state-based, and the next join
    // after `connected()` sends everything the server lacks.
    if (socket?.readyState === WebSocket.OPEN) for (const frame of frames) socket.send(frame);
    hooks.after();
  };

  /** Tries again after the model's backoff, as after any lost connection. */
  const retryLater = () => {
    const delay = live.disconnected(Date.now(), Math.random());
    flush();
    retry = setTimeout(open, delay);
  };

  const open = async () => {
    retry = null;
    let ticket;
    try {
      ticket = await syncTicket();
    } catch {
      // Offline, or the server is down: try again later. (A revoked token has already signed out, which stops us.)
      if (!stopped) retryLater();
      return;
    }
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/sync?ticket=${encodeURIComponent(ticket)}`);
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.addEventListener("open", () => {
      live.connected();
      flush();
    });
    ws.addEventListener("message", (event) => {
      if (socket !== ws || !(event.data instanceof ArrayBuffer)) return;
      try {
        hooks.frame(new Uint8Array(event.data));
      } catch (error) {
        hooks.failed(error);
        ws.close();
      }
      flush();
    });
    // An error is always followed by close, which does the reconnecting; closing here makes sure of it.
    ws.addEventListener("error", () => ws.close());
    ws.addEventListener("close", () => {
      if (socket !== ws) return;
      socket = null;
      if (!stopped) retryLater();
    });
    hooks.after();
  };

  // Back online: try now rather than at the end of a backoff that may have grown to 15 s.
  const reconnectNow = () => {
    if (retry === null) return;
    clearTimeout(retry);
    open();
  };
  window.addEventListener("online", reconnectNow);

  open();

  return {
    flush,
    stop() {
      stopped = true;
      clearTimeout(retry);
      window.removeEventListener("online", reconnectNow);
      socket?.close();
      socket = null;
    },
  };
}
