/**
 * One `<section data-field>` per template field: its label, owner and refresh cadence, the *last updated* stamp,
 * and an editor suited to its kind. Rendering is a pure function of the field (the page decides when to re-render
 * and keeps focused controls through `patch`); edits leave through `ctx.act(operation)`, which returns whether
 * the model accepted it, and text editors are wired by `ctx.wireText(textarea)`.
 */

import { h, timeEl, utcTime } from "./dom.js";
import { ROLES, STAGES, STATUSES, fieldByKey, holder, roleLabel } from "./model.js";

/**
 * Writes the stamp line; a field past its due time (`dueAt`: its last update, or the declaration, plus the
 * template's cadence, as the server computes it) says so, since a stale status misleads responders.
 */
function renderStamp(el, field, now) {
  const stamp = field.updated;
  const overdue = Boolean(field.dueAt && now > Date.parse(field.dueAt));
  el.closest("section[data-field]")?.toggleAttribute("data-stale", overdue);
  el.textContent = stamp ? `last updated at ${utcTime(stamp.at)} by ${stamp.by}` : "not updated yet";
  if (overdue) {
    // The due time, not the cadence: the cadence depends on the severity (`cadenceBySeverity`).
    el.append(h("strong", { class: "overdue" }, ` — due for an update since ${utcTime(field.dueAt)}`));
  }
}

/** Rewrites every section's stamp: when stamps change, and as time makes fields overdue. */
export function refreshStamps(container, view, now = Date.now()) {
  for (const section of container.querySelectorAll("section[data-field]")) {
    const field = fieldByKey(view, section.dataset.field);
    if (field) renderStamp(section.querySelector(".stamp"), field, now);
  }
}

/** A keydown handler that submits the trimmed text on Enter and clears the input when the model took it. */
const onEnter = (submit) => (event) => {
  if (event.key !== "Enter" || event.isComposing) return;
  event.preventDefault();
  const text = event.target.value.trim();
  if (text && submit(text)) event.target.value = "";
};

/**
 * A bare address without the punctuation that ends the sentence around it (`.,;:!?`, and a `)` that closes no `(`
 * of the address: `…/wiki/Foo_(bar)` keeps its own), as the HTML export's autolinker trims it.
 */
function trimAddress(url) {
  const count = (c) => url.split(c).length - 1;
  for (;;) {
    const last = url.at(-1);
    if ((last && ".,;:!?".includes(last)) || (last === ")" && count(")") > count("("))) url = url.slice(0, -1);
    else return url;
  }
}

/**
 * The web addresses in Markdown text: `[label](url)` links (with balanced parentheses in the address, as
 * CommonMark allows) and bare http(s) addresses, so the chat channel and call bridge pasted into the command post
 * are one click away.
 */
