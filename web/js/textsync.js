/**
 * Character-by-character editing of text and markdown fields and of checklist items' texts. Each `input` becomes
 * one splice of the model (never a whole-text replace, which would fight concurrent typists), and when other
 * people's edits land in the text being typed in, the caret follows its character instead of jumping.
 *
 * All offsets here are UTF-16 code units, as `<textarea>` reports them; `LiveIncident` converts them.
 */

const isHighSurrogate = (code) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code) => code >= 0xdc00 && code <= 0xdfff;

/**
 * The single splice `{pos, remove, insert}` that turns `before` into `after`, where the edit ended at `caret` in
 * `after` (the caret after an `input`). The common suffix may not reach left of the caret, so the splice sits where
 * the person typed even when the text around repeats: typing "a" before "abc" is an insertion before that "a", not
 * after it. That matters to the others: the model inserts after the character before the position, and a run of
 * typing stays together only if each key goes after the typist's own previous key. It never cuts a surrogate pair,
 * which the model would refuse: an edited emoji is replaced whole.
 */
function diffText(before, after, caret) {
  let end = 0;
  const suffixLimit = Math.min(before.length, after.length - caret);
  while (end < suffixLimit && before.charCodeAt(before.length - 1 - end) === after.charCodeAt(after.length - 1 - end)) {
    end++;
  }
  if (end > 0 && isLowSurrogate(before.charCodeAt(before.length - end))) end--;
  const prefixLimit = Math.min(before.length, after.length) - end;
  let start = 0;
  while (start < prefixLimit && before.charCodeAt(start) === after.charCodeAt(start)) start++;
  if (start > 0 && isHighSurrogate(before.charCodeAt(start - 1))) start--;
  return { pos: start, remove: before.length - start - end, insert: after.slice(start, after.length - end) };
}

/**
 * Compositions in progress, by textarea. While an IME composes, the textarea holds text the model has not seen
 * and must not be overwritten (that would cancel the composition), so remote text waits until it ends.
 */
const compositions = new WeakMap();

/**
 * Makes `textarea` (`data-input` = the text address: a field key, or `field/item` for a checklist item's text) edit
 * the model, with undo and redo of the person's own edits. `editor` is `{live, name(), changed(address),
 * refused(error)}`.
 */
export function wireTextarea(textarea, editor) {
  const field = textarea.dataset.input;
  const { live } = editor;

  // Remote edits that arrived during a composition moved the model under it: diff against what the textarea showed
  // when it began, and shift the splice by however far the composition's start has moved since.
  const shifted = (composition) => {
    const local = diffText(composition.before, textarea.value, textarea.selectionEnd);
    const pos = live.cursorPosition(field, composition.anchor) + Math.max(0, local.pos - composition.start);
    return { ...local, pos };
  };

  const commit = () => {
    const composition = compositions.get(textarea);
    compositions.delete(textarea);
    const stale = composition?.stale ?? false;
    const splice = stale ? shifted(composition) : diffText(live.text(field), textarea.value, textarea.selectionEnd);
    const edited = splice.remove > 0 || splice.insert !== "";
    if (edited) {
      try {
        live.spliceTextUtf16(field, splice.pos, splice.remove, splice.insert, editor.name(), Date.now());
      } catch (error) {
        textarea.value = live.text(field);
        editor.refused(error);
        return;
      }
    }
    if (stale) {
      const caret = splice.pos + splice.insert.length;
      textarea.value = live.text(field);
      textarea.setSelectionRange(caret, caret);
    }
    if (edited) editor.changed(field);
  };

  // Undo and redo are the model's (`LiveIncident.undo`): the textarea's own stack is emptied whenever remote text
  // is set into it, and would undo other people's typing. Shortcuts and the browser's Edit menu both end here.
  const history = (which) => {
    let caret;
    try {
      caret = which === "undo" ? live.undo(field, editor.name(), Date.now()) : live.redo(field, editor.name(), Date.now());
    } catch (error) {
      textarea.value = live.text(field);
      editor.refused(error);
      return;
    }
    if (caret === undefined) return;
    textarea.value = live.text(field);
    textarea.setSelectionRange(caret, caret);
    editor.changed(field);
  };
  textarea.addEventListener("keydown", (event) => {
    if (event.isComposing || event.altKey || !(event.ctrlKey || event.metaKey)) return;
    const key = event.key.toLowerCase();
    const which = key === "z" ? (event.shiftKey ? "redo" : "undo") : key === "y" && !event.shiftKey ? "redo" : null;
    if (!which) return;
    event.preventDefault();
    history(which);
  });
  textarea.addEventListener("beforeinput", (event) => {
    const which = { historyUndo: "undo", historyRedo: "redo" }[event.inputType];
    if (!which) return;
    event.preventDefault();
    history(which);
  });

  textarea.addEventListener("compositionstart", () => {
    const start = textarea.selectionStart;
    compositions.set(textarea, {
      before: textarea.value,
      start,
      anchor: live.cursor(field, start),
      stale: false,
    });
  });
  textarea.addEventListener("compositionend", commit);
  textarea.addEventListener("input", (event) => {
    if (!event.isComposing && !compositions.has(textarea)) commit();
  });
}

/**
 * Before `receive`: anchors the focused textarea's selection to its characters, so `restoreCaret` can put it back
 * wherever concurrent edits move them. Null when no field editor has focus.
 */
export function captureCaret(live, element) {
  const field = element?.matches?.("textarea[data-input]") ? element.dataset.input : null;
  if (!field) return null;
  if (compositions.has(element)) return { textarea: element, field };
  return {
    textarea: element,
    field,
    // A selection's start sticks to its first character, so text others type at either end stays outside it.
    start: live.cursor(field, element.selectionStart, element.selectionStart !== element.selectionEnd),
    end: live.cursor(field, element.selectionEnd),
    direction: element.selectionDirection,
  };
}

/** After `receive` changed `caret.field`: shows the model's text and puts the selection back on its characters. */
export function restoreCaret(live, caret) {
  const composition = compositions.get(caret.textarea);
  if (composition) {
    composition.stale = true;
    return;
  }
  const text = live.text(caret.field);
  if (caret.textarea.value === text) return;
  caret.textarea.value = text;
  caret.textarea.setSelectionRange(
    live.cursorPosition(caret.field, caret.start),
    live.cursorPosition(caret.field, caret.end),
    caret.direction,
  );
}
