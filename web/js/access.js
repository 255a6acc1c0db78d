/**
 * Who can see the incident (`#access` on the incident page): open to everyone with a token, or restricted to its
 * members (the declarer, the role holders and those being handed a role, the people the commander added) and
 * admins. The commander (or an admin) restricts or opens it and adds or removes people; the model refuses anyone
 * else, as the server does. Rendering is a pure function of the view; edits leave through `ctx.change(op)`, which
 * returns whether the change was taken.
 */

import { h } from "./dom.js";
import { ROLES, rolesOf } from "./model.js";

/** Everyone who is a member and why: [name, reason], the added ones last with `added` set. */
function membersOf(view) {
  const reasons = new Map();
  const add = (name, reason) => name && !reasons.has(name) && reasons.set(name, reason);
  add(view.createdBy, "declared it");
  const roles = rolesOf(view);
  for (const [role, label] of ROLES) add(roles[role], label);
  // Whoever a role is being handed to sees the incident, to accept it.
  for (const [role, handoff] of ROLES.map(([key, label]) => [label, view.handoffs?.[key]])) {
    add(handoff?.to, `being handed ${role}`);
  }
  const added = view.access?.members ?? [];
  return [
    ...[...reasons].filter(([name]) => !added.includes(name)).map(([name, reason]) => ({ name, reason })),
    ...added.map((name) => ({ name, reason: reasons.get(name) ?? "added", added: true })),
  ];
}

/**
 * The section. `ctx.manage` says whether the signed-in person may change access (the commander or an admin, on an
 * open incident, with a write token).
 */
export function renderAccess(view, ctx) {
  const restricted = Boolean(view.access?.restricted);
  const members = membersOf(view);
  return h(
    "section",
    { id: "access", "aria-labelledby": "access-title", "data-restricted": String(restricted) },
    h("h2", { id: "access-title" }, "Who can see it"),
    h(
      "p",
      { class: "access-state", role: "status" },
      restricted
        ? "Restricted: only its members and admins can see this incident. Everyone else is told it does not exist."
        : "Open: everyone with a token can see this incident.",
    ),
    ctx.manage &&
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          "data-set-restricted": "",
          checked: restricted,
          onchange: (event) => ctx.change({ op: "setRestricted", restricted: event.target.checked }),
        }),
        " Restricted to its members",
      ),
    h(
      "ul",
      { class: "members", "aria-label": "Members" },
      members.map((member) =>
        h(
          "li",
          { "data-member": member.name },
          h("strong", {}, member.name),
          h("span", { class: "hint" }, ` (${member.reason}) `),
          ctx.manage &&
            member.added &&
            h(
              "button",
              {
                type: "button",
                "data-remove-member": member.name,
                "aria-label": `Remove ${member.name} from the members`,
                onclick: () => ctx.change({ op: "removeMember", person: member.name }),
              },
              "Remove",
            ),
        ),
      ),
    ),
    ctx.manage &&
      h(
        "form",
        {
          class: "add-member",
          onsubmit: (event) => {
            event.preventDefault();
            const input = event.target.elements.person;
            const person = input.value.trim();
            if (person && ctx.change({ op: "addMember", person })) input.value = "";
          },
        },
        h(
          "label",
          {},
          "Add a member ",
          h("input", { name: "person", list: "people", autocomplete: "off", "data-add-member": "" }),
        ),
        h("button", { type: "submit" }, "Add"),
      ),
  );
}
