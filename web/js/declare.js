/**
 * Declaring an incident (`#/declare`): pick a template (its description and fields shown), name it, answer the three declaration questions (a second
 * team needed, customers can see it, unsolved after an hour of focused analysis: any yes means declare, and early
 * is better), optionally set severity and summary, then open the new incident's live page.
 */

import { declareIncident, getTemplates } from "./api.js";
import { canWrite } from "./auth.js";
import { showRotation } from "./checkins.js";
import { h, showError } from "./dom.js";

/** The questions the declare API takes as booleans; a template shows them when its questions field has them. */
const DECLARATION_QUESTIONS = ["secondTeam", "customerVisible", "unsolvedAfterHour"];

const questionsOf = (template) =>
  template.fields
    .filter((f) => f.kind === "questions")
    .flatMap((f) => f.options ?? [])
    .filter((q) => DECLARATION_QUESTIONS.includes(q.key));

const severityOf = (template) => template.fields.find((f) => f.key === "severity" && f.kind === "choice");

/** A field's kind and keeper, as the preview lists them. */
const fieldNote = (field) => [field.kind, field.owner && `kept by ${field.owner}`].filter(Boolean).join(", ");

/**
 * What the chosen template's document will hold, before anyone declares with it: its description and its fields in
 * order (a team's own template may differ from the one the responder knows).
 */
function templatePreview(template) {
  return h(
    "section",
    { class: "template-preview", "data-template-preview": template.id, "aria-label": `${template.name}: fields` },
    template.description && h("p", { class: "template-description" }, template.description),
    h(
      "ol",
      { class: "template-fields" },
      template.fields.map((f) =>
        h("li", { "data-field": f.key }, h("strong", {}, f.label), h("span", { class: "hint" }, ` ${fieldNote(f)}`)),
      ),
    ),
  );
}

/**
 * Who may see the incident: the template's default (the security template restricts), which the declarer may
 * change. Restricted, only the declarer, the role holders, the people the commander adds and admins see it.
 */
function restrictedBox(template) {
  return h(
    "label",
    { class: "check" },
    h("input", { type: "checkbox", name: "restricted", checked: Boolean(template.restricted) }),
    " Restricted: only its members (you, the role holders, the people the commander adds) and admins can see it",
  );
}

/** The parts of the form that depend on the template: who may see it, its questions and its severities. */
function templateParts(template) {
  const questions = questionsOf(template);
  const severity = severityOf(template);
  return [
    restrictedBox(template),
    questions.length > 0 &&
      h(
        "fieldset",
        {},
        h("legend", {}, "Declaration questions"),
        h("p", { class: "hint" }, "Any yes is reason enough to declare. Declaring early costs little."),
        questions.map((q) =>
          h("label", { class: "check" }, h("input", { type: "checkbox", name: q.key }), ` ${q.label}`),
        ),
      ),
    severity &&
      h(
        "label",
        {},
        "Severity (optional)",
        h(
          "select",
          { name: "severity" },
          h("option", { value: "" }, "Not known yet"),
          (severity.options ?? []).map((o) => h("option", { value: o.key }, `${o.key}: ${o.label}`)),
        ),
      ),
  ].filter(Boolean);
}

function requestBody(form, template) {
  const data = new FormData(form);
  const body = { template: template.id, title: data.get("title").trim() };
  for (const q of questionsOf(template)) body[q.key] = data.has(q.key);
  body.restricted = data.has("restricted");
  const severity = data.get("severity");
  const summary = data.get("summary").trim();
  if (severity) body.severity = severity;
  if (summary) body.summary = summary;
  return body;
}

export async function showDeclare(main, _route, signal) {
  main.replaceChildren(h("h1", {}, "Declare an incident"));
  if (!canWrite()) {
    main.append(h("p", {}, "This token may read incidents but not declare them. Ask an admin for a write token."));
    return;
  }
  let templates;
  try {
    templates = await getTemplates();
  } catch (error) {
    showError(error);
    return;
  }
  if (signal.aborted) return;

  const byId = (id) => templates.find((t) => t.id === id);
  const preview = h("div", {}, templatePreview(templates[0]));
  const dependent = h("div", {}, templateParts(templates[0]));
  const submit = h("button", { type: "submit", class: "primary" }, "Declare");
  const rotation = h("p", { class: "rotation", hidden: true, "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "declare",
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        try {
          const created = await declareIncident(requestBody(form, byId(form.elements.template.value)));
          location.hash = `#/incidents/${encodeURIComponent(created.id)}`;
        } catch (error) {
          showError(error);
          submit.disabled = false;
        }
      },
    },
    h(
      "fieldset",
      {
        onchange: (e) => {
          preview.replaceChildren(templatePreview(byId(e.target.value)));
          dependent.replaceChildren(...templateParts(byId(e.target.value)));
        },
      },
      h("legend", {}, "Template"),
      templates.map((t, i) =>
        h(
          "label",
          { class: "choice" },
          h("input", { type: "radio", name: "template", value: t.id, checked: i === 0 }),
          h(
            "span",
            {},
            h("strong", {}, t.name),
            t.origin !== "built-in" && h("span", { class: "hint" }, ` (${t.origin === "store" ? "uploaded" : "team"})`),
          ),
        ),
      ),
    ),
    preview,
    h(
      "label",
      {},
      "Name",
      h("input", {
        name: "title",
        required: true,
        maxlength: 200,
        autocomplete: "off",
        placeholder: "e.g. Checkout errors",
      }),
      h(
        "span",
        { class: "hint" },
        `The date is added for you: “Checkout errors: ${new Date().toISOString().slice(0, 10)}”.`,
      ),
    ),
    dependent,
    h("label", {}, "Summary (optional)", h("textarea", { name: "summary", rows: 3 })),
    rotation,
    submit,
  );
  // Who has not commanded recently among the people connected now: "if you were the commander last time, hand
  // command to someone else this time" (you declare, so you command until you hand it over).
  showRotation(rotation, []);
  main.append(form);
  form.elements.title.focus();
}