export function linksOf(text) {
  const pattern =
    /\[([^\]\n]+)\]\(((?:https?:\/\/|mailto:)(?:[^\s()]|\([^\s()]*\))+)\)|(https?:\/\/[^\s<>"]+)/g;
  return [...text.matchAll(pattern)].map((m) => {
    if (m[2]) return { label: m[1], href: m[2] };
    const href = trimAddress(m[3]);
    return { label: href, href };
  });
}

/** The links row under a Markdown field, or nothing when it holds no address. */
function linksRow(field) {
  const links = linksOf(field.value ?? "");
  if (links.length === 0) return null;
  return h(
    "p",
    { class: "links", "data-links": field.key },
    links.map((link) => h("a", { href: link.href, target: "_blank", rel: "noopener noreferrer" }, link.label)),
  );
}

/**
 * A textarea co-editing one text of the model (`data-input` = its text address: a field key, or `field/item` for a
 * checklist item's text), with the overlay others' carets are drawn on (carets.js). A one-line text refuses
 * Enter, which would add a newline the model refuses.
 */
function coeditBox(address, value, { oneLine, ...attributes }, ctx) {
  const textarea = h("textarea", {
    ...attributes,
    "data-input": address,
    value,
    rows: oneLine ? 1 : 3,
    dir: "auto",
    onkeydown: oneLine ? (e) => e.key === "Enter" && e.preventDefault() : null,
  });
  ctx.wireText(textarea);
  return h("div", { class: "coedit" }, textarea, h("div", { class: "remote-carets", "aria-hidden": "true" }));
}

function textEditor(field, ctx, labelId) {
  const box = coeditBox(
    field.key,
    field.value,
    {
      oneLine: field.kind === "text",
      class: field.kind,
      "aria-labelledby": labelId,
      "aria-describedby": field.prompt ? `${labelId}-prompt` : null,
    },
    ctx,
  );
  return field.kind === "markdown" ? [box, linksRow(field)] : box;
}

/** A `<select>` over `[value, label]` options that calls `choose(value)` when changed. */
const select = (labelId, current, options, choose) =>
  h(
    "select",
    { "aria-labelledby": labelId, value: current, onchange: (e) => choose(e.target.value) },
    options.map(([value, label]) => h("option", { value }, label)),
  );

function statusEditor(field, ctx, labelId) {
  const options = field.value ? STATUSES : [["", "No status"], ...STATUSES];
  return select(labelId, field.value ?? "", options, (status) => ctx.act({ op: "setStatus", status }));
}

function choiceEditor(field, ctx, labelId) {
  const options = [["", "Not set"], ...(field.options ?? []).map((o) => [o.key, `${o.key}: ${o.label}`])];
  return select(labelId, field.value ?? "", options, (value) =>
    ctx.act({ op: "setChoice", field: field.key, value: value || null }),
  );
}

function flagEditor(field, ctx) {
  return h(
    "label",
    { class: "check" },
    h("input", {
      type: "checkbox",
      "data-flag": field.key,
      checked: field.value,
      onchange: (e) => ctx.act({ op: "setFlag", field: field.key, value: e.target.checked }),
    }),
    " Yes",
  );
}

/** "Handoff of Incident Commander to bob proposed by alice — waiting for bob", with Withdraw for who may. */
function pendingHandoff(role, label, handoff, ctx) {
  const refusal = ctx.command.handoffRefusal(role);
  return h(
    "p",
    { class: "handoff", "data-handoff": role },
    `Handoff of ${label} to ${handoff.to}`,
    handoff.by && ` proposed by ${handoff.by}`,
    handoff.at && [" at ", timeEl(handoff.at)],
    ` — waiting for ${handoff.to} `,
    h(
      "button",
      {
        type: "button",
        "data-cancel-handoff": role,
        "aria-label": `Withdraw the handoff of ${label}`,
        disabled: Boolean(refusal),
        title: refusal,
        onclick: () => ctx.act({ op: "cancelHandoff", role }),
      },
      "Withdraw",
    ),
  );
}

/** A person to hand `role` over to and the button that proposes it; nothing changes until they accept. */
function handOver(role, label, ctx) {
  const refusal = ctx.command.handoffRefusal(role);
  const propose = (to) => ctx.act({ op: "proposeHandoff", role, to });
  return h(
    "span",
    { class: "hand-over" },
    h("input", {
      type: "text",
      "data-handoff-to": role,
      autocomplete: "off",
      // Suggests the people the page knows of (`#people`, kept by the incident page): present, holding a role,
      // writing in the timeline.
      list: "people",
      placeholder: "hand over to…",
      "aria-label": `Hand the ${label} role over to`,
      disabled: Boolean(refusal),
      title: refusal,
      onkeydown: onEnter(propose),
    }),
    h(
      "button",
      {
        type: "button",
        "data-propose-handoff": role,
        "aria-label": `Propose handing the ${label} role over`,
        disabled: Boolean(refusal),
        title: refusal,
        // The input is found again at click time: a focused button survives re-renders (patch.js), its old sibling not.
        onclick: (e) => propose(e.currentTarget.parentElement.querySelector("input").value.trim()),
      },
      "Hand over",
    ),
  );
}

/**
 * The Incident Commander, shown but never typed over: command changes hands only when the person proposed with
 * "Hand over" accepts, so a typo in this box cannot hand it to nobody and lock everyone out. With nobody in
 * command, anyone who may edit takes it; an administrator may take or assign it (`ctx.overrideCommand`, which asks
 * for the reason the timeline and the audit trail record).
 */
function commanderHolder(id, ctx) {
  const { commander, name } = ctx.command;
  return [
    h("input", {
      id,
      "data-role": "commander",
      readonly: true,
      value: commander ?? "",
      placeholder: "nobody commands",
      title: "Command changes hands with Hand over, once the person proposed accepts",
    }),
    commander === null &&
      h(
        "button",
        {
          type: "button",
          "data-take-command": "",
          onclick: () => ctx.act({ op: "assignRole", role: "commander", person: name }),
        },
        "Take command",
      ),
    ctx.admin &&
      commander !== null &&
      commander !== name &&
      h(
        "button",
        { type: "button", "data-override-command": "take", onclick: () => ctx.overrideCommand(name) },
        "Take command (admin)",
      ),
    ctx.admin &&
      h(
        "button",
        {
          type: "button",
          "data-override-command": "assign",
          title: "Makes the person in the hand-over box the commander without a handoff",
          // The hand-over box is found again at click time, as its own button does: it suggests known people.
          onclick: (e) => {
            const box = e.currentTarget.parentElement.querySelector("[data-handoff-to]");
            ctx.overrideCommand(box.value.trim());
          },
        },
        "Assign command (admin)",
      ),
  ];
}

/**
 * Each role with its holder (an empty role shows who holds it by default, the commander), its pending handoff,
 * and the control to hand it over. The commander assigns the other roles directly; command itself changes hands
 * only by a handoff (`commanderHolder`).
 */
function rolesEditor(field, ctx) {
  const { assignRefusal, handoffs } = ctx.command;
  return h(
    "dl",
    { class: "pairs roles" },
    ROLES.map(([role, label]) => {
      const held = holder(field.value, role);
      const id = `role-${role}`;
      return h(
        "div",
        {},
        h("dt", {}, h("label", { for: id }, label)),
        h(
          "dd",
          {},
          role === "commander"
            ? commanderHolder(id, ctx)
            : h("input", {
                id,
                "data-role": role,
                autocomplete: "off",
                value: field.value[role] ?? "",
                placeholder: held?.byDefault ? `${held.person} (commander)` : "unassigned",
                disabled: Boolean(assignRefusal),
                title: assignRefusal,
                onchange: (e) => ctx.act({ op: "assignRole", role, person: e.target.value.trim() || null }),
              }),
          handOver(role, label, ctx),
          handoffs[role] && pendingHandoff(role, label, handoffs[role], ctx),
        ),
      );
    }),
  );
}

/** Each item: its DONE box and its text, co-edited character by character as text fields are. */
function checklistEditor(field, ctx) {
  const items = field.value.map((item) =>
    h(
      "li",
      { class: item.done ? "done" : null },
      h("input", {
        type: "checkbox",
        "data-item-id": item.id,
        checked: item.done,
        "aria-label": `Done: ${item.text}`,
        onchange: (e) => ctx.act({ op: "setItemDone", field: field.key, id: item.id, done: e.target.checked }),
      }),
      coeditBox(`${field.key}/${item.id}`, item.text, { oneLine: true, class: "item-text", "aria-label": `${field.label} item` }, ctx),
      (item.owner || item.bug) && h("span", { class: "item-meta" }, [item.owner, item.bug].filter(Boolean).join(" · ")),
    ),
  );
  return [
    h("ul", { class: "checklist" }, items),
    h("input", {
      type: "text",
      class: "add",
      "data-add": field.key,
      placeholder: "Add an item, then Enter",
      "aria-label": `Add to ${field.label}`,
      onkeydown: onEnter((text) => ctx.act({ op: "addItem", field: field.key, text })),
    }),
  ];
}

function timelineEditor(field, ctx) {
  return [
    h("input", {
      id: "timeline-add",
      type: "text",
      class: "add",
      placeholder: "What just happened? Enter adds it at the current time",
      "aria-label": "Add a timeline entry",
      onkeydown: onEnter((text) => ctx.act({ op: "addTimelineEntry", text })),
    }),
    h(
      "ol",
      { class: "timeline" },
      field.value.map((entry) =>
        h(
          "li",
          { "data-entry-id": entry.id },
          h("p", { class: "entry-head" }, timeEl(entry.at), " ", h("span", { class: "entry-author" }, entry.author)),
          h("p", { class: "entry-text" }, entry.text),
        ),
      ),
    ),
  ];
}

/** `datetime-local` holds no zone; the page fills and reads it as UTC, and says so. */
const toUtcInput = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : "");
const fromUtcInput = (value) => (value ? new Date(`${value}:00Z`).toISOString() : null);

