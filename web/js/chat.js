/**
 * The incident's chat channel (`#chat` on the incident page): the IRC or Slack channel bound to it (a link for
 * Slack), the newest lines of its log, polled every few seconds while the page is open, and for the commander (or
 * an admin) the form that binds a channel and the button that unbinds it. Binding goes over HTTP
 * (`PUT/DELETE /api/incidents/{id}/channel`), where the server keeps one open incident per channel. Lines are
 * people's text: they are rendered as text nodes only.
 */

import { h } from "./dom.js";
import { bindChannel, getChatLog, unbindChannel } from "./api.js";

/** How often the log is fetched again. */
const POLL_MS = 5000;

/** How many of the newest lines are shown. */
const SHOWN = 50;

/** Where a Slack channel opens. */
const slackLink = (id) => `https://slack.com/app_redirect?channel=${encodeURIComponent(id)}`;

function channelLine(channel) {
  if (!channel) return h("p", { class: "chat-channel", "data-channel": "" }, "No channel is bound.");
  if (channel.network === "slack") {
    return h(
      "p",
      { class: "chat-channel", "data-channel": channel.id ?? "" },
      "Slack: ",
      h("a", { href: slackLink(channel.id ?? ""), rel: "noopener noreferrer", target: "_blank" }, `#${channel.name}`),
    );
  }
  return h("p", { class: "chat-channel", "data-channel": channel.name }, `IRC: ${channel.name}`);
}

function bindForm(ctx) {
  return h(
    "form",
    {
      class: "bind-channel",
      onsubmit: (event) => {
        event.preventDefault();
        const form = event.target.elements;
        const body = { network: form.network.value, name: form.name.value.trim() };
        if (body.network === "slack") body.id = form.id.value.trim();
        ctx.bind(body);
      },
    },
    h(
      "label",
      {},
      "Network ",
      h("select", { name: "network" }, h("option", { value: "irc" }, "IRC"), h("option", { value: "slack" }, "Slack")),
    ),
    h("label", {}, " Channel ", h("input", { name: "name", required: true, placeholder: "#inc-465-checkout", "data-bind-name": "" })),
    h("label", {}, " Slack id ", h("input", { name: "id", placeholder: "C0123ABCD" })),
    h("button", { type: "submit", "data-bind-channel": "" }, "Bind"),
  );
}

/** The section for a log page `{channel, lines}`; `ctx.manage` says whether bind/unbind are offered. */
export function renderChat(page, ctx) {
  const lines = (page?.lines ?? []).slice(0, SHOWN).reverse();
  return h(
    "section",
    { id: "chat", "aria-labelledby": "chat-title" },
    h("h2", { id: "chat-title" }, "Command post channel"),
    channelLine(page?.channel),
    ctx.manage && page?.channel && h("button", { type: "button", "data-unbind-channel": "", onclick: () => ctx.unbind() }, "Unbind"),
    ctx.manage && !page?.channel && bindForm(ctx),
    lines.length > 0 &&
      h(
        "ol",
        { class: "chat-log", "aria-label": "Channel log, newest last" },
        lines.map((line) =>
          h(
            "li",
            { "data-line": String(line.id) },
            h("time", { datetime: line.at }, `${line.at.slice(11, 16)} `),
            h("strong", {}, line.person ?? line.speaker),
            `: ${line.text}`,
          ),
        ),
      ),
  );
}

/**
 * Keeps `section` (the page's `#chat`) current for incident `id` until `signal` aborts. `manage()` is read at each
 * render; `failed(error)` shows a refused bind or unbind.
 */
export function followChat(id, section, { manage, failed, signal }) {
  let page = null;
  let timer = null;
  const render = () => {
    const next = renderChat(page, {
      manage: manage(),
      bind: (body) => bindChannel(id, body).then(refresh, failed),
      unbind: () => unbindChannel(id).then(refresh, failed),
    });
    section.replaceChildren(...next.childNodes);
  };
  async function refresh() {
    try {
      page = await getChatLog(id);
      render();
    } catch {
      // The page's own sync shows the connection state; the log is tried again at the next poll.
    }
  }
  const poll = () => {
    refresh().finally(() => {
      if (!signal.aborted) timer = setTimeout(poll, POLL_MS);
    });
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  render();
  poll();
}
