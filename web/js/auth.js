/**
 * Who is signed in: the API token and the session it belongs to, both kept in localStorage so that a reload (even
 * with the server down) still knows the editor's name for stamps and presence.
 */

const TOKEN_KEY = "commandpost.token";
const SESSION_KEY = "commandpost.session";

/** Why the last sign-out happened, for the sign-in page to explain; only this page load needs it. */
let signOutReason = null;

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function signIn(newToken) {
  localStorage.setItem(TOKEN_KEY, newToken);
  localStorage.removeItem(SESSION_KEY);
}

export function signOut(reason = null) {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(SESSION_KEY);
  signOutReason = reason;
}

/** The reason given to the last `signOut`, once: shown, it should not be shown again. */
export function takeSignOutReason() {
  const reason = signOutReason;
  signOutReason = null;
  return reason;
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

/**
 * Takes a token from an address like `/#token=…` (the link the server prints), stores it and removes it from the
 * address bar and history, so it is neither bookmarked nor shown over someone's shoulder. Returns whether it did.
 */
export function takeTokenFromAddress() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return false;
  signIn(decodeURIComponent(match[1]));
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  return true;
}
