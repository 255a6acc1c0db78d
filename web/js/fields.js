/**
 * One `<section data-field>` per template field: its label, owner and refresh cadence, the *last updated* stamp,
 * and an editor suited to its kind. Rendering is a pure function of the field (the page decides when to re-render
 * and keeps focused controls through `patch`); edits leave through `ctx.act(operation)`, which returns whether
 * the model accepted it, text editors are wired by `ctx.wireText(textarea)`, and input the page cannot read is
 * explained by `ctx.refuse(message)`.
 */

import { h, timeEl, utcTime } from "./dom.js";
import { changesEditor, deviationsEditor } from "./deviations.js";
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

/** Keys that step a closed `<select>` through its options (and fire `change` at every step). */
const isStep = (key) => ["ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"].includes(key) || key.length === 1;

/**
 * A `<select>` over `[value, label]` options that calls `choose(value)` on a deliberate choice: a pick with the
 * mouse or a finger at once, but keys only step through the options until Enter or leaving the control (Escape
 * puts the value back). Every `change` would otherwise be an edit, a stamp and a webhook per keypress.
 */
function select(labelId, current, options, choose) {
  let before = null;
  let pending = false;
  const commit = (el) => {
    const chosen = pending && el.value !== before;
    before = null;
    pending = false;
    if (chosen) choose(el.value);
  };
  return h(
    "select",
    {
      "aria-labelledby": labelId,
      value: current,
      onkeydown: (e) => {
        if (e.key === "Enter" && before !== null) {
          e.preventDefault();
          commit(e.target);
        } else if (e.key === "Escape" && before !== null) {
          e.target.value = before;
          before = null;
          pending = false;
        } else if (isStep(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey) {
          before ??= e.target.value;
        }
      },
      onchange: (e) => {
        if (before === null) choose(e.target.value);
        else pending = true;
      },
      onblur: (e) => commit(e.target),
    },
    options.map(([value, label]) => h("option", { value }, label)),
  );
}

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
        "aria-label": `Hand over the ${label} role`,
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
  // Said in words on the page, not only in the disabled controls' tooltips, which a touch screen never shows.
  const why =
    assignRefusal &&
    h("p", { class: "why", id: "roles-why" }, `${assignRefusal} and pins fields; whoever holds a role may hand it over.`);
  const list = h(
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
                "aria-describedby": assignRefusal ? "roles-why" : null,
                onchange: (e) => ctx.act({ op: "assignRole", role, person: e.target.value.trim() || null }),
              }),
          // Role rotation: what this person held in earlier incidents (`#/people/<name>`).
          held &&
            !held.byDefault &&
            h(
              "a",
              { class: "role-history", href: `#/people/${encodeURIComponent(held.person)}` },
              `${held.person}'s roles`,
            ),
          handOver(role, label, ctx),
          handoffs[role] && pendingHandoff(role, label, handoffs[role], ctx),
        ),
      );
    }),
  );
  return [why, list];
}

