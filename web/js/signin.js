/**
 * Signing in (`#/sign-in`): with the single sign-on provider when the server has one ("Sign in with …", which
 * comes back to `#/signed-in`), or with an API token, for bots, scripts and servers without single sign-on. The
 * token is checked against `GET /api/session` before it is kept, so a typo is caught here rather than as a page
 * that silently never syncs. A sign-in link opened while someone else is signed in asks first (`#/switch`).
 */

import { fetchSession, sessionOf, ssoProvider } from "./api.js";
import {
  pendingSwitch,
  session,
  settleSwitch,
  signIn,
  signInWithSession,
  signOut,
  takeSignOutReason,
  token,
} from "./auth.js";
import { h, showError } from "./dom.js";

export function showSignIn(main) {
  const reason = takeSignOutReason();
  const error = h("p", { class: "form-error", role: "alert", hidden: !reason }, reason ?? "");
  const input = h("input", {
    type: "password",
    name: "token",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
  });
  const form = h(
    "form",
    {
      class: "sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        signIn(input.value.trim());
        try {
          await fetchSession();
          location.hash = "#/";
        } catch (err) {
          signOut();
          takeSignOutReason();
          error.textContent = err.message;
          error.hidden = false;
        }
      },
    },
    h("label", {}, "API token", input),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  main.replaceChildren(
    h("h1", {}, "Sign in"),
    h(
      "p",
      {},
      "Open the link the server printed (it ends in ",
      h("code", {}, "#token=…"),
      "), or paste a token here. An admin creates one with ",
      h("code", {}, "commandpost token create --name you --scope write"),
      ".",
    ),
    error,
    form,
  );
  input.focus();
  ssoProvider().then((provider) => {
    if (!provider || !main.contains(form)) return;
    // Back to `#/signed-in`, which learns who the cookie's session is.
    const login = `${provider.login}?next=${encodeURIComponent("/#/signed-in")}`;
    main.querySelector("h1").after(
      h(
        "p",
        { class: "sso" },
        h("a", { id: "sso-sign-in", class: "button primary", href: login }, `Sign in with ${provider.name}`),
      ),
      h("p", {}, "Bots and scripts sign in with an API token instead:"),
    );
  });
}

/**
 * `#/signed-in`: where single sign-on lands. The browser now holds the session cookie; asking who it is signs the
 * page in (a refused or expired session goes back to the sign-in page with the server's reason).
 */
export async function showSignedIn(main) {
  main.replaceChildren(h("p", { class: "loading" }, "Signing in…"));
  signInWithSession();
  try {
    await fetchSession();
    location.replace("#/");
  } catch (error) {
    showError(error);
  }
}

/** `name (scope)`, as the header shows who is signed in. */
const who = (s) => `${s.name} (${s.scope})`;

/**
 * `#/switch`: a sign-in link (`#token=…`) was opened while another token is signed in. A link for the same
 * identity (a new token of the same name) switches without asking; another identity is named beside the current
 * one and switches only when the person says so; a link whose token the server does not know changes nothing.
 */
export async function showSwitch(main, _route, signal) {
  const linked = pendingSwitch();
  if (!linked) {
    location.replace("#/");
    return;
  }
  main.replaceChildren(h("p", { class: "loading" }, "Checking the sign-in link…"));
  let theirs;
  let mine;
  try {
    // Asked without side effects: a revoked current token means nobody is signed in, not a trip to sign-in that
    // would lose the link. When only the current one cannot be checked, the cached session stands in.
    // Signed in through single sign-on, there is no token to ask about: the cached session is who it is.
    const current = token();
    [theirs, mine] = await Promise.all([
      sessionOf(linked),
      current ? sessionOf(current).catch(() => session()) : session(),
    ]);
  } catch (error) {
    if (signal.aborted) return;
    settleSwitch(false);
    showError(error);
    location.replace("#/");
    return;
  }
  if (signal.aborted) return;
  const done = (accept) => {
    settleSwitch(accept);
    location.hash = "#/";
  };
  if (!theirs) {
    settleSwitch(false);
    main.replaceChildren(
      h("h1", {}, "Sign-in link not valid"),
      h(
        "p",
        { id: "switch-invalid" },
        "The server does not know this link's token (revoked or mistyped). ",
        mine ? `You are still signed in as ${who(mine)}.` : "",
      ),
      h("p", {}, h("a", { class: "button", href: "#/" }, "Continue")),
    );
    return;
  }
  if (!mine || mine.name === theirs.name) {
    done(true);
    return;
  }
  main.replaceChildren(
    h("h1", {}, "Switch identity?"),
    h(
      "p",
      { id: "switch-question" },
      "This link signs you in as ",
      h("strong", { id: "switch-to" }, who(theirs)),
      ". You are signed in as ",
      h("strong", { id: "switch-from" }, who(mine)),
      ". Everything you do here is recorded under the name you are signed in with.",
    ),
    h(
      "p",
      { class: "actions" },
      h(
        "button",
        { type: "button", id: "switch-accept", class: "primary", onclick: () => done(true) },
        `Sign in as ${theirs.name}`,
      ),
      " ",
      h("button", { type: "button", id: "switch-stay", onclick: () => done(false) }, `Stay ${mine.name}`),
    ),
  );
}
