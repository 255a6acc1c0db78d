/**
 * Other people's carets and selections inside text fields, drawn over each textarea in the person's colour with
 * their name. Presence carries each caret as a `LiveIncident.cursor` (anchored to the character before it), so
 * it follows the text as anyone types: every render resolves it again against the current text.
 *
 * A textarea cannot style parts of its text, so the overlay measures where an offset falls with a hidden mirror
 * of the textarea (same box, font and wrapping) and places absolutely positioned marks there.
 */

import { h } from "./dom.js";

/** How many presence colours `app.css` defines (`.presence-c0` … `.presence-c7`). */
const COLOURS = 8;

/** The colour class of a person: the same name gets the same colour on every page. */
export function colourClass(name) {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
  return `presence-c${hash % COLOURS}`;
}

/** The computed styles that decide where a textarea's text wraps and each character lands. */
const LAYOUT = [
  "boxSizing",
  "width",
  "paddingTop",
  "paddingRight",
  "paddingBottom",
  "paddingLeft",
  "borderTopWidth",
  "borderRightWidth",
  "borderBottomWidth",
  "borderLeftWidth",
  "borderStyle",
  "fontFamily",
  "fontSize",
  "fontWeight",
  "fontStyle",
  "letterSpacing",
  "lineHeight",
  "tabSize",
  "textTransform",
  "wordSpacing",
  "textIndent",
];

/**
 * Where `[from, to)` and the caret at `head` fall in `textarea`, relative to its box: `{caret: {left, top,
 * height}, rects: [{left, top, width, height}]}` (no rects for a bare caret).
 */
function measure(textarea, overlay, head, from, to) {
  const text = textarea.value;
  const computed = getComputedStyle(textarea);
  const marker = h("span", {}, "\u200b");
  const selected = h("span", {}, text.slice(from, to));
  const mirror = h(
    "div",
    { class: "caret-mirror" },
    text.slice(0, from),
    head === from ? marker : null,
    selected,
    head === from ? null : marker,
    text.slice(to),
  );
  for (const property of LAYOUT) mirror.style[property] = computed[property];
  overlay.append(mirror);
  const origin = mirror.getBoundingClientRect();
  const dx = textarea.scrollLeft;
  const dy = textarea.scrollTop;
  const box = (r) => ({ left: r.left - origin.left - dx, top: r.top - origin.top - dy, width: r.width, height: r.height });
  const caret = box(marker.getBoundingClientRect());
  const rects = from === to ? [] : [...selected.getClientRects()].map(box);
  mirror.remove();
  return { caret, rects };
}

const place = (el, { left, top, width, height }) => {
  el.style.left = `${left}px`;
  el.style.top = `${top}px`;
  if (width !== undefined) el.style.width = `${width}px`;
  el.style.height = `${height}px`;
  return el;
};

/** The marks of one peer's caret (and selection) in `textarea`. */
function marks(textarea, overlay, peer, head, anchor) {
  const colour = colourClass(peer.name);
  const from = Math.min(head, anchor);
  const to = Math.max(head, anchor);
  const { caret, rects } = measure(textarea, overlay, head, from, to);
  const selection = rects.map((rect) => place(h("div", { class: `remote-selection ${colour}` }), rect));
  const mark = h(
    "div",
    { class: `remote-caret ${colour}`, "data-peer": peer.peer, "data-name": peer.name, "data-pos": head },
    h("span", { class: "remote-caret-name" }, peer.name),
  );
  return [...selection, place(mark, { left: caret.left, top: caret.top, height: caret.height })];
}

/**
 * Redraws every text field's overlay (`.remote-carets`, inside `fields`) from `peers` (`presenceJson`). A caret
 * whose cursor this replica cannot resolve yet (its characters have not arrived) is left out until they have.
 */
export function renderCarets(fields, peers, live) {
  for (const overlay of fields.querySelectorAll(".remote-carets")) {
    const textarea = overlay.parentElement.querySelector("textarea[data-input]");
    const field = textarea.dataset.input;
    const shown = [];
    for (const peer of peers) {
      if (peer.field !== field || !peer.caret) continue;
      let head;
      let anchor;
      try {
        head = live.cursorPosition(field, peer.caret);
        anchor = peer.anchor ? live.cursorPosition(field, peer.anchor) : head;
      } catch {
        continue;
      }
      // The focused textarea may hold a composition the model has not taken yet; never measure past its text.
      const end = textarea.value.length;
      shown.push(...marks(textarea, overlay, peer, Math.min(head, end), Math.min(anchor, end)));
    }
    overlay.replaceChildren(...shown);
  }
}
