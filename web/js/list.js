/**
 * The incident list (`#/`): newest first, filtered by status and severity. The filters live in the address
 * (`#/?status=active`), so a filtered list can be bookmarked and survives a reload.
 */

import { getTemplates, listIncidents } from "./api.js";
import { canWrite } from "./auth.js";
import { h, showError, timeEl } from "./dom.js";
import { STATUSES, statusLabel } from "./model.js";

/** Every severity any template offers, in template order: the list spans templates. */
function severities(templates) {
  const keys = templates.flatMap((t) => t.fields.filter((f) => f.key === "severity").flatMap((f) => f.options ?? []));
  return [...new Set(keys.map((o) => o.key))];
}

function row(incident) {
  return h(
    "li",
    { "data-incident-id": incident.id },
    h(
      "a",
      { href: `#/incidents/${encodeURIComponent(incident.id)}` },
      h("span", { class: "number" }, incident.number != null ? `#${incident.number}` : ""),
      h("span", { class: "title" }, incident.title || "Untitled incident"),
      h(
        "span",
        { class: "badges" },
        incident.drill && h("span", { class: "drill" }, "Drill"),
        h("span", { class: `status status-${incident.status}` }, statusLabel(incident.status)),
        incident.severity &&
          h("span", { class: `severity severity-${incident.severity.toLowerCase()}` }, incident.severity),
      ),
      h("span", { class: "updated" }, "updated ", timeEl(incident.updatedAt)),
    ),
  );
}

export function showList(main, { query }, signal) {
  const filter = { status: query.get("status") ?? "", severity: query.get("severity") ?? "" };
  const anyOption = (label) => h("option", { value: "" }, label);
  const status = h(
    "select",
    { name: "status", value: filter.status },
    anyOption("Any status"),
    STATUSES.map(([key, label]) => h("option", { value: key }, label)),
  );
  const severity = h("select", { name: "severity" }, anyOption("Any severity"));
  const list = h("ul", { id: "incident-list" });
  const empty = h("p", { class: "empty", hidden: true }, "No incidents match.");
  let generation = 0;

  const load = async () => {
    const mine = ++generation;
    try {
      const incidents = await listIncidents(filter);
      if (signal.aborted || mine !== generation) return;
      list.replaceChildren(...incidents.map(row));
      empty.hidden = incidents.length > 0;
    } catch (error) {
      if (signal.aborted || mine !== generation) return;
      // Rows from an earlier filter would pass for answers to this one.
      list.replaceChildren();
      showError(error);
    }
  };

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => e.preventDefault(),
      // Updates the address without a hashchange, so the list reloads in place and the select keeps focus.
      onchange: () => {
        filter.status = status.value;
        filter.severity = severity.value;
        const params = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
        history.replaceState(null, "", `#/${params.size ? `?${params}` : ""}`);
        load();
      },
    },
    h("label", {}, "Status ", status),
    h("label", {}, "Severity ", severity),
  );
  main.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Incidents"),
      h("a", { class: "button primary", href: "#/declare", "data-needs-write": true, hidden: !canWrite() }, "Declare"),
    ),
    form,
    list,
    empty,
  );
  load();
  getTemplates()
    .then((templates) => {
      severity.append(...severities(templates).map((key) => h("option", { value: key }, key)));
      severity.value = filter.severity;
    })
    .catch(() => {
      // Without templates the severity filter still works for a value already in the address.
      if (filter.severity) severity.append(h("option", { value: filter.severity, selected: true }, filter.severity));
    });
}
