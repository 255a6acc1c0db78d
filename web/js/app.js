/**
 * The page's entry point: takes a token from the address, keeps the header's "signed in as" current, registers the
 * service worker, and routes between the views.
 */

import { endSession, fetchSession } from "./api.js";
import { showAudit } from "./audit.js";
import { showPerson } from "./checkins.js";
import {
  canWrite,
  isAdmin,
  onIdentityChange,
  session,
  signedIn,
  signOut,
  takeTokenFromAddress,
  viaSession,
} from "./auth.js";
import { clearMessage } from "./dom.js";
import { showDeclare } from "./declare.js";
import { showIncident } from "./incident.js";
import { showList } from "./list.js";
import { startRouter } from "./router.js";
import { showInsights } from "./insights.js";
import { showSignedIn, showSignIn, showSwitch } from "./signin.js";
import { showSessions } from "./sessions.js";
import { showTemplates } from "./templates.js";

const ROUTES = [
  [/^\/$/, showList],
  [/^\/declare$/, showDeclare],
  [/^\/incidents\/([^/?]+)$/, showIncident],
  [/^\/insights$/, showInsights],
  [/^\/people\/([^/?]+)$/, showPerson],
  [/^\/templates$/, showTemplates],
  [/^\/audit$/, showAudit],
  [/^\/sessions$/, showSessions],
  [/^\/sign-in$/, showSignIn],
  [/^\/signed-in$/, showSignedIn],
  [/^\/switch$/, showSwitch],
];

function showWho() {
  const who = session();
  document.getElementById("who-name").textContent = who ? `${who.name} (${who.scope})` : "";
  document.getElementById("sign-out").hidden = !signedIn();
  // Declaring needs a write token; the session may arrive after the view that offers it was drawn.
  for (const el of document.querySelectorAll("[data-needs-write]")) el.hidden = !canWrite();
  for (const el of document.querySelectorAll("[data-needs-admin]")) el.hidden = !isAdmin();
}

/** Refreshes the cached session; offline, the cached one stands (the incident page needs only the name). */
async function refreshSession() {
  if (!signedIn()) return;
  try {
    await fetchSession();
  } catch {
    // A 401 has signed out and gone to the sign-in page; anything else leaves the cache as it was.
  }
  showWho();
}

/**
 * Runs before every view: signs in from `#token=…` (or, when someone else is signed in, goes to the page that asks
 * first), re-checks the session (so a revoked token is noticed on the next click), and sends everyone without a
 * token to the sign-in page.
 */
function redirect() {
  const asking = takeTokenFromAddress();
  if (asking) return asking;
  refreshSession();
  showWho();
  const signingIn = location.hash.startsWith("#/sign-in") || location.hash.startsWith("#/signed-in");
  if (!signedIn() && !signingIn) return "#/sign-in";
  return null;
}

document.getElementById("sign-out").addEventListener("click", async () => {
  // A single sign-on session ends on the server too (the cookie is cleared); offline, it ends here and expires
  // there.
  if (viaSession()) await endSession().catch(() => {});
  signOut();
  location.hash = "#/sign-in";
});
document.querySelector("#banner button").addEventListener("click", clearMessage);
// Whatever brings an element into view (a jump, Tab, find in page) leaves it below the bar that sticks to the top.
const sticky = document.querySelector(".top-sticky");
new ResizeObserver(() =>
  document.documentElement.style.setProperty("--sticky-height", `${sticky.offsetHeight}px`),
).observe(sticky);
// Another tab signed out (or in as someone else): this one must not go on acting as someone it no longer is. A new
// identity starts the page afresh, as signing in here does.
onIdentityChange(() => {
  if (signedIn()) location.reload();
  else location.hash = "#/sign-in";
});

// Service workers need a secure context (https or localhost); without one the page simply works online only.
navigator.serviceWorker?.register("/sw.js").catch(() => {});

startRouter(document.getElementById("main"), ROUTES, redirect);