function timestampsEditor(field, ctx) {
  return h(
    "dl",
    { class: "pairs" },
    STAGES.map(([stage, label]) => {
      const id = `stage-${stage}`;
      const setAt = (at) => ctx.act({ op: "setTimestamp", stage, at });
      return h(
        "div",
        {},
        h("dt", {}, h("label", { for: id }, `${label} (UTC)`)),
        h(
          "dd",
          {},
          h("input", {
            id,
            type: "datetime-local",
            "data-stage": stage,
            value: toUtcInput(field.value[stage]),
            onchange: (e) => setAt(fromUtcInput(e.target.value)),
          }),
          h(
            "button",
            {
              type: "button",
              "data-now": stage,
              "aria-label": `${label}: now`,
              onclick: () => setAt(new Date().toISOString()),
            },
            "Now",
          ),
        ),
      );
    }),
  );
}

function questionsEditor(field, ctx) {
  return h(
    "ul",
    { class: "questions" },
    (field.options ?? []).map((question) => {
      const answered = question.key in field.value;
      return h(
        "li",
        {},
        h(
          "label",
          {},
          h("input", {
            type: "checkbox",
            "data-question": question.key,
            checked: field.value[question.key] === true,
            indeterminate: !answered,
            onchange: (e) =>
              ctx.act({ op: "answer", field: field.key, question: question.key, value: e.target.checked }),
          }),
          ` ${question.label}`,
          !answered && h("span", { class: "muted" }, " (not answered)"),
        ),
      );
    }),
  );
}

