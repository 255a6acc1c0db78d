/**
 * Signing in with an API token (`#/sign-in`). The token is checked against `GET /api/session` before it is kept,
 * so a typo is caught here rather than as a page that silently never syncs.
 */

import { fetchSession } from "./api.js";
import { signIn, signOut, takeSignOutReason } from "./auth.js";
import { h } from "./dom.js";

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
}
