/**
 * Replacing rendered sections without disturbing whoever is typing. A freshly rendered section replaces the old
 * one, except along the path to the focused control: that control and its ancestors stay in the document (moving a
 * focused element blurs it, closes an open `<select>` and loses a half-typed draft), and only what surrounds them
 * is swapped.
 */

/** What identifies a control across renders: its tag and data attributes (field, item, role, stage…). */
const identity = (el) => `${el.tagName}${JSON.stringify({ ...el.dataset })}${el.id}`;

function copyAttributes(kept, fresh) {
  for (const { name } of [...kept.attributes]) if (!fresh.hasAttribute(name)) kept.removeAttribute(name);
  for (const { name, value } of [...fresh.attributes]) kept.setAttribute(name, value);
}

/** Carries the model's state from `fresh` onto the kept control, but never overwrites text being typed. */
function adoptState(kept, fresh) {
  copyAttributes(kept, fresh);
  if (kept.type === "checkbox") {
    kept.checked = fresh.checked;
    kept.indeterminate = fresh.indeterminate;
  } else if (kept.tagName === "SELECT") {
    // Read before the options move: a `<select>` without options has the value "".
    const { value } = fresh;
    kept.replaceChildren(...fresh.children);
    kept.value = value;
  } else if (kept.tagName === "BUTTON") {
    kept.textContent = fresh.textContent;
  }
}

/** The chain from `node` up to (and including) `root`. */
function pathUp(node, root) {
  const path = [node];
  while (node !== root) {
    node = node.parentElement;
    path.push(node);
  }
  return path;
}

/**
 * Makes `old` (in the document) show `fresh`. When `old` holds the focused element and `fresh` has its twin with
 * the same nesting, the focused element and its ancestors are kept and updated in place; otherwise `old` is
 * simply replaced. Returns the element now in the document.
 */
export function patch(old, fresh) {
  const focused = document.activeElement;
  const twin =
    old.contains(focused) && focused !== old
      ? [...fresh.querySelectorAll(focused.tagName)].find((el) => identity(el) === identity(focused))
      : null;
  const keptPath = twin ? pathUp(focused, old) : [];
  const freshPath = twin ? pathUp(twin, fresh) : [];
  if (!twin || keptPath.length !== freshPath.length) {
    old.replaceWith(fresh);
    return fresh;
  }
  adoptState(focused, twin);
  // From the section down to the focused control's parent: swap every sibling of the kept child for its fresh
  // counterparts, in order, leaving the kept child where it is.
  for (let level = keptPath.length - 1; level > 0; level--) {
    const keptParent = keptPath[level];
    const keptChild = keptPath[level - 1];
    const freshParent = freshPath[level];
    const freshChild = freshPath[level - 1];
    const freshSiblings = [...freshParent.childNodes];
    const split = freshSiblings.indexOf(freshChild);
    for (const node of [...keptParent.childNodes]) if (node !== keptChild) node.remove();
    keptChild.before(...freshSiblings.slice(0, split));
    keptChild.after(...freshSiblings.slice(split + 1));
    copyAttributes(keptParent, freshParent);
  }
  return old;
}

/**
 * Puts `container`'s children in the order of `wanted` (all already children). The section holding focus is the
 * anchor: the others are moved around it, so focus is never lost to a reorder (a pin, a remote pin).
 */
export function arrange(container, wanted) {
  if (wanted.every((el, i) => container.children[i] === el)) return;
  const anchorIndex = wanted.findIndex((el) => el.contains(document.activeElement));
  if (anchorIndex < 0) {
    container.append(...wanted);
    return;
  }
  const anchor = wanted[anchorIndex];
  anchor.before(...wanted.slice(0, anchorIndex));
  anchor.after(...wanted.slice(anchorIndex + 1));
}
