/**
 * Replay drills on the incident page (`#replay`): on a closed incident its commander (or an admin) starts a replay
 * as a drill at a chosen speed; on a replay drill everyone sees where the replay is, its facilitator (or an admin)
 * pauses, resumes and jumps it, and anyone compares the drill with the original side by side. Everything goes
 * over HTTP: the server runs the replay and owns its state (the drill's `replay` key and the store's schedule).
 */

import { compareReplay, controlReplay, replayStatus, startReplay } from "./api.js";
import { canWrite, isAdmin } from "./auth.js";
import { h, showError, utcTime } from "./dom.js";
import { rolesOf } from "./model.js";

/** The speeds offered; the server takes any from 0.5 to 100. */
const SPEEDS = [1, 2, 5, 10, 20, 50, 100];

/** How often a running replay's state is asked for again. */
const POLL_MS = 1000;

/** `1 h 05 min`, `4 min 10 s`: a duration in seconds as people read it. */
function duration(seconds) {
  if (seconds == null) return "not yet";
  const s = Math.abs(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  return minutes ? `${minutes} min ${s % 60} s` : `${s} s`;
}

/** The comparison as a table: one row per fact, the drill and the original side by side. */
function comparisonTable(comparison) {
  const { drill, original } = comparison;
  const row = (label, mine, theirs) =>
    h("tr", {}, h("th", { scope: "row" }, label), h("td", { class: "drill" }, mine), h("td", { class: "original" }, theirs));
  return h(
    "table",
    { id: "replay-compare" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("td"),
        h("th", { scope: "col" }, `This drill${drill.number != null ? ` (#${drill.number})` : ""}`),
        h("th", { scope: "col" }, `The original${original.number != null ? ` (#${original.number})` : ""}`),
      ),
    ),
    h(
      "tbody",
      {},
      row(
        "Declared to mitigated",
        `${duration(drill.declaredToMitigatedSeconds)} (${duration(
          comparison.drillDeclaredToMitigatedAtSourcePaceSeconds,
        )} at the original's pace)`,
        duration(original.declaredToMitigatedSeconds),
      ),
      row("Handoffs of command", String(drill.handoffs), String(original.handoffs)),
      row("Commanders", drill.commanders.join(", ") || "nobody", original.commanders.join(", ") || "nobody"),
      row("Timeline entries", String(drill.timelineEntries), String(original.timelineEntries)),
      row("Summary", drill.summary || "—", original.summary || "—"),
      row("Detailed status", drill.detailedStatus || "—", original.detailedStatus || "—"),
    ),
  );
}

/** The replay section of one incident page. */
export class ReplayPanel {
  /** `name()` is the signed-in person; `signal` ends the polling with the page. */
  constructor(section, id, name, signal) {
    this.section = section;
    this.id = id;
    this.name = name;
    this.signal = signal;
    this.timer = null;
    /** The last state shown (`null`: not a replay, or not asked yet), and what it was asked for. */
    this.status = null;
    this.asked = null;
    this.comparison = null;
    signal.addEventListener("abort", () => clearTimeout(this.timer));
  }

  /** Redraws for `view`: the start control on a closed incident, the facilitator bar on a drill. */
  update(view) {
    const key = `${view.status}/${view.drill}`;
    if (view.drill && this.asked !== key) {
      this.asked = key;
      this.refresh();
    }
    this.view = view;
    this.draw();
  }

  /** Asks the server where the replay is; keeps asking while it runs. */
  async refresh() {
    clearTimeout(this.timer);
    try {
      this.status = await replayStatus(this.id);
    } catch (error) {
      // 409: a drill that is no replay.
      if (error.status !== 409) showError(error);
      this.status = null;
    }
    if (this.signal.aborted) return;
    this.draw();
    if (this.status?.state === "running") this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  /** Whether the signed-in person may start a replay of this (closed) incident. */
  mayStart() {
    const view = this.view;
    return canWrite() && view?.status === "closed" && (isAdmin() || rolesOf(view).commander === this.name());
  }

  draw() {
    const parts = [];
    if (this.mayStart()) parts.push(this.startControl());
    if (this.status) parts.push(this.bar(this.status));
    if (this.comparison) parts.push(comparisonTable(this.comparison));
    this.section.hidden = parts.length === 0;
    this.section.replaceChildren(...(parts.length ? [h("h2", { id: "replay-title" }, "Replay drill"), ...parts] : []));
  }

  startControl() {
    const speed = h(
      "select",
      { id: "replay-speed", "aria-label": "Replay speed" },
      ...SPEEDS.map((s) => h("option", { value: String(s) }, `×${s}`)),
    );
    const start = async (event) => {
      event.currentTarget.disabled = true;
      try {
        const drill = await startReplay(this.id, Number(speed.value));
        location.hash = `#/incidents/${encodeURIComponent(drill.id)}`;
      } catch (error) {
        showError(error);
        event.currentTarget.disabled = false;
      }
    };
    return h(
      "p",
      { class: "replay-start" },
      "Practise on this incident: a new drill gets its timeline entries and alerts at their original relative " +
        "times, and the players write the rest. ",
      speed,
      " ",
      h("button", { type: "button", "data-replay-start": "", onclick: start }, "Replay as drill"),
    );
  }

  bar(status) {
    const controls = canWrite() && (isAdmin() || status.facilitator === this.name());
    const act = (action) => async () => {
      try {
        this.status = await controlReplay(this.id, action);
        this.refresh();
      } catch (error) {
        showError(error);
      }
    };
    const button = (action, label, show) =>
      show && h("button", { type: "button", "data-replay": action, onclick: act(action) }, label);
    const running = status.state === "running";
    const finished = status.state === "finished";
    const compare = async () => {
      try {
        this.comparison = await compareReplay(this.id);
        this.draw();
      } catch (error) {
        showError(error);
      }
    };
    return h(
      "div",
      { class: "replay-bar", role: "status", "data-state": status.state },
      h(
        "p",
        {},
        h("span", { class: "replay-state" }, status.state),
        " · ",
        h(
          "span",
          { class: "replay-progress", "data-delivered": status.delivered, "data-total": status.total },
          `${status.delivered} of ${status.total} entries delivered`,
        ),
        ` · ×${status.speed}, facilitated by ${status.facilitator}`,
        status.nextDueAt && ` · next at ${utcTime(status.nextDueAt)}`,
      ),
      h(
        "p",
        { class: "replay-actions" },
        button("pause", "Pause", controls && running),
        button("resume", "Resume", controls && status.state === "paused"),
        button("jump", "Jump to the next entry", controls && !finished),
        h("button", { type: "button", "data-replay": "compare", onclick: compare }, "Compare with the original"),
      ),
    );
  }
}
