/**
 * Who else has the incident open and what they are editing: the `#presence` list, and a badge on each field
 * someone else is editing, so two people do not rewrite the same status at once without knowing; inside text fields,
 * their carets (carets.js).
 */

import { flagOf } from "./checkins.js";
import { h } from "./dom.js";
import { fieldByKey, fieldOf, rolesHeldBy, rolesOf } from "./model.js";

/**
 * `{name, role, field, caret?, anchor?}` as `setPresence` takes it: the field being edited is the section holding
 * focus; in a text (a field's or a checklist item's), its text address and the caret and the selection's other end
 * as `live.cursor`s of that text, so others see them follow it.
 */
export function myPresence(name, role, live) {
  const active = document.activeElement;
  const section = active?.closest?.("section[data-field]");
  const presence = { name, role, field: section?.dataset.field ?? null };
  if (active?.matches?.("textarea[data-input]")) {
    presence.field = active.dataset.input;
    const { selectionStart, selectionEnd, selectionDirection } = active;
    const [anchor, head] = selectionDirection === "backward" ? [selectionEnd, selectionStart] : [selectionStart, selectionEnd];
    try {
      presence.caret = live.cursor(active.dataset.input, head, head < anchor);
      if (anchor !== head) presence.anchor = live.cursor(active.dataset.input, anchor, anchor < head);
    } catch {
      // A composition in progress holds text the model has not taken yet: the caret is sent once it has.
    }
  }
  return presence;
}

const describe = (peer, view) => {
  // The roles shown are those the document gives the peer's name (bound to its token by the server), not the
  // `role` it claims about itself: anyone could claim to command.
  const held = view ? rolesHeldBy(rolesOf(view), peer.name) : null;
  const role = held ? ` (${held})` : "";
  const field = peer.field && view ? fieldByKey(view, fieldOf(peer.field)) : null;
  return `${peer.name}${role}${flagOf(view, peer.name)}${field ? ` — editing ${field.label}` : ""}`;
};

/**
 * Fills `list` with one `li[data-peer]` per other viewer and sets the editing badges of `fields`' sections. `view`
 * names the fields; null before the document has arrived.
 */
export function renderPresence(list, fields, peers, view) {
  list.replaceChildren(...peers.map((peer) => h("li", { "data-peer": peer.peer }, describe(peer, view))));
  for (const section of fields.querySelectorAll("section[data-field]")) {
    const editors = peers.filter((p) => p.field && fieldOf(p.field) === section.dataset.field).map((p) => p.name);
    const badge = section.querySelector(".editing");
    badge.textContent = editors.length ? `${editors.join(", ")} ${editors.length > 1 ? "are" : "is"} editing` : "";
    badge.hidden = editors.length === 0;
  }
}
