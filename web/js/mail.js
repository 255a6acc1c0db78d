/**
 * The incident page's mail thread (`GET /api/incidents/{id}/mail`): each status update mailed, to which lists, and
 * how its delivery stands: delivered, pending (with the last error while the relay is retried) or failed. The
 * status update panel shows it and turns "Mark as sent" into "Send" where lists are configured.
 */

import { h, utcTime } from "./dom.js";

/** What each delivery state is called on the page. */
const STATES = { delivered: "Delivered", pending: "Pending", failed: "Failed" };

/** The line under a message: what happened to it last. */
function detail(message) {
  switch (message.state) {
    case "delivered":
      return `accepted by the mail relay at ${utcTime(message.deliveredAt)}`;
    case "pending":
      return message.attempts > 0 && message.lastError
        ? `attempt ${message.attempts} failed (${message.lastError}); trying again at ${utcTime(message.nextAttemptAt)}`
        : "queued for the mail relay";
    default:
      return `given up after ${message.attempts} attempt${message.attempts === 1 ? "" : "s"}: ${message.lastError ?? "unknown error"}`;
  }
}

/** Whether any message still waits for the relay (the page then asks again in a few seconds). */
export const pending = (thread) => thread.messages.some((m) => m.state === "pending");

/** The label of the panel's record button: "Send to …" where lists receive the incident, else "Mark as sent". */
export const sendLabel = (thread) =>
  thread.configured && thread.to.length ? `Send to ${thread.to.join(", ")}` : "Mark as sent";

/** Fills `container` with the thread, newest first; hidden while nothing was mailed. */
export function renderMailThread(container, thread) {
  container.hidden = !thread.messages.length;
  const items = [...thread.messages].reverse().map((message) =>
    h(
      "li",
      { class: `mail-${message.state}` },
      h("strong", {}, STATES[message.state] ?? message.state),
      ` · ${utcTime(message.sentAt)} · to ${message.to.join(", ")}`,
      h("br"),
      h("span", { class: "mail-detail" }, detail(message)),
    ),
  );
  container.replaceChildren(h("h3", {}, "Mailed updates"), h("ol", { class: "mail-thread" }, ...items));
}
