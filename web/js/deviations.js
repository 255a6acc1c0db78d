/**
 * The revert list (fields of kind `deviations`) and the operations log (kind `changes`): what was changed away
 * from normal and its "Mark reverted", and who changed production, with the uncoordinated mark the server writes
 * (incident-doc's `operation/deviations.rs` and `operation/changes.rs`; the rules hold raw changes to the same).
 */

import { h, timeEl } from "./dom.js";
import { holder, rolesOf } from "./model.js";

/** The values of the inputs in `form`, by their `name`, trimmed; the form is cleared when `submit` took them. */
function submitted(form, submit) {
  const values = Object.fromEntries([...form.elements].filter((el) => el.name).map((el) => [el.name, el.value.trim()]));
  if (submit(values)) form.reset();
}

/** A one-row form of labelled text inputs (`[name, label]`) and a submit button. */
function addForm(attrs, inputs, button, submit) {
  return h(
    "form",
    {
      class: "add-row",
      ...attrs,
      onsubmit: (event) => {
        event.preventDefault();
        submitted(event.target, submit);
      },
    },
    inputs.map(([name, label]) => h("input", { type: "text", name, required: true, placeholder: label, "aria-label": label })),
    h("button", { type: "submit" }, button),
  );
}

/** Each deviation: what, how to revert it, who and when; open ones with their Mark reverted button. */
export function deviationsEditor(field, ctx) {
  const items = field.value.map((d) =>
    h(
      "li",
      { "data-deviation": d.id, class: d.reverted ? "done" : "open" },
      h("strong", { dir: "auto" }, d.what),
      h("span", { dir: "auto" }, ` · revert: ${d.revert}`),
      h("span", { class: "muted" }, ` · ${d.by} at `, timeEl(d.at)),
      d.reverted
        ? h("span", { class: "reverted" }, ` · reverted by ${d.reverted.by} at `, timeEl(d.reverted.at), d.reverted.note ? `: ${d.reverted.note}` : "")
        : h(
            "button",
            {
              type: "button",
              "data-mark-reverted": d.id,
              "aria-label": `Mark reverted: ${d.what}`,
              onclick: () => ctx.act({ op: "markReverted", id: d.id }),
            },
            "Mark reverted",
          ),
    ),
  );
  return [
    items.length ? h("ul", { class: "deviations" }, items) : h("p", { class: "muted" }, "No deviations from normal."),
    addForm(
      { "data-add-deviation": field.key },
      [
        ["what", "What was changed"],
        ["revert", "How to revert it"],
      ],
      "Add deviation",
      ({ what, revert }) => ctx.act({ op: "addDeviation", what, revert }),
    ),
  ];
}

/** The log, uncoordinated entries marked; the Operations lead's delegations under it. */
export function changesEditor(field, ctx) {
  const items = field.value.map((c) =>
    h(
      "li",
      { "data-change": c.id, class: c.uncoordinated ? "uncoordinated" : null },
      timeEl(c.at),
      h("span", {}, ` ${c.by} on `),
      h("strong", { dir: "auto" }, c.target),
      h("span", { dir: "auto" }, `: ${c.what}`),
      c.uncoordinated && h("strong", { class: "uncoordinated-mark" }, " · uncoordinated"),
    ),
  );
  return [
    items.length ? h("ul", { class: "changes" }, items) : h("p", { class: "muted" }, "No changes logged."),
    addForm(
      { "data-log-change": field.key },
      [
        ["what", "What was changed"],
        ["target", "On which system"],
      ],
      "Log change",
      ({ what, target }) => ctx.act({ op: "logChange", what, target }),
    ),
    delegations(ctx),
  ];
}

/** Who the Operations lead delegated to; the lead (and only the lead) adds and takes back delegations. */
function delegations(ctx) {
  const delegates = ctx.view?.operationsDelegates ?? [];
  const lead = ctx.view ? holder(rolesOf(ctx.view), "operations")?.person : null;
  const mine = lead === ctx.command.name;
  return h(
    "div",
    { class: "delegations" },
    h(
      "p",
      { class: "muted" },
      `Changes to production are coordinated by the Operations lead (${lead ?? "nobody yet"})`,
      delegates.length ? ` and delegated to ${delegates.join(", ")}.` : ".",
    ),
    mine &&
      delegates.map((person) =>
        h(
          "button",
          { type: "button", "data-revoke-delegation": person, onclick: () => ctx.act({ op: "revokeDelegation", person }) },
          `Take back from ${person}`,
        ),
      ),
    mine &&
      addForm({ "data-delegate": "operations" }, [["person", "Delegate changes to"]], "Delegate", ({ person }) =>
        ctx.act({ op: "delegateOperations", person }),
      ),
  );
}

/**
 * The uncoordinated changes the Operations lead and the commander have not dismissed on this page yet: freelancing
 * is seen at once, by the two people who must act on it.
 */
export function uncoordinatedBanner(view, name, dismissed, dismiss) {
  const roles = rolesOf(view);
  const leads = [holder(roles, "operations")?.person, roles.commander];
  if (!leads.includes(name)) return null;
  const log = view.fields.find((field) => field.kind === "changes");
  const fresh = (log?.value ?? []).filter((c) => c.uncoordinated && !dismissed.has(c.id));
  if (!fresh.length) return null;
  return h(
    "div",
    { id: "uncoordinated-banner", role: "alert" },
    fresh.map((c) => h("p", { "data-uncoordinated": c.id }, `Uncoordinated change by ${c.by} on ${c.target}: ${c.what}`)),
    h(
      "button",
      { type: "button", "data-dismiss-uncoordinated": "", onclick: () => dismiss(fresh.map((c) => c.id)) },
      "Seen",
    ),
  );
}
