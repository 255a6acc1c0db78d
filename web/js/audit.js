/**
 * The audit log (`#/audit`, admins): who created or revoked a credential, signed in or was refused, changed a
 * template, reopened or deleted an incident, or changed who may see one; when, and from where. The filters live in
 * the address (`#/audit?action=token.`), as on the insights page, and "Older" follows the server's `nextBefore`.
 * The CSV download asks the server for the same filter, fetched with the token in the header.
 */

import { fetchAnswer, getAudit, queryOf } from "./api.js";
import { h, saveBlob, showError, timeEl } from "./dom.js";

/** The kinds of action the filter offers; the server takes any action name or a kind ending in a dot. */
const KINDS = [
  ["", "Any action"],
  ["token.", "Tokens"],
  ["session.", "Sessions"],
  ["signin.", "Sign-ins"],
  ["incident.", "Incidents"],
  ["template.", "Templates"],
];

/** The filter fields, as the server names them. */
const FIELDS = ["actor", "action", "target", "since", "until"];

/** One entry as a table row; the detail is shown as the server wrote it. */
function row(entry) {
  const detail = Object.keys(entry.detail ?? {}).length ? JSON.stringify(entry.detail) : "";
  return h(
    "tr",
    { "data-audit": entry.id },
    h("td", {}, timeEl(entry.at)),
    h("td", {}, entry.actor),
    h("td", {}, h("code", {}, entry.action)),
    h("td", {}, entry.target),
    h("td", { class: "hint" }, entry.from ?? ""),
    h("td", {}, detail && h("code", {}, detail)),
  );
}

export function showAudit(main, { query }, signal) {
  const filter = Object.fromEntries(FIELDS.map((name) => [name, query.get(name) ?? ""]));
  const inputs = {
    actor: h("input", { name: "actor", value: filter.actor, autocomplete: "off" }),
    action: h(
      "select",
      { name: "action", value: filter.action },
      KINDS.map(([value, label]) => h("option", { value }, label)),
      // An exact action from the address (a bookmark) stays selectable.
      !KINDS.some(([value]) => value === filter.action) && h("option", { value: filter.action }, filter.action),
    ),
    target: h("input", { name: "target", value: filter.target, autocomplete: "off" }),
    since: h("input", { type: "date", name: "since", value: filter.since }),
    until: h("input", { type: "date", name: "until", value: filter.until }),
  };
  const body = h("tbody");
  const empty = h("p", { class: "hint", hidden: true }, "Nothing recorded matches.");
  const older = h("button", { type: "button", hidden: true }, "Older");
  let before = null;
  let generation = 0;

  /** Loads the first page (`more` false) or the next older one. */
  const load = async (more) => {
    const mine = more ? generation : ++generation;
    try {
      const page = await getAudit({ ...filter, before: more ? before : "" });
      if (signal.aborted || mine !== generation) return;
      if (!more) body.replaceChildren();
      body.append(...page.entries.map(row));
      before = page.nextBefore ?? null;
      older.hidden = before === null;
      empty.hidden = body.children.length > 0;
    } catch (error) {
      if (!signal.aborted) showError(error);
    }
  };
  older.addEventListener("click", () => load(true));

  const download = async () => {
    try {
      const answer = await fetchAnswer(`/api/audit${queryOf(filter, { format: "csv", limit: "1000" })}`);
      if (!signal.aborted) saveBlob(await answer.blob(), "audit.csv");
    } catch (error) {
      showError(error);
    }
  };

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => e.preventDefault(),
      onchange: () => {
        for (const name of FIELDS) filter[name] = inputs[name].value.trim();
        history.replaceState(null, "", `#/audit${queryOf(filter)}`);
        load(false);
      },
    },
    h("label", {}, "Actor ", inputs.actor),
    h("label", {}, "Action ", inputs.action),
    h("label", {}, "Target ", inputs.target),
    h("label", {}, "From ", inputs.since),
    h("label", {}, "before ", inputs.until),
  );
  main.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Audit log"),
      h(
        "div",
        { class: "downloads" },
        h("button", { type: "button", "data-download": "csv", onclick: download }, "Download CSV"),
      ),
    ),
    form,
    h(
      "table",
      { class: "audit-log" },
      h(
        "thead",
        {},
        h("tr", {}, ["When", "Who", "Action", "Target", "From", "Detail"].map((t) => h("th", { scope: "col" }, t))),
      ),
      body,
    ),
    empty,
    older,
  );
  return load(false);
}
