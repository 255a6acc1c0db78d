/**
 * Insights (`#/insights`): the server's charts across incidents (`GET /insights`) and the raw rows
 * (`GET /api/analytics/incidents`, CSV or JSON Lines), with the same filters. Both are fetched with the token in the
 * Authorization header: a plain link could only carry the token in its URL, where proxies and access logs keep it.
 * The filters live in the address (`#/insights?from=2026-01-01`), so a view can be bookmarked without any secret.
 * A person's name opens their role history (`#/people/<name>`, checkins.js).
 *
 * The charts page is the server's own HTML, escaped there; it is shown in a sandboxed frame anyway (no scripts, an
 * origin of its own), so whatever it holds can neither run nor reach this page or the token.
 */

import { fetchAnswer, queryOf } from "./api.js";
import { h, saveBlob, showError } from "./dom.js";
import { STATUSES } from "./model.js";

/** The downloads offered, by the analytics route's `format`. */
const DOWNLOADS = [
  ["csv", "Download CSV"],
  ["jsonl", "Download JSON Lines"],
];

export function showInsights(main, { query }, signal) {
  const filter = {
    from: query.get("from") ?? "",
    to: query.get("to") ?? "",
    status: query.get("status") ?? "",
    include_drills: query.get("include_drills") === "true" ? "true" : "",
  };
  const from = h("input", { type: "date", name: "from", value: filter.from });
  const to = h("input", { type: "date", name: "to", value: filter.to });
  const status = h(
    "select",
    { name: "status", value: filter.status },
    h("option", { value: "" }, "Any status"),
    STATUSES.map(([key, label]) => h("option", { value: key }, label)),
  );
  const drills = h("input", { type: "checkbox", name: "include_drills", checked: filter.include_drills === "true" });
  const frame = h("iframe", { id: "insights-frame", title: "Incident insights", sandbox: true });
  const loading = h("p", { class: "loading" }, "Loading…");
  let generation = 0;

  const load = async () => {
    const mine = ++generation;
    loading.hidden = false;
    try {
      const html = await (await fetchAnswer(`/insights${queryOf(filter)}`)).text();
      if (signal.aborted || mine !== generation) return;
      frame.srcdoc = html;
    } catch (error) {
      if (signal.aborted || mine !== generation) return;
      // Charts of an earlier filter would pass for answers to this one.
      frame.srcdoc = "";
      showError(error);
    } finally {
      if (mine === generation) loading.hidden = true;
    }
  };

  const download = async (format) => {
    try {
      const answer = await fetchAnswer(`/api/analytics/incidents${queryOf(filter, { format })}`);
      if (!signal.aborted) saveBlob(await answer.blob(), `incidents.${format}`);
    } catch (error) {
      showError(error);
    }
  };

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => e.preventDefault(),
      // Updates the address without a hashchange, so the charts reload in place and the control keeps focus.
      onchange: () => {
        filter.from = from.value;
        filter.to = to.value;
        filter.status = status.value;
        filter.include_drills = drills.checked ? "true" : "";
        history.replaceState(null, "", `#/insights${queryOf(filter)}`);
        load();
      },
    },
    h("label", {}, "Declared from ", from),
    h("label", {}, "before ", to),
    h("label", {}, "Status ", status),
    h("label", {}, drills, " Include drills"),
  );
  main.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Insights"),
      h(
        "div",
        { class: "downloads" },
        DOWNLOADS.map(([format, label]) =>
          h("button", { type: "button", "data-download": format, onclick: () => download(format) }, label),
        ),
      ),
    ),
    form,
    personForm(),
    loading,
    frame,
  );
  load();
}

/** Opens a person's role history (`#/people/<name>`): which roles they held across incidents, drills apart. */
function personForm() {
  const name = h("input", { name: "person", autocomplete: "off", required: true });
  return h(
    "form",
    {
      class: "filters person-roles",
      onsubmit: (e) => {
        e.preventDefault();
        const person = name.value.trim();
        if (person) location.hash = `#/people/${encodeURIComponent(person)}`;
      },
    },
    h("label", {}, "Roles held by ", name),
    h("button", { type: "submit" }, "Show"),
  );
}
