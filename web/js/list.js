/**
 * The incident list (`#/`): what needs people now comes first. Open incidents (declared, active, mitigated) are
 * listed above resolved and closed ones, newest first in each group; every row names the commander (whom to call)
 * and how long ago the incident was declared. A search box finds an incident by its title or its number, and the
 * status and severity filters narrow the list. Search and filters live in the address (`#/?q=checkout&status=active`),
 * so a view can be bookmarked and survives a reload.
 *
 * The list stays current by itself: a SEV1 declared by someone else appears without a reload (see `POLL_MS`).
 */

import { getTemplates, listIncidents } from "./api.js";
import { canWrite } from "./auth.js";
import { h, showError, timeEl } from "./dom.js";
import { STATUSES, statusLabel } from "./model.js";

/**
 * How often the list asks the server again while it is on screen. Polling `GET /api/incidents` rather than a push
 * channel: the answer is one read of the store's small index (no document is loaded), the index is the one place
 * that every node of a cluster writes (a declaration made on another node shows up here too, which a per-node
 * event stream would miss without more plumbing), and a few seconds is soon enough for a page people glance at.
 * Hidden tabs do not ask at all; a tab that comes back asks at once.
 */
const POLL_MS = 5000;

/** Statuses past which an incident no longer needs people; anything else (none included) is open. */
const DONE = new Set(["resolved", "closed"]);

const isOpen = (incident) => !DONE.has(incident.status);

/** Every severity any template offers, in template order: the list spans templates. */
function severities(templates) {
  const keys = templates.flatMap((t) => t.fields.filter((f) => f.key === "severity").flatMap((f) => f.options ?? []));
  return [...new Set(keys.map((o) => o.key))];
}

