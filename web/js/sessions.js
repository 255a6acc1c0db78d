/**
 * Single sign-on sessions (`#/sessions`, admins): who is signed in through the provider, with what scope, since when,
 * last used, until when and from where, and *End* on a live one: it stops working at once and its live `/sync`
 * connections close within a second, as a revoked token's do. Ended and idle sessions stay listed, greyed, until
 * their lifetime is over.
 */

import { endSessionOf, listSessions } from "./api.js";
import { h, showError, showMessage, timeEl } from "./dom.js";

/** One session as a table row, with *End* while it still works. */
function row(session, refresh) {
  const end = async () => {
    if (!window.confirm(`End ${session.name}'s session? Their open pages are signed out.`)) return;
    try {
      await endSessionOf(session.id);
      showMessage(`Ended ${session.name}'s session.`);
      refresh();
    } catch (error) {
      showError(error);
    }
  };
  return h(
    "tr",
    { "data-session": session.id, class: session.live ? null : "ended" },
    h("td", {}, session.name),
    h("td", {}, session.scope),
    h("td", {}, timeEl(session.createdAt)),
    h("td", {}, timeEl(session.lastUsedAt)),
    h("td", {}, session.revokedAt ? h("span", {}, "ended ", timeEl(session.revokedAt)) : timeEl(session.expiresAt)),
    h("td", { class: "hint" }, session.from ?? ""),
    h(
      "td",
      {},
      session.live && h("button", { type: "button", "data-end": session.id, onclick: end }, "End"),
    ),
  );
}

export async function showSessions(main, _route, signal) {
  const refresh = async () => {
    let sessions;
    try {
      sessions = await listSessions();
    } catch (error) {
      showError(error);
      return;
    }
    if (signal.aborted) return;
    const headings = ["Who", "Scope", "Signed in", "Last used", "Ends", "From", ""];
    main.replaceChildren(
      h("h1", {}, "Sessions"),
      h(
        "p",
        { class: "hint" },
        "People signed in through single sign-on. Tokens are listed and revoked with commandpost token or /api/tokens.",
      ),
      sessions.length === 0
        ? h("p", { class: "hint", id: "no-sessions" }, "Nobody has signed in through single sign-on.")
        : h(
            "table",
            { class: "audit-log sessions" },
            h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              sessions.map((s) => row(s, refresh)),
            ),
          ),
    );
  };
  await refresh();
}
