/**
 * Hash routing: `#/path?query` picks a view. Each view gets an AbortSignal that fires when the page moves on, so
 * a view with sockets and timers (the incident page) can stop them, and a slow view does not paint over the next.
 */

import { clearMessage, showError } from "./dom.js";

/** `#/incidents/abc?x=1` → `{path: "/incidents/abc", query: URLSearchParams}`; an empty hash is `/`. */
function parse(hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const split = raw.indexOf("?");
  return split < 0
    ? { path: raw, query: new URLSearchParams() }
    : { path: raw.slice(0, split), query: new URLSearchParams(raw.slice(split + 1)) };
}

/**
 * Shows the view for the current hash in `main`, now and on every hash change. `routes` is `[[RegExp, view]]`, a
 * view being `(main, {id, query}, signal)` with `id` the pattern's first group. `redirect()` runs first and may
 * return another hash to go to instead (signing in); unknown paths go to the list.
 */
export function startRouter(main, routes, redirect) {
  let current = null;
  const show = () => {
    current?.abort();
    current = new AbortController();
    const target = redirect();
    if (target) {
      location.replace(target);
      return;
    }
    const { path, query } = parse(location.hash);
    const route = routes.find(([pattern]) => pattern.test(path));
    if (!route) {
      location.replace("#/");
      return;
    }
    const [pattern, view] = route;
    const id = pattern.exec(path)[1];
    clearMessage();
    document.title = "commandpost";
    for (const link of document.querySelectorAll("nav a")) {
      link.toggleAttribute("aria-current", link.getAttribute("href") === `#${path}`);
    }
    Promise.resolve(view(main, { id: id && decodeURIComponent(id), query }, current.signal)).catch(showError);
  };
  window.addEventListener("hashchange", () => {
    show();
    // Screen readers and keyboards start again at the top of the new view.
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  });
  show();
}