/** An item's owner and bug reference (a blank one clears it), and its removal, folded away under the item. */
function itemDetails(field, item, ctx) {
  const save = (e) => {
    const box = e.target.closest(".item-details");
    const value = (name) => box.querySelector(`[data-item-${name}]`).value.trim() || null;
    ctx.act({ op: "setItemDetails", field: field.key, id: item.id, owner: value("owner"), bug: value("bug") });
  };
  const remove = () =>
    window.confirm(`Remove "${item.text}" from ${field.label}?`) &&
    ctx.act({ op: "removeItem", field: field.key, id: item.id });
  // Opened, it stays open through re-renders (someone else's edit of the list), until the person closes it.
  return h(
    "details",
    {
      class: "item-details",
      open: ctx.openItems.has(item.id),
      ontoggle: (e) => (e.target.open ? ctx.openItems.add(item.id) : ctx.openItems.delete(item.id)),
    },
    h("summary", {}, "Owner, bug, remove"),
    h("input", {
      type: "text",
      "data-item-owner": item.id,
      "aria-label": "Owner",
      placeholder: "owner",
      value: item.owner ?? "",
      onchange: save,
    }),
    h("input", {
      type: "text",
      "data-item-bug": item.id,
      "aria-label": "Bug reference",
      placeholder: "bug, e.g. BUG-1234",
      value: item.bug ?? "",
      onchange: save,
    }),
    h("button", { type: "button", "data-remove-item": item.id, onclick: remove }, "Remove"),
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
      itemDetails(field, item, ctx),
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

/** How long after its time an entry's author may still reword or remove it (`EDIT_GRACE` in the model's rules). */
const ENTRY_GRACE_MS = 5 * 60_000;

/** An entry's text, or while its author rewords it, the box to do so (Enter saves, Escape leaves it as it was). */
function entryText(entry, ctx) {
  if (ctx.editingEntry !== entry.id) return h("p", { class: "entry-text", dir: "auto" }, entry.text);
  return h("input", {
    type: "text",
    class: "entry-edit",
    dir: "auto",
    "data-edit-entry": entry.id,
    "aria-label": "The entry's text",
    value: entry.text,
    onkeydown: (e) => {
      if (e.key === "Escape") ctx.editEntry(null);
      if (e.key !== "Enter" || e.isComposing) return;
      e.preventDefault();
      const text = e.target.value.trim();
      if (text && ctx.act({ op: "editTimelineEntry", id: entry.id, text })) ctx.editEntry(null);
    },
  });
}

/** Edit and Delete on the signed-in person's own entries while the rules still let them correct them. */
function entryActions(entry, ctx) {
  const own = entry.author === ctx.command.name && Date.now() - Date.parse(entry.at) <= ENTRY_GRACE_MS;
  if (!own) return null;
  const remove = () =>
    window.confirm(`Delete your entry "${entry.text}"? Only you can, for a few minutes after its time.`) &&
    ctx.act({ op: "removeTimelineEntry", id: entry.id });
  return h(
    "p",
    { class: "entry-actions" },
    h("button", { type: "button", "data-edit-entry-button": entry.id, onclick: () => ctx.editEntry(entry.id) }, "Edit"),
    h("button", { type: "button", "data-delete-entry": entry.id, onclick: remove }, "Delete"),
  );
}

/**
 * The add box (Enter adds; the time box beside it backdates the entry to something that happened earlier),
 * then the entries, newest first.
 */
function timelineEditor(field, ctx) {
  const add = (text) => {
    const when = document.getElementById("timeline-at");
    const at = fromUtcInput(when.value);
    if (at === undefined) {
      ctx.refuse("Write when it happened as YYYY-MM-DD HH:MM, in UTC, or leave it empty for now.");
      return false;
    }
    const added = ctx.act({ op: "addTimelineEntry", text, ...(at ? { at } : {}) });
    if (added) when.value = "";
    return added;
  };
  return [
    h(
      "div",
      { class: "timeline-add" },
      h("input", {
        id: "timeline-add",
        type: "text",
        class: "add",
        dir: "auto",
        placeholder: "What just happened? Enter adds it",
        "aria-label": "Add a timeline entry",
        onkeydown: onEnter(add),
      }),
      h("input", {
        id: "timeline-at",
        type: "text",
        inputmode: "numeric",
        autocomplete: "off",
        placeholder: "when, if earlier: YYYY-MM-DD HH:MM UTC",
        "aria-label": "When it happened, if earlier (UTC, YYYY-MM-DD HH:MM)",
      }),
    ),
    h(
      "ol",
      { class: "timeline" },
      field.value.map((entry) =>
        h(
          "li",
          { "data-entry-id": entry.id },
          h("p", { class: "entry-head" }, timeEl(entry.at), " ", h("span", { class: "entry-author" }, entry.author)),
          entryText(entry, ctx),
          entryActions(entry, ctx),
        ),
      ),
    ),
  ];
}

/** `2026-11-24 09:40`: how the lifecycle shows and takes a moment, in UTC like every time on the page. */
const toUtcInput = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16).replace("T", " ") : "");

/**
 * The moment written as `YYYY-MM-DD HH:MM` (UTC; a `T` between date and time is fine too): an ISO string, null
 * for a cleared input, or undefined when it is not such a moment. A `datetime-local` input would show the
 * browser's locale format (`12/06/2026, 01:33 PM`) next to a label that says UTC.
 */
function fromUtcInput(value) {
  const text = value.trim();
  if (!text) return null;
  const match = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})$/.exec(text);
  const at = match && new Date(`${match[1]}T${match[2]}:00Z`);
  return at && !Number.isNaN(at.getTime()) ? at.toISOString() : undefined;
}

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
            type: "text",
            inputmode: "numeric",
            autocomplete: "off",
            placeholder: "YYYY-MM-DD HH:MM",
            "data-stage": stage,
            value: toUtcInput(field.value[stage]),
            onchange: (e) => {
              const at = fromUtcInput(e.target.value);
              if (at === undefined) {
                e.target.value = toUtcInput(field.value[stage]);
                ctx.refuse(`Write the ${label.toLowerCase()} time as YYYY-MM-DD HH:MM, in UTC.`);
              } else setAt(at);
            },
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
  deviations: deviationsEditor,
  changes: changesEditor,
};

/** "Pinned by bob at 08:31 UTC": everyone sees who put a field first, and when. */
function pinMark(pin) {
  return h("span", { class: "pin-mark" }, `Pinned by ${pin.by}`, pin.at && [" at ", timeEl(pin.at)]);
}

/** The kinds whose sections grow long; each can be folded to its heading to keep a long page short. */
const LONG_KINDS = new Set(["markdown", "checklist", "questions", "timestamps", "deviations", "changes"]);

/** Hide/Show for one section; this page remembers it (`ctx.collapsed`) across re-renders, not across reloads. */
function collapseButton(field, ctx, collapsed) {
  return h(
    "button",
    {
      type: "button",
      class: "collapse",
      "data-collapse": field.key,
      "aria-expanded": String(!collapsed),
      "aria-label": `${collapsed ? "Show" : "Hide"} ${field.label}`,
      onclick: () => ctx.toggleCollapsed(field.key),
    },
    collapsed ? "Show" : "Hide",
  );
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
  const collapsed = ctx.collapsed.has(field.key);
  return h(
    "section",
    {
      class: "field",
      "data-field": field.key,
      "data-kind": field.kind,
      "data-pinned": String(Boolean(pin)),
      "data-collapsed": collapsed,
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
      LONG_KINDS.has(field.kind) && collapseButton(field, ctx, collapsed),
    ),
    h("p", { class: "meta" }, stamp, owner && ` · ${owner}`),
    field.prompt && h("p", { class: "prompt", id: `${labelId}-prompt` }, field.prompt),
    h("div", { class: "editor" }, EDITORS[field.kind]?.(field, ctx, labelId)),
  );
}