/** `< 1 min`, `12 min`, `3 h 5 min`, `2 d 4 h`: an age read at a glance, precise where it matters (the first hours). */
function age(iso) {
  const minutes = Math.max(0, Math.floor((Date.now() - new Date(iso).getTime()) / 60_000));
  if (Number.isNaN(minutes)) return "";
  if (minutes < 1) return "< 1 min";
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/**
 * The incidents the search `text` finds. A number (`7`, `#7`) finds the incident of that number, the way people
 * quote incidents in chat; only when none has it and no `#` was typed does it look in the titles, where the date
 * every title ends with would match most numbers. Words find the titles holding every one of them, case aside.
 */
function find(incidents, text) {
  const search = text.trim().toLowerCase();
  if (!search) return incidents;
  const number = /^(#?)(\d+)$/.exec(search);
  if (number) {
    const found = incidents.filter((incident) => incident.number === Number(number[2]));
    if (found.length > 0 || number[1]) return found;
  }
  const words = search.split(/\s+/);
  return incidents.filter((incident) => words.every((word) => (incident.title ?? "").toLowerCase().includes(word)));
}

function row(incident) {
  return h(
    "li",
    { "data-incident-id": incident.id, "data-open": String(isOpen(incident)) },
    h(
      "a",
      { href: `#/incidents/${encodeURIComponent(incident.id)}` },
      h("span", { class: "number" }, incident.number != null ? `#${incident.number}` : ""),
      h("span", { class: "title" }, incident.title || "Untitled incident"),
      h(
        "span",
        { class: "badges" },
        incident.drill && h("span", { class: "drill" }, "Drill"),
        incident.restricted && h("span", { class: "restricted" }, "Restricted"),
        h("span", { class: `status status-${incident.status || "none"}` }, statusLabel(incident.status || null)),
        incident.severity &&
          h("span", { class: `severity severity-${incident.severity.toLowerCase()}` }, incident.severity),
      ),
      h(
        "span",
        { class: "facts" },
        // Absent both when command is vacant and for index rows written before the index kept the commander (they
        // gain it on the incident's next change): saying "nobody" would be wrong for the second.
        incident.commander && h("span", { class: "commander" }, `IC ${incident.commander}`),
        h(
          "span",
          { class: "age" },
          "declared ",
          h("time", { datetime: incident.createdAt, title: incident.createdAt }, `${age(incident.createdAt)} ago`),
        ),
        h("span", { class: "updated" }, "updated ", timeEl(incident.updatedAt)),
      ),
    ),
  );
}

/** One group of rows under its heading; hidden while it has none, so an empty group takes no room. */
function group(id, title) {
  const list = h("ul", { class: "incidents", "aria-labelledby": `${id}-heading` });
  const section = h("section", { id, hidden: true }, h("h2", { id: `${id}-heading` }, title), list);
  return {
    section,
    show(incidents) {
      list.replaceChildren(...incidents.map(row));
      section.hidden = incidents.length === 0;
    },
  };
}

export function showList(main, { query }, signal) {
  const filter = { status: query.get("status") ?? "", severity: query.get("severity") ?? "" };
  let search = query.get("q") ?? "";
  const anyOption = (label) => h("option", { value: "" }, label);
  const status = h(
    "select",
    { name: "status", value: filter.status },
    anyOption("Any status"),
    STATUSES.map(([key, label]) => h("option", { value: key }, label)),
  );
  const severity = h("select", { name: "severity" }, anyOption("Any severity"));
  const searchBox = h("input", {
    id: "incident-search",
    type: "search",
    name: "q",
    value: search,
    autocomplete: "off",
    placeholder: "Title or number",
  });
  const open = group("open-incidents", "Open");
  const done = group("done-incidents", "Resolved and closed");
  const empty = h("p", { class: "empty", hidden: true }, "No incidents match.");
  /** The last answer, kept so typing a search redraws without asking the server. */
  let incidents = null;
  let generation = 0;

  /** Redraws the rows, keeping the keyboard focus on the incident it was on (a poll must not throw it away). */
  const render = () => {
    if (!incidents) return;
    const focused = document.activeElement?.closest?.("#incident-list li[data-incident-id]")?.dataset.incidentId;
    const shown = find(incidents, search);
    open.show(shown.filter(isOpen));
    done.show(shown.filter((incident) => !isOpen(incident)));
    empty.hidden = shown.length > 0;
    if (focused) {
      main.querySelector(`#incident-list li[data-incident-id="${CSS.escape(focused)}"] a`)?.focus();
    }
  };

  /** The address for the current search and filters, empty values left out. */
  const remember = () => {
    const params = new URLSearchParams(Object.entries({ q: search, ...filter }).filter(([, v]) => v));
    // Updates the address without a hashchange, so the list stays in place and the control keeps focus.
    history.replaceState(null, "", `#/${params.size ? `?${params}` : ""}`);
  };

  /** Asks the server; `quiet` (a poll) leaves an error to the next try rather than covering the page in banners. */
  let lastAnswer = "";
  const load = async ({ quiet = false } = {}) => {
    const mine = ++generation;
    try {
      const answer = await listIncidents(filter);
      if (signal.aborted || mine !== generation) return;
      // The server lists newest first; the groups keep that order.
      const text = JSON.stringify(answer);
      if (text !== lastAnswer || !incidents) {
        lastAnswer = text;
        incidents = answer;
        render();
      } else {
        // Nothing changed but the clock: the ages move on in place.
        for (const el of main.querySelectorAll("#incident-list .age time")) {
          el.textContent = `${age(el.getAttribute("datetime"))} ago`;
        }
      }
    } catch (error) {
      if (signal.aborted || mine !== generation || quiet) return;
      // Rows from an earlier filter would pass for answers to this one.
      incidents = [];
      lastAnswer = "";
      render();
      showError(error);
    }
  };

  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (signal.aborted || document.hidden) return;
    timer = setTimeout(async () => {
      await load({ quiet: true });
      schedule();
    }, POLL_MS);
  };
  const onVisibility = () => {
    if (document.hidden) {
      clearTimeout(timer);
      return;
    }
    load({ quiet: true });
    schedule();
  };
  document.addEventListener("visibilitychange", onVisibility);
  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  });

  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (e) => e.preventDefault(),
      oninput: (e) => {
        if (e.target !== searchBox) return;
        search = searchBox.value;
        remember();
        render();
      },
      onchange: (e) => {
        if (e.target === searchBox) return;
        filter.status = status.value;
        filter.severity = severity.value;
        remember();
        load();
      },
    },
    h("label", { class: "search" }, "Search ", searchBox),
    h("label", {}, "Status ", status),
    h("label", {}, "Severity ", severity),
  );
  main.replaceChildren(
    h(
      "div",
      { class: "page-head sticky" },
      h("h1", {}, "Incidents"),
      h("a", { class: "button primary", href: "#/declare", "data-needs-write": true, hidden: !canWrite() }, "Declare"),
    ),
    form,
    h("div", { id: "incident-list" }, open.section, done.section),
    empty,
  );
  load();
  schedule();
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