const EDITORS = {
  text: textEditor,
  markdown: textEditor,
  status: statusEditor,
  choice: choiceEditor,
  flag: flagEditor,
  roles: rolesEditor,
  checklist: checklistEditor,
  timeline: timelineEditor,
  timestamps: timestampsEditor,
  questions: questionsEditor,
};

/** "Pinned by bob at 08:31 UTC": everyone sees who put a field first, and when. */
function pinMark(pin) {
  return h("span", { class: "pin-mark" }, `Pinned by ${pin.by}`, pin.at && [" at ", timeEl(pin.at)]);
}

/**
 * The section of `field`. `ctx.command` (`commandOf` in model.js) says whether it is pinned, by whom, and whether
 * the signed-in person may pin or unpin it; `ctx.severity` picks the field's cadence.
 */
export function renderSection(field, ctx) {
  const labelId = `field-${field.key}`;
  const stamp = h("span", { class: "stamp" });
  renderStamp(stamp, field, Date.now());
  const minutes = field.cadenceBySeverity?.[ctx.severity] ?? field.cadenceMinutes;
  const cadence = minutes ? `, ${minutes % 60 === 0 ? `every ${minutes / 60}\u00a0h` : `every ${minutes}\u00a0min`}` : "";
  const owner = field.owner && `Kept current by the ${roleLabel(field.owner)}${cadence}`;
  const pin = ctx.command.pins.find((p) => p.field === field.key);
  const { pinRefusal } = ctx.command;
  return h(
    "section",
    {
      class: "field",
      "data-field": field.key,
      "data-kind": field.kind,
      "data-pinned": String(Boolean(pin)),
      "aria-labelledby": labelId,
    },
    h(
      "header",
      { class: "field-head" },
      h("h2", { id: labelId }, field.label),
      pin && pinMark(pin),
      h("span", { class: "editing", hidden: true }),
      h(
        "button",
        {
          type: "button",
          class: "pin",
          "data-pin": field.key,
          "aria-label": `${pin ? "Unpin" : "Pin"} ${field.label}`,
          disabled: Boolean(pinRefusal),
          title: pinRefusal,
          // Read at click time: a focused button survives re-renders (see patch.js) while its section's state moves on.
          onclick: (e) => {
            const isPinned = e.currentTarget.closest("section").dataset.pinned === "true";
            ctx.act({ op: isPinned ? "unpin" : "pin", field: field.key });
          },
        },
        pin ? "Unpin" : "Pin",
      ),
    ),
    h("p", { class: "meta" }, stamp, owner && ` · ${owner}`),
    field.prompt && h("p", { class: "prompt", id: `${labelId}-prompt` }, field.prompt),
    h("div", { class: "editor" }, EDITORS[field.kind]?.(field, ctx, labelId)),
  );
}
