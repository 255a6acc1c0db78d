/**
 * commandpost's service worker: keeps the app shell (page, styles, modules, the WebAssembly client) so that a
 * reload while the server is unreachable still opens, and the incident page renders from IndexedDB.
 *
 * Network first: a reachable server always serves the current shell (no stale UI after an upgrade), and the cache
 * answers only when the network fails. The API and sync are never cached: their answers are live state, and a
 * stale one would lie.
 */

const CACHE = "commandpost-shell-v1";

/** Everything the page loads: index.html, the styles, every module of js/, and the built client. */
const SHELL = [
  "/",
  "/app.css",
  "/js/access.js",
  "/js/chat.js",
  "/js/checkins.js",
  "/js/api.js",
  "/js/app.js",
  "/js/audit.js",
  "/js/auth.js",
  "/js/carets.js",
  "/js/declare.js",
  "/js/deviations.js",
  "/js/dom.js",
  "/js/fields.js",
  "/js/incident.js",
  "/js/insights.js",
  "/js/list.js",
  "/js/mail.js",
  "/js/model.js",
  "/js/patch.js",
  "/js/presence.js",
  "/js/replay.js",
  "/js/router.js",
  "/js/sessions.js",
  "/js/signin.js",
  "/js/store.js",
  "/js/sync.js",
  "/js/templates.js",
  "/js/textsync.js",
  "/pkg/client_wasm.js",
  "/pkg/client_wasm_bg.wasm",
];

const SHELL_PATHS = new Set(SHELL);

self.addEventListener("install", (event) => {
  // Each file on its own: one missing file (say, a server built without the WebAssembly client) must not leave
  // the rest uncached.
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => Promise.allSettled(SHELL.map((path) => cache.add(new Request(path, { cache: "reload" })))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(key);
    if (cached) return cached;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  // Keyed by path: the page's routes live in the hash, so "/?anything" is still the one page.
  if (request.method === "GET" && url.origin === self.location.origin && SHELL_PATHS.has(url.pathname)) {
    event.respondWith(networkFirst(request, url.pathname));
  }
});
