/**
 * Small helpers every view shares: building elements, writing times the way incident responders read them (UTC,
 * minutes), and the one error banner at the top of the page.
 */

/** Properties that hold live state; set as attributes they would only change the default, not what is shown. */
const LIVE_PROPERTIES = new Set(["value", "checked", "indeterminate"]);

/**
 * Builds an element. `props`: `on<event>` adds a listener, `value`/`checked`/`indeterminate` set the property
 * (after the children, so a `<select>` already has its options), anything else is an attribute (`true` → present,
 * `null`/`false`/`undefined` → absent).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  el.append(...children.flat().filter((c) => c != null && c !== false));
  for (const [name, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (LIVE_PROPERTIES.has(name)) el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  return el;
}

const pad = (n) => String(n).padStart(2, "0");

/**
 * `04:07 UTC` for today, `2026-11-24 23:10 UTC` otherwise: responders across time zones compare UTC, and incidents
 * that run past midnight need the date to stay unambiguous.
 */
export function utcTime(iso, now = new Date()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const clock = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
  const day = d.toISOString().slice(0, 10);
  return day === now.toISOString().slice(0, 10) ? clock : `${day} ${clock}`;
}

/** A `<time>` element for `iso`, with the full instant available on hover and to assistive technology. */
export function timeEl(iso) {
  return h("time", { datetime: iso, title: iso }, utcTime(iso));
}

/** Hands `blob` to the browser as a download named `name` (exports, CSV rows, the audit log). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  h("a", { href: url, download: name }).click();
  // Browsers read the blob after `click` returns; give them ample time before letting it go.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

const banner = () => document.getElementById("banner");

/** Shows `message` in the banner; it stays until dismissed or the page changes, so nobody misses it. */
export function showMessage(message) {
  const el = banner();
  el.querySelector("p").textContent = message;
  el.hidden = false;
}

/**
 * Shows an error's message. A 401 is skipped: the API layer has already signed out and the sign-in page
 * explains why.
 */
export function showError(err) {
  if (err?.status === 401) return;
  showMessage(err instanceof Error ? err.message : String(err));
}

export function clearMessage() {
  banner().hidden = true;
}
