/**
 * The commander's check-ins on the incident page (where the template turned them on): the help flags raised, as a
 * banner everyone sees at once (the commander may clear one), the reader's own "I need help" / "I am overloaded"
 * buttons, and, for the commander, the prompt "reconsider the options" with a one-line answer (standing out once
 * due; answering early resets the interval too).
 * Both are the server's to record (root keys `checkins` and `help`), so they go over HTTP; the change comes back by
 * sync. Also the role rotation's suggestion of who has not commanded recently among the people present, and the
 * per-person role history (`#/people/<name>`).
 */

import { applyOperations, getPersonRoles, getRotation } from "./api.js";
import { canWrite } from "./auth.js";
import { h, showError, utcTime } from "./dom.js";
import { roleLabel } from "./model.js";

const HELP_TEXT = { help: "needs help", overloaded: "is overloaded" };

/** The flags raised now: `[[person, state]]`. */
export const raisedFlags = (view) =>
  Object.entries(view?.checkins?.help ?? {})
    .filter(([, flag]) => flag.state)
    .map(([person, flag]) => [person, flag.state]);

/** What presence says beside a person whose flag is raised, or "". */
export const flagOf = (view, name) => {
  const state = view?.checkins?.help?.[name]?.state;
  return state ? ` — ${HELP_TEXT[state]}` : "";
};

/**
 * Fills `el` with the check-ins for `me` (`command` from `commandOf`), redrawing only when what it shows changed so
 * that an answer being typed survives ticks and remote edits.
 */
export function renderCheckins(el, id, view, command, now = Date.now()) {
  const checkins = view.checkins;
  const me = command.name;
  // A closed incident is an archive, and a read token edits nothing: no buttons that could only be refused.
  const acting = canWrite() && view.status !== "closed";
  const commands = acting && command.commander === me;
  const prompt = Boolean(checkins?.reconsiderDueAt) && commands;
  const due = prompt && Date.parse(checkins.reconsiderDueAt) <= now;
  const shape = JSON.stringify([checkins?.help, checkins?.helpFlag, prompt, due, checkins?.reconsiderations, me, acting]);
  if (el.dataset.shape === shape) return;
  el.dataset.shape = shape;
  const send = (op) => applyOperations(id, [op]).catch(showError);
  const parts = [];
  const raised = raisedFlags(view);
  if (raised.length) {
    parts.push(
      h(
        "ul",
        { class: "help-flags", role: "alert", "aria-label": "Help flags" },
        raised.map(([person, state]) =>
          h(
            "li",
            { "data-help": person },
            h("strong", {}, `${person} ${HELP_TEXT[state]}`),
            (commands || (acting && person === me)) &&
              h(
                "button",
                { type: "button", "data-clear-help": person, onclick: () => send({ op: "setHelp", state: null, person }) },
                person === me ? "Clear my flag" : "Dealt with: clear",
              ),
          ),
        ),
      ),
    );
  }
  if (checkins?.helpFlag && me && acting) {
    const mine = checkins.help?.[me]?.state;
    parts.push(
      h(
        "p",
        { class: "my-help", role: "group", "aria-label": "Ask for help" },
        ["help", "overloaded"].map((state) =>
          h(
            "button",
            {
              type: "button",
              "data-set-help": state,
              "aria-pressed": String(mine === state),
              onclick: () => send({ op: "setHelp", state }),
            },
            state === "help" ? "I need help" : "I am overloaded",
          ),
        ),
      ),
    );
  }
  // The commander may reconsider at any time; once due, the prompt stands out until answered.
  if (prompt) {
    const input = h("input", {
      type: "text",
      name: "note",
      required: true,
      maxlength: 200,
      "aria-label": "Is the current approach still right?",
      placeholder: "One line for the timeline",
    });
    parts.push(
      h(
        "form",
        {
          class: due ? "reconsider due" : "reconsider",
          "data-due": String(due),
          onsubmit: (event) => {
            event.preventDefault();
            const note = input.value.trim();
            if (note) send({ op: "reconsider", note });
          },
        },
        h(
          due ? "strong" : "span",
          {},
          `${due ? "Due: r" : "R"}econsider the options: is the current approach still right?`,
        ),
        " ",
        input,
        h("button", { type: "submit" }, "Answer"),
      ),
    );
  }
  el.replaceChildren(...parts);
  el.hidden = parts.length === 0;
}

/** A person's name as a link to their role history. */
export const personLink = (name) => h("a", { href: `#/people/${encodeURIComponent(name)}` }, name);

/**
 * Fills `el` with the suggestion for command among `present` (all connected people when empty): who has not
 * commanded recently, with the reason.
 */
export async function showRotation(el, present) {
  try {
    const { candidates } = await getRotation(present);
    const first = candidates[0];
    el.replaceChildren(
      ...(first
        ? [
            h("strong", {}, "Rotation: "),
            personLink(first.person),
            ` ${first.reason}.`,
            candidates.length > 1 &&
              h("span", { class: "prompt" }, ` Then: ${candidates.slice(1, 4).map((c) => c.person).join(", ")}.`),
          ]
        : []),
    );
    el.hidden = !first;
  } catch {
    el.hidden = true;
  }
}

const hours = (seconds) => `${(seconds / 3600).toFixed(1)} h`;

function history(title, { roles, held }) {
  return h(
    "section",
    {},
    h("h2", {}, title),
    roles.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Role", "Incidents", "Time", "Last held"].map((t) => h("th", {}, t)))),
          h(
            "tbody",
            {},
            roles.map((r) =>
              h(
                "tr",
                { "data-role": r.role },
                h("td", {}, roleLabel(r.role)),
                h("td", {}, String(r.incidents)),
                h("td", {}, hours(r.seconds)),
                h("td", {}, utcTime(r.lastHeld)),
              ),
            ),
          ),
        )
      : h("p", {}, "No roles held."),
    held.length > 0 &&
      h(
        "ul",
        {},
        held.map((i) =>
          h(
            "li",
            {},
            h("a", { href: `#/incidents/${encodeURIComponent(i.id)}` }, `${i.number != null ? `#${i.number} ` : ""}${i.title}`),
            `: ${i.roles.map(roleLabel).join(", ")}`,
          ),
        ),
      ),
  );
}

/** `#/people/<name>`: which roles the person held across incidents, drills apart. */
export async function showPerson(main, { id }, signal) {
  main.replaceChildren(h("h1", {}, `Roles of ${id}`), h("p", { class: "loading" }, "Loading…"));
  const roles = await getPersonRoles(id);
  if (signal.aborted) return;
  main.replaceChildren(
    h("h1", {}, `Roles of ${id}`),
    h("p", { class: "prompt" }, "From the role intervals of the incidents you may see."),
    history("Incidents", roles.incidents),
    history("Drills", roles.drills),
  );
}
