/**
 * The templates page (`#/templates`): every template on offer with where it came from (built-in, the server's
 * templates directory, or uploaded to the store), its version and its Markdown; the refused ones with
 * `file:line: reason` and what serves their id meanwhile; and, for admins, uploading a template (checked by the
 * server before anything is stored) and deleting an uploaded one.
 */

import { deleteTemplate, getTemplate, getTemplateCatalog, putTemplate } from "./api.js";
import { isAdmin } from "./auth.js";
import { h, showError, showMessage } from "./dom.js";

/** How each origin reads on the page. */
const ORIGINS = { "built-in": "built-in", directory: "templates directory", store: "uploaded (store)" };

function problemRow(problem) {
  const serving = problem.serving
    ? `serving meanwhile: ${ORIGINS[problem.serving.origin]} version ${problem.serving.version}`
    : "nothing serves this id";
  return h(
    "li",
    { "data-problem": problem.id ?? "" },
    h("code", {}, problem.error),
    h("span", { class: "hint" }, ` (${ORIGINS[problem.origin]}; ${serving})`),
  );
}

/** One template: its facts, and its source fetched when the reader opens it. */
function templateEntry(template, refresh) {
  // Focusable, so a keyboard can scroll a long source.
  const source = h("pre", { class: "template-source", tabindex: 0 });
  const details = h(
    "details",
    {
      ontoggle: async () => {
        if (!details.open || source.textContent) return;
        try {
          source.textContent = (await getTemplate(template.id)).source;
        } catch (error) {
          showError(error);
        }
      },
    },
    h("summary", {}, "Source"),
    source,
  );
  const overrides = template.overrides.length
    ? ` · overrides ${template.overrides.map((o) => ORIGINS[o]).join(", ")}`
    : "";
  return h(
    "li",
    { class: "template-entry", "data-template": template.id, "data-origin": template.origin },
    h("h2", {}, template.name, " ", h("code", {}, template.id)),
    h(
      "p",
      { class: "hint" },
      `${ORIGINS[template.origin]} · ${template.file} · version ${template.version} · ${template.fields.length} fields${overrides}`,
    ),
    template.description && h("p", {}, template.description),
    details,
    isAdmin() &&
      template.origin === "store" &&
      h(
        "button",
        {
          type: "button",
          "data-delete": template.id,
          onclick: async () => {
            if (!window.confirm(`Delete the uploaded template ${template.id}? Incidents declared from it keep their layout.`))
              return;
            try {
              await deleteTemplate(template.id);
              showMessage(`Deleted the uploaded template ${template.id}.`);
              refresh();
            } catch (error) {
              showError(error);
            }
          },
        },
        "Delete upload",
      ),
  );
}

/** The upload form: an id and the Markdown; the server's refusal (`id.md:line: reason`) shows as an error. */
function uploadForm(refresh) {
  const form = h(
    "form",
    {
      class: "declare template-upload",
      onsubmit: async (event) => {
        event.preventDefault();
        const id = form.elements.id.value.trim();
        try {
          const saved = await putTemplate(id, form.elements.source.value);
          showMessage(`Uploaded ${saved.name} (${saved.id}), version ${saved.version}.`);
          form.reset();
          refresh();
        } catch (error) {
          showError(error);
        }
      },
    },
    h("h2", {}, "Upload a template"),
    h(
      "p",
      { class: "hint" },
      "Shared by every server on this store, and used for new incidents at once; an id of a built-in or directory template overrides it. templates/README.md describes the format.",
    ),
    h("label", {}, "Id", h("input", { name: "id", required: true, pattern: "[A-Za-z0-9_-]+", autocomplete: "off" })),
    h("label", {}, "Markdown", h("textarea", { name: "source", rows: 12, required: true, spellcheck: "false" })),
    h("button", { type: "submit", class: "primary" }, "Check and upload"),
  );
  return form;
}

export async function showTemplates(main, _route, signal) {
  const refresh = async () => {
    let catalog;
    try {
      catalog = await getTemplateCatalog();
    } catch (error) {
      showError(error);
      return;
    }
    if (signal.aborted) return;
    main.replaceChildren(
      h("h1", {}, "Templates"),
      catalog.errors.length > 0 &&
        h(
          "section",
          { id: "template-errors", "aria-label": "Refused templates" },
          h("h2", {}, "Refused"),
          h("ul", {}, catalog.errors.map(problemRow)),
        ),
      h(
        "ul",
        { class: "template-list" },
        catalog.templates.map((t) => templateEntry(t, refresh)),
      ),
      isAdmin() && uploadForm(refresh),
    );
  };
  await refresh();
}
