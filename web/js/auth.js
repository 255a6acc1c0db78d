/**
 * Who is signed in: the API token and the session it belongs to, both kept in localStorage so that a reload (even
 * with the server down) still knows the editor's name for stamps and presence. Signed in through single sign-on,
 * the page holds no token at all: the server's HttpOnly cookie carries the session, and localStorage only marks
 * that the page is signed in that way (and caches who it is, as for a token).
 */

const TOKEN_KEY = "commandpost.token";
const SESSION_KEY = "commandpost.session";
const SSO_KEY = "commandpost.sso";

/** Why the last sign-out happened, for the sign-in page to explain; only this page load needs it. */
let signOutReason = null;

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function signIn(newToken) {
  localStorage.setItem(TOKEN_KEY, newToken);
  localStorage.removeItem(SESSION_KEY);
  localStorage.removeItem(SSO_KEY);
}

/** Marks the page as signed in by the single sign-on session the server's cookie carries. */
export function signInWithSession() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(SESSION_KEY);
  localStorage.setItem(SSO_KEY, "1");
}

/** Whether anyone is signed in: a token, or a single sign-on session. */
export const signedIn = () => Boolean(token()) || viaSession();

/** Whether the page is signed in by a single sign-on session (the cookie) rather than a token. */
export const viaSession = () => !token() && localStorage.getItem(SSO_KEY) === "1";

export function signOut(reason = null) {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(SESSION_KEY);
  localStorage.removeItem(SSO_KEY);
  signOutReason = reason;
}

/** The reason given to the last `signOut`, once: shown, it should not be shown again. */
export function takeSignOutReason() {
  const reason = signOutReason;
  signOutReason = null;
  return reason;
}

/**
 * Calls `changed()` when another tab of this browser signs out or signs in as someone else: localStorage is shared
 * by the tabs, so this tab's identity has just changed under it.
 */
export function onIdentityChange(changed) {
  window.addEventListener("storage", (event) => {
    // `key` is null when the whole storage was cleared.
    if (event.key === null || event.key === TOKEN_KEY || event.key === SSO_KEY) changed();
  });
}

/** The cached `{name, scope}` from `GET /api/session`, or null before the first answer. */
export function session() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

export function rememberSession(value) {
  localStorage.setItem(SESSION_KEY, JSON.stringify({ name: value.name, scope: value.scope }));
}

/** Whether the session may declare and edit (scopes are ordered read < write < admin). */
export function canWrite() {
  const scope = session()?.scope;
  return scope === "write" || scope === "admin";
}

/** Whether the session is an administrator's, who may override command and reopen a closed incident over HTTP. */
export const isAdmin = () => session()?.scope === "admin";

/** A sign-in link's token waiting for the person to confirm the switch (`#/switch`); in memory only. */
let pendingToken = null;

/**
 * Takes a token from an address like `/#token=…` (the link the server prints) and removes it from the address bar
 * and history at once, so it is neither bookmarked nor shown over someone's shoulder. With nobody signed in, or
 * the same token, it signs in as before and returns null; when another token is signed in, it keeps the link's
 * token aside and returns `#/switch`, whose page asks before switching: a link must not silently change who the
 * page acts as. Returns null too when the address has no token.
 */
export function takeTokenFromAddress() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  const linked = decodeURIComponent(match[1]);
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  const current = token();
  if (current && current !== linked) {
    pendingToken = linked;
    return "#/switch";
  }
  if (!current) signIn(linked);
  return null;
}

/** The sign-in link's token waiting for confirmation, if any. */
export function pendingSwitch() {
  return pendingToken;
}

/** Ends the wait: signs in with the link's token when `accept`, else forgets it. */
export function settleSwitch(accept) {
  if (accept && pendingToken) signIn(pendingToken);
  pendingToken = null;
}
