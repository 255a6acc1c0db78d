/**
 * The incident page (`#/incidents/<id>`). It opens the incident in a `LiveIncident` (from this device's copy when
 * there is one, so it renders offline), keeps it in sync over the WebSocket, renders it, and turns every edit into
 * a typed operation. The page owns all I/O (socket, timers, IndexedDB); `LiveIncident` owns the document.
 *
 * Re-rendering is by document key: a remote change redraws only the sections whose keys `receive()` reported, and
 * never rebuilds the control someone is typing in.
 *
 * Command changes are announced at the top: a handoff proposed to the signed-in person waits there for their
 * acceptance, and a new commander (whoever made the change) is announced to everyone for a while.
 */

import { renderAccess } from "./access.js";
import { followChat } from "./chat.js";
import { renderCheckins, showRotation } from "./checkins.js";
import {
  applyOperations,
  fetchMailThread,
  fetchSession,
  fetchUpdate,
  listPeople,
  markUpdateSent,
  sendUpdate,
} from "./api.js";
import { canWrite, isAdmin, session } from "./auth.js";
import { h, saveBlob, showError, showMessage, timeEl, utcTime } from "./dom.js";
import { refreshStamps, renderSection } from "./fields.js";
import { uncoordinatedBanner } from "./deviations.js";
import {
  changedKeys,
  commandOf,
  fieldByKey,
  fieldOf,
  headlineKeys,
  knownPeople,
  renderOrder,
  roleLabel,
  rolesHeldBy,
  rolesOf,
  ruleLabel,
  sectionKeys,
  statusLabel,
} from "./model.js";
import { arrange, patch } from "./patch.js";
import { renderCarets } from "./carets.js";
import { pending, renderMailThread, sendLabel } from "./mail.js";
import { myPresence, renderPresence } from "./presence.js";
import { ReplayPanel } from "./replay.js";
import { DeviceCopy, loadIncident } from "./store.js";
import { startSync } from "./sync.js";
import { captureCaret, restoreCaret, wireTextarea } from "./textsync.js";

/** The device copy is folded into one snapshot after this many kept changes, or this long after the last one. */
const COMPACT_EVERY = 200;
const COMPACT_QUIET_MS = 5000;
/** Presence expiry and heartbeats run on this clock; the model decides what is due. */
const TICK_MS = 2000;
/**
 * Presence goes out at most this often while the caret moves: others see it follow typing, and a fast typist stays
 * well inside the server's ephemeral rate limit (20 a second per connection).
 */
const PRESENCE_MIN_MS = 150;
/** How long "bob is now the Incident Commander" stays up: long enough to notice, short enough not to go stale. */
const COMMAND_BANNER_MS = 15_000;

const STATUS_TEXT = {
  synced: "Live",
  syncing: "Syncing…",
  connecting: "Connecting…",
  offline: "Offline — edits kept on this device",
};

const EXPORTS = {
  markdown: { extension: "md", type: "text/markdown" },
  html: { extension: "html", type: "text/html" },
  json: { extension: "json", type: "application/json" },
};

let wasm = null;

/** The WebAssembly client, loaded once per page and only by the page that needs it. */
function loadLiveIncident() {
  wasm ??= import("/pkg/client_wasm.js").then(async (module) => {
    await module.default();
    return module.LiveIncident;
  });
  wasm.catch(() => {
    wasm = null;
  });
  return wasm;
}

/** `browser-` + 16 random hex digits; `getRandomValues` works in insecure contexts, unlike `randomUUID`. */
function peerId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `browser-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Opens the replica from what this device kept (`{snapshot, changes}`); a kept copy that cannot be read is set
 * aside rather than blocking the page, since the server has the incident too.
 */
function openReplica(LiveIncident, id, kept) {
  let live;
  try {
    live = LiveIncident.open(id, peerId(), kept.snapshot);
  } catch (error) {
    showMessage(`This device's copy of the incident could not be read (${error.message}); loading it from the server.`);
    return LiveIncident.open(id, peerId(), undefined);
  }
  for (const change of kept.changes) {
    try {
      live.loadIncremental(change);
    } catch (error) {
      showMessage(`Some edits kept on this device could not be read (${error.message}).`);
    }
  }
  return live;
}

/**
 * The bar that stays at the top of the window while the page scrolls (`#page-bar`, beside the error banner): the
 * sync state, who else is here, the command banners (a handoff waiting for you, a new commander, a closed
 * incident) and an index of the sections, so that what everyone must see, and the timeline, are always in reach.
 */
function statusBar() {
  return h(
    "div",
    { class: "incident-status" },
    h(
      "div",
      { class: "incident-bar" },
      h(
        "p",
        { id: "sync-status", "data-state": "offline", role: "status" },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "label" }, "Connecting…"),
      ),
      h("ul", { id: "presence", "aria-label": "Others here" }),
    ),
    !canWrite() &&
      h("p", { class: "read-only", id: "read-only" }, "Read-only: you may view this incident but not edit it."),
    h("div", { class: "command-banners", "aria-live": "polite" }),
    h("section", { id: "checkins", class: "checkins", hidden: true, "aria-label": "Check-ins" }),
    h("nav", { class: "section-index", "aria-label": "Sections" }),
  );
}

function skeleton() {
  const exportButton = (format, label) => h("button", { type: "button", "data-export": format, disabled: true }, label);
  return h(
    "article",
    { id: "incident", "data-loaded": "false" },
    h("header", { class: "headline" }),
    h("datalist", { id: "people" }),
    h("section", { id: "access" }),
    h("section", { id: "chat" }),
    h("section", { id: "replay", "aria-labelledby": "replay-title", hidden: true }),
    h(
      "div",
      { class: "exports", role: "group", "aria-label": "Export" },
      exportButton("markdown", "Markdown"),
      exportButton("html", "HTML"),
      exportButton("json", "JSON"),
    ),
    h(
      "details",
      { id: "status-update" },
      h("summary", {}, "Status update"),
      h(
        "p",
        { class: "prompt" },
        "The update for stakeholders, ready to paste into email or chat, or to send to the incident's mailing " +
          "lists where the server has them. Sending it, or marking it sent, records it in the timeline and " +
          "restarts the Communications lead's cadence.",
      ),
      h("textarea", { readonly: true, rows: 14, "aria-label": "Status update text" }),
      h(
        "p",
        { class: "update-actions" },
        h("button", { type: "button", "data-update": "copy" }, "Copy"),
        h("button", { type: "button", "data-update": "sent", hidden: !canWrite() }, "Mark as sent"),
        h("span", { class: "update-feedback", role: "status" }),
      ),
      h("section", { class: "mail-state", hidden: true, "aria-live": "polite" }),
    ),
    h("p", { class: "loading" }, "Loading…"),
    // A disabled fieldset disables every control inside it: one switch for read-only tokens.
    h("fieldset", { class: "plain", disabled: !canWrite() }, h("div", { id: "fields" })),
    h(
      "section",
      { id: "audit", hidden: true, "aria-labelledby": "audit-title" },
      h("h2", { id: "audit-title" }, "Audit"),
      h(
        "p",
        { class: "prompt" },
        "Changes the server undid because they broke a command rule, and administrators' overrides of command, " +
          "newest first.",
      ),
      h("ol"),
    ),
  );
}

class IncidentPage {
  constructor(root, bar, id, live) {
    this.root = root;
    this.bar = bar;
    this.id = id;
    this.live = live;
    this.view = null;
    this.sections = new Map();
    this.editingEntry = null;
    this.copy = new DeviceCopy(id, {
      failed: (error) => showMessage(`This device could not keep a copy of the incident: ${error.message}`),
    });
    this.keptSinceSnapshot = 0;
    this.compactTimer = null;
    this.presenceSent = null;
    this.presenceSentAt = 0;
    this.presenceTimer = null;
    this.commandBannerTimer = null;
    this.bannersEl = bar.querySelector(".command-banners");
    this.checkinsEl = bar.querySelector("#checkins");
    /** The rotation's suggestion for command among the people here, shown in the roles section. */
    this.rotationEl = h("p", { class: "rotation", hidden: true, "aria-live": "polite" });
    this.rotationFor = null;
    this.auditEl = root.querySelector("#audit");
    this.headlineEl = root.querySelector(".headline");
    this.statusEl = bar.querySelector("#sync-status");
    this.presenceEl = bar.querySelector("#presence");
    this.peopleEl = root.querySelector("#people");
    /** The names of those who may take a role, from the server; empty until it answers (or offline). */
    this.tokenNames = [];
    this.fieldsEl = root.querySelector("#fields");
    this.fieldsetEl = root.querySelector("fieldset.plain");
    this.indexEl = bar.querySelector(".section-index");
    this.loadingEl = root.querySelector(".loading");
    this.fieldCtx = {
      act: (op) => this.act(op),
      // Checklist items whose details (owner, bug, remove) are open.
      openItems: new Set(),
      // Sections folded to their heading.
      collapsed: new Set(),
      toggleCollapsed: (key) => {
        const { collapsed } = this.fieldCtx;
        if (!collapsed.delete(key)) collapsed.add(key);
        this.render([key]);
      },
      refuse: (message) => showMessage(message),
      // The entry being reworded survives re-renders (others add entries meanwhile) until saved or left.
      editEntry: (id) => {
        this.editingEntry = id;
        this.render(null);
        if (id) this.fieldsEl.querySelector(`[data-edit-entry="${CSS.escape(id)}"]`)?.focus();
      },
      admin: isAdmin(),
      overrideCommand: (person) => this.overrideCommand(person),
      wireText: (textarea) =>
        wireTextarea(textarea, {
          live,
          name: () => this.editorName(),
          changed: (address) => this.changedLocally([fieldOf(address)]),
          refused: showError,
        }),
    };
  }

  start(signal) {
    this.replay = new ReplayPanel(this.root.querySelector("#replay"), this.id, () => this.name(), signal);
    for (const button of this.root.querySelectorAll("[data-export]")) {
      button.addEventListener("click", () => this.download(button.dataset.export));
    }
    this.wireStatusUpdate();
    if (canWrite()) {
      listPeople()
        .then((names) => {
          if (signal.aborted) return;
          this.tokenNames = names;
          this.showPresence();
        })
        // Offline, the suggestions are those the document and presence give.
        .catch(() => {});
    }
    // Focus moves between controls of one field as a focusout then a focusin: settle first, send once.
    const presenceSoon = () => setTimeout(() => !signal.aborted && this.updatePresence(), 0);
    // The caret moves with typing, clicks, arrow keys and selections: each may change what others see.
    for (const event of ["focusin", "focusout", "input", "keyup", "mouseup", "select"]) {
      this.fieldsEl.addEventListener(event, presenceSoon);
    }
    // A closing tab leaves the others' lists at once (they would list it until its presence expired) and keeps
    // its copy; a page restored from the back-forward cache says it is here again at the next tick.
    const leave = () => {
      this.live.leave();
      this.sync.flush();
    };
    const pagehide = () => {
      leave();
      this.copy.flushSync();
    };
    window.addEventListener("pagehide", pagehide);
    const shortcut = (event) => this.shortcut(event);
    document.addEventListener("keydown", shortcut);
    // Others' carets are placed in pixels: a new width rewraps the text under them.
    const redrawCarets = () => this.showPresence();
    window.addEventListener("resize", redrawCarets);

    this.sync = startSync(this.live, {
      frame: (bytes) => this.receive(bytes),
      after: () => this.showStatus(),
      failed: (error) => showMessage(`Sync stopped (${error.message}); reconnecting.`),
    });
    if (this.live.hasContent()) this.render(null);
    this.updatePresence();
    const ticker = setInterval(() => this.tick(), TICK_MS);
    followChat(this.id, this.root.querySelector("#chat"), {
      manage: () => this.mayManage(),
      failed: showError,
      signal,
    });

    signal.addEventListener("abort", () => {
      clearInterval(ticker);
      window.removeEventListener("pagehide", pagehide);
      document.removeEventListener("keydown", shortcut);
      this.bar.remove();
      window.removeEventListener("resize", redrawCarets);
      leave();
      this.sync.stop();
      this.keep();
      this.copy.flushSync();
      clearTimeout(this.compactTimer);
      clearTimeout(this.commandBannerTimer);
      clearTimeout(this.presenceTimer);
      this.live.free();
    });
  }

  /** The signed-in person, or null before the session is known or once another tab signed out. */
  name() {
    return session()?.name ?? null;
  }

  /** The name every edit is made under: the signed-in person's, never a placeholder; throws when there is none. */
  editorName() {
    const name = this.name();
    if (!name) throw new Error("You are not signed in in this browser any more: sign in again to edit.");
    return name;
  }

  /** One incoming frame: carets are anchored to their characters before the model moves them. */
  receive(bytes) {
    const caret = captureCaret(this.live, document.activeElement);
    const keys = this.live.receive(bytes, Date.now());
    const documentKeys = keys.filter((key) => !key.startsWith("@"));
    if (documentKeys.length && this.live.hasContent()) {
      this.render(this.view ? documentKeys : null, { caret });
      this.keep();
    }
    if (keys.includes("@presence")) this.showPresence();
    // The server put back a change of ours that broke a command rule; the document already shows its values.
    if (keys.includes("@refused")) showMessage(`The server refused a change: ${this.live.takeRefusal()}`);
  }

  /** Applies one operation; a refusal shows the model's reason and redraws, undoing what the control showed. */
  act(op) {
    const before = this.view;
    if (op.op === "setStatus" && op.status === "closed" && !op.overrideReason) {
      const open = closingBlockers(before);
      if (open.length > 0) {
        const what = open.some((text) => text.startsWith(OPEN_DEVIATION)) ? "exit criteria or deviations" : "exit criteria";
        const reason = window.prompt(
          `${open.length} ${what} are still open:\n${open.map((text) => `- ${text}`).join("\n")}\n\n` +
            "Close anyway? The reason goes into the timeline.",
        );
        if (!reason?.trim()) {
          this.render(null);
          return false;
        }
        // The override is the server's to record: it closes over HTTP and the change arrives by sync.
        applyOperations(this.id, [{ ...op, overrideReason: reason.trim() }]).catch((error) => {
          showError(error);
          this.render(null);
        });
        return true;
      }
    }
    try {
      this.live.apply(JSON.stringify(op), this.editorName(), Date.now());
    } catch (error) {
      showError(error);
      this.render(null);
      return false;
    }
    const view = JSON.parse(this.live.viewJson());
    this.changedLocally(changedKeys(before, view), view);
    return true;
  }

  changedLocally(keys, view) {
    this.sync.flush();
    this.render(keys, { view });
    this.keep();
  }

  /**
   * Redraws what `keys` touched (`null`: everything). Sections outside `keys` are left alone; sections inside are
   * patched so that a focused control survives; the focused textarea then takes the model's text with its caret.
   */
  render(keys, { caret = null, view = JSON.parse(this.live.viewJson()) } = {}) {
    const all = keys === null || keys.includes("layout");
    const touched = new Set(keys ?? []);
    if (all || [...headlineKeys(view)].some((key) => touched.has(key))) this.renderHeadline(view);
    const command = commandOf(view, this.name());
    const ctx = { ...this.fieldCtx, command, view, severity: view.severity, editingEntry: this.editingEntry };
    const wanted = renderOrder(view).map((field) => {
      const old = this.sections.get(field.key);
      if (old && !all && !sectionKeys(view, field).some((key) => touched.has(key))) return old;
      const fresh = renderSection(field, ctx);
      const current = old ? patch(old, fresh) : fresh;
      this.sections.set(field.key, current);
      return current;
    });
    for (const [key, section] of this.sections) {
      if (!wanted.includes(section)) {
        section.remove();
        this.sections.delete(key);
      }
    }
    arrange(this.fieldsEl, wanted);
    if (all || this.indexEl.childElementCount !== wanted.length || touched.has("pins")) this.renderIndex(view);
    if (touched.has("updated")) refreshStamps(this.fieldsEl, view);
    if (caret && (all || touched.has(fieldOf(caret.field)))) restoreCaret(this.live, caret);
    this.renderArchived(view);
    this.replay?.update(view);
    if (all || touched.has("handoffs")) this.renderHandoffBanner(command);
    this.renderUncoordinatedBanner(view);
    const roles = view.fields.find((field) => field.kind === "roles")?.key;
    if (all || ["access", roles, "handoffs", "status"].some((key) => touched.has(key))) {
      this.renderAccess(view, command);
    }
    if (all || touched.has("audit")) this.renderAudit(view.audit ?? []);
    renderCheckins(this.checkinsEl, this.id, view, command);
    const rolesSection = roles && this.sections.get(roles);
    if (rolesSection && this.rotationEl.parentElement !== rolesSection) rolesSection.append(this.rotationEl);
    // The first render is the state found, not a change; after that any change of commander is news to everyone.
    if (this.view && command.commander && command.commander !== rolesOf(this.view).commander) {
      this.announceCommander(command);
    }
    this.view = view;
    if (this.root.dataset.loaded !== "true") this.markLoaded();
    this.showPresence();
    this.updatePresence();
  }

  /**
   * Who can see the incident, and for its commander (or an admin) the controls that change it. The commander's
   * changes go through the model like any edit; an admin who does not command sends them over HTTP, where the
   * server knows the admin scope (as with overriding command).
   */
  /** Whether the signed-in person commands the incident (or nobody does) or is an admin, with a write token. */
  mayManage() {
    const view = this.view;
    if (!view) return false;
    const commander = rolesOf(view).commander ?? null;
    const commands = commander === null || commander === this.name();
    return canWrite() && view.status !== "closed" && (commands || isAdmin());
  }

  renderAccess(view, command) {
    const name = this.name();
    const commands = command.commander === null || command.commander === name;
    const manage = canWrite() && view.status !== "closed" && (commands || isAdmin());
    const change = (op) => {
      if (commands) return this.act(op);
      applyOperations(this.id, [op]).catch((error) => {
        showError(error);
        this.render(null);
      });
      return true;
    };
    const old = this.root.querySelector("#access");
    patch(old, renderAccess(view, { manage, change }));
  }

  markLoaded() {
    this.root.dataset.loaded = "true";
    this.loadingEl.hidden = true;
    for (const button of this.root.querySelectorAll("[data-export]")) button.disabled = false;
  }

  /** Uncoordinated changes, shown at once to the Operations lead and the commander until they say they saw them. */
  renderUncoordinatedBanner(view) {
    this.seenChanges ??= new Set();
    const old = this.bannersEl.querySelector("#uncoordinated-banner");
    const fresh = uncoordinatedBanner(view, this.name(), this.seenChanges, (ids) => {
      for (const id of ids) this.seenChanges.add(id);
      this.renderUncoordinatedBanner(this.view ?? view);
    });
    if (!fresh) old?.remove();
    else if (old) patch(old, fresh);
    else this.bannersEl.prepend(fresh);
  }

  /** The handoffs proposed to the signed-in person, each with its Accept: nothing changes hands until they accept. */
  renderHandoffBanner({ handoffs, name }) {
    const old = this.bannersEl.querySelector("#handoff-banner");
    const mine = Object.entries(handoffs).filter(([, handoff]) => handoff.to === name);
    if (!mine.length) {
      old?.remove();
      return;
    }
    const fresh = h(
      "div",
      { id: "handoff-banner", role: "group", "aria-label": "Handoffs proposed to you" },
      mine.map(([role, handoff]) =>
        h(
          "p",
          {},
          h("span", {}, `${handoff.by ?? "The commander"} proposes that you become the ${roleLabel(role)}`),
          h(
            "button",
            {
              type: "button",
              class: "primary",
              "data-accept-handoff": role,
              disabled: !canWrite(),
              onclick: () => this.act({ op: "acceptHandoff", role }),
            },
            `Accept: become the ${roleLabel(role)}`,
          ),
        ),
      ),
    );
    if (old) patch(old, fresh);
    else this.bannersEl.prepend(fresh);
  }

  /** One button per section, in the order shown: a tap brings the section into view and its control into focus. */
  renderIndex(view) {
    this.indexEl.replaceChildren(
      ...renderOrder(view).map((field) =>
        h(
          "button",
          {
            type: "button",
            "data-jump": field.key,
            "aria-keyshortcuts": field.kind === "timeline" ? "T" : null,
            onclick: () => this.jumpTo(field.key),
          },
          field.kind === "timeline" ? "Timeline (T)" : field.label,
        ),
      ),
    );
  }

  /**
   * Scrolls the section into view (below the status bar: `scroll-padding-top`, app.css) and focuses its first
   * control (the timeline's add box).
   */
  jumpTo(key) {
    const section = this.sections.get(key);
    if (!section) return;
    section.scrollIntoView({ block: "start" });
    const control = section.querySelector("#timeline-add") ?? section.querySelector("textarea, input, select, button");
    (control && !control.disabled ? control : section).focus({ preventScroll: true });
  }

  /**
   * `T` anywhere but in a control that takes text jumps to the timeline's add box: during an outage the timeline
   * is where most writing happens, and it is the last section of a long page.
   */
  shortcut(event) {
    if (event.key !== "t" && event.key !== "T") return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (event.target.closest?.("input, textarea, select, [contenteditable]")) return;
    const timeline = this.view?.fields.find((field) => field.kind === "timeline");
    if (!timeline) return;
    event.preventDefault();
    this.jumpTo(timeline.key);
  }

  /**
   * A closed incident is the record: every control is disabled and a banner says so, so nobody types into what
   * the server will undo. Admins get Reopen, which asks for the reason the timeline records (the server lets only
   * admins reopen, over HTTP).
   */
  renderArchived(view) {
    const closed = view.status === "closed";
    this.fieldsetEl.disabled = closed || !canWrite();
    this.root.querySelector('[data-update="sent"]').disabled = closed;
    const old = this.bannersEl.querySelector("#archived-banner");
    if (!closed) {
      old?.remove();
      return;
    }
    if (old) return;
    const reopen =
      isAdmin() && h("button", { type: "button", "data-reopen": "", onclick: () => this.reopen() }, "Reopen…");
    this.bannersEl.prepend(
      h(
        "p",
        { id: "archived-banner" },
        "This incident is closed: its document is the record now and takes no edits.",
        reopen && " ",
        reopen,
      ),
    );
  }

  reopen() {
    const reason = window.prompt("Why is the incident reopened? The reason goes into the timeline.");
    if (!reason?.trim()) return;
    applyOperations(this.id, [{ op: "reopen", reason: reason.trim() }]).catch(showError);
  }

  /** "bob is now the Incident Commander" for everyone, and the acknowledgment for bob himself; it fades out. */
  announceCommander({ commander, name }) {
    this.bannersEl.querySelector("#command-banner")?.remove();
    const who = commander === name ? "You're" : `${commander} is`;
    const banner = h("p", { id: "command-banner" }, `${who} now the Incident Commander`);
    this.bannersEl.append(banner);
    clearTimeout(this.commandBannerTimer);
    this.commandBannerTimer = setTimeout(() => banner.remove(), COMMAND_BANNER_MS);
  }

  /** The server's record of reverted rule-breaking changes; shown only once there is one. */
  renderAudit(audit) {
    const items = audit.toReversed().map((entry) =>
      h(
        "li",
        {},
        h("p", { class: "entry-head" }, timeEl(entry.at), " ", h("span", { class: "entry-author" }, entry.by)),
        h("p", { class: "entry-text" }, h("strong", {}, ruleLabel(entry.rule)), `: ${entry.message}`),
      ),
    );
    this.auditEl.hidden = !audit.length;
    this.auditEl.querySelector("ol").replaceChildren(...items);
  }

  renderHeadline(view) {
    const summary = fieldByKey(view, "summary")?.value;
    const commander = rolesOf(view).commander;
    const number = view.number != null ? `#${view.number}` : null;
    this.headlineEl.replaceChildren(
      h(
        "p",
        { class: "badges" },
        number && h("span", { class: "number" }, number),
        h("span", { class: `status status-${view.status ?? "none"}` }, statusLabel(view.status)),
        view.severity && h("span", { class: `severity severity-${view.severity.toLowerCase()}` }, view.severity),
        view.drill && h("span", { class: "drill" }, "Drill"),
        view.access?.restricted && h("span", { class: "restricted" }, "Restricted"),
        commander && h("span", { class: "commander" }, `Commander: ${commander}`),
      ),
      h("h1", {}, view.title || "Untitled incident"),
      summary && h("p", { class: "summary" }, summary),
    );
    document.title = `${number ? `${number} ` : ""}${view.title} · commandpost`;
  }

  showStatus() {
    const state = this.live.status();
    // The model forgets other peers when the connection drops; the list must not show them as here.
    if (state !== this.statusEl.dataset.state) this.showPresence();
    this.statusEl.dataset.state = state;
    // Shown where the person types, too (app.css): an edit made offline waits on this device.
    this.root.dataset.sync = state;
    this.statusEl.querySelector(".label").textContent = STATUS_TEXT[state] ?? state;
    this.statusEl.title = this.live.lastError() ?? "";
    if (!this.view) {
      const error = this.live.lastError();
      const waiting = state === "offline" ? "Loading… no copy on this device yet; waiting for the server." : "Loading…";
      this.loadingEl.textContent = error ? `Not loaded: ${error}. Retrying.` : waiting;
    }
  }

  showPresence() {
    const peers = JSON.parse(this.live.presenceJson(Date.now()));
    renderPresence(this.presenceEl, this.fieldsEl, peers, this.view);
    if (!this.view) return;
    renderCarets(this.fieldsEl, peers, this.live);
    const names = knownPeople(this.view, peers, this.tokenNames, this.name());
    const people = names.map((name) => h("option", { value: name }));
    this.peopleEl.replaceChildren(...people);
    // Who has not commanded recently among the people here: asked again only when they change.
    const present = [...new Set([this.name(), ...peers.map((peer) => peer.name)].filter(Boolean))].sort();
    if (present.join(",") !== this.rotationFor) {
      this.rotationFor = present.join(",");
      showRotation(this.rotationEl, present);
    }
  }

  /**
   * An administrator makes `person` (asked for when empty) the commander without a handoff, to recover from an
   * absent one. Only the server records an override, so it goes over HTTP; the change comes back by sync.
   */
  overrideCommand(person) {
    const to = person || window.prompt("Who takes command? (their name as they sign in)")?.trim();
    if (!to) return;
    const reason = window.prompt(
      `Make ${to} the Incident Commander without a handoff?\n\nThe reason goes into the timeline and the audit trail.`,
    );
    if (!reason?.trim()) return;
    applyOperations(this.id, [{ op: "overrideCommand", person: to, reason: reason.trim() }]).catch(showError);
  }

  /**
   * Tells the others who we are, what we edit and where our caret is; sent only when that changed (the model
   * repeats it), and at most every `PRESENCE_MIN_MS` (the last change always goes out).
   */
  updatePresence() {
    // Presence names its sender, and the server closes a connection whose presence names someone else.
    if (!this.name()) return;
    const role = this.view ? rolesHeldBy(rolesOf(this.view), this.name()) : null;
    const presence = JSON.stringify(myPresence(this.name(), role, this.live));
    if (presence === this.presenceSent) return;
    const wait = this.presenceSentAt + PRESENCE_MIN_MS - Date.now();
    clearTimeout(this.presenceTimer);
    if (wait > 0) {
      this.presenceTimer = setTimeout(() => this.updatePresence(), wait);
      return;
    }
    this.presenceSent = presence;
    this.presenceSentAt = Date.now();
    this.live.setPresence(presence, Date.now());
    this.sync.flush();
  }

  tick() {
    if (this.live.tick(Date.now())) this.showPresence();
    // The reconsider prompt falls due with time, not with a change.
    if (this.view) renderCheckins(this.checkinsEl, this.id, this.view, commandOf(this.view, this.name()));
    this.sync.flush();
    if (this.view) refreshStamps(this.fieldsEl, this.view);
  }

  /**
   * Keeps this device's copy current: every change (local or remote) is written the moment it happens, as the
   * small `saveIncremental` bytes; the kept changes are folded into one snapshot now and then.
   */
  keep() {
    const bytes = this.live.saveIncremental();
    if (!bytes.length) return;
    this.copy.add(bytes);
    this.keptSinceSnapshot += 1;
    clearTimeout(this.compactTimer);
    if (this.keptSinceSnapshot >= COMPACT_EVERY) this.compact();
    else this.compactTimer = setTimeout(() => this.compact(), COMPACT_QUIET_MS);
  }

  compact() {
    clearTimeout(this.compactTimer);
    this.keptSinceSnapshot = 0;
    this.copy.compact(this.live.save());
  }

  /**
   * The status update panel: written by the server when opened (it needs the server: "what changed since the last
   * update" reads the document's history), copied as is, and marked sent with the heads it described.
   */
  wireStatusUpdate() {
    const panel = this.root.querySelector("#status-update");
    const text = panel.querySelector("textarea");
    const record = panel.querySelector('[data-update="sent"]');
    const mailState = panel.querySelector(".mail-state");
    let heads = [];
    // Where the incident's template and severity have mailing lists, the button sends the update to them.
    let mailTo = [];
    let refresh;
    const loadThread = async () => {
      clearTimeout(refresh);
      const thread = await fetchMailThread(this.id);
      mailTo = thread.configured ? thread.to : [];
      record.textContent = sendLabel(thread);
      renderMailThread(mailState, thread);
      // While the relay has not taken every message, the states are asked again, as long as the panel is open.
      if (pending(thread)) refresh = setTimeout(() => panel.open && loadThread().catch(() => {}), 5000);
    };
    const load = async () => {
      try {
        // The thread is the panel's second part: its failure is shown, and the update still loads.
        const [update] = await Promise.all([fetchUpdate(this.id), loadThread().catch(showError)]);
        text.value = update.text;
        heads = update.heads;
      } catch (error) {
        showError(error);
      }
    };
    panel.addEventListener("toggle", () => (panel.open ? load() : clearTimeout(refresh)));
    // Each action says what it did, next to its buttons: a click that seems to do nothing gets clicked again.
    const feedback = panel.querySelector(".update-feedback");
    panel.querySelector('[data-update="copy"]').addEventListener("click", async () => {
      text.select();
      try {
        await navigator.clipboard.writeText(text.value);
        feedback.textContent = "Copied: paste it into the email or the channel.";
      } catch {
        // Without clipboard access the text stays selected for Ctrl+C.
        feedback.textContent = "Selected: press Ctrl+C (⌘C) to copy it.";
      }
    });
    record.addEventListener("click", async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      const mailing = mailTo.length > 0;
      feedback.textContent = mailing ? "Sending…" : "Marking as sent…";
      try {
        if (mailing) {
          const sent = await sendUpdate(this.id, heads);
          feedback.textContent = `Sent to ${sent.to.join(", ")} at ${utcTime(sent.at)}; the timeline records it.`;
        } else {
          await markUpdateSent(this.id, heads);
          feedback.textContent = `Marked as sent at ${utcTime(new Date().toISOString())}; the timeline records it.`;
        }
        await load();
      } catch (error) {
        feedback.textContent = "";
        showError(error);
      } finally {
        button.disabled = false;
      }
    });
  }

  /** Downloads an export made by the model itself, so it works offline and matches the server byte for byte. */
  download(format) {
    const { extension, type } = EXPORTS[format];
    const blob = new Blob([this.live.exportDoc(format)], { type: `${type};charset=utf-8` });
    saveBlob(blob, `incident-${this.view?.number ?? this.id}.${extension}`);
  }
}

export async function showIncident(main, { id }, signal) {
  const waiting = h("p", { class: "loading" }, "Loading…");
  main.replaceChildren(waiting);
  let live;
  let keptChanges = 0;
  try {
    const [LiveIncident, kept] = await Promise.all([
      loadLiveIncident(),
      // No copy on this device (or no IndexedDB at all) just means starting from the server's.
      loadIncident(id).catch(() => ({ snapshot: undefined, changes: [] })),
      // Right after signing in the session may not be cached yet, and stamps and the read-only switch need it.
      // Offline with none cached, the page stays read-only.
      session() ?? fetchSession().catch(() => null),
    ]);
    if (signal.aborted) return;
    live = openReplica(LiveIncident, id, kept);
    keptChanges = kept.changes.length;
  } catch (error) {
    waiting.textContent = "This incident cannot be opened.";
    showError(error);
    return;
  }
  const root = skeleton();
  main.replaceChildren(root);
  const bar = statusBar();
  document.getElementById("page-bar").replaceChildren(bar);
  const page = new IncidentPage(root, bar, id, live);
  page.start(signal);
  // Changes kept apart from the snapshot (a reload soon after typing) are folded in now that they are merged.
  if (keptChanges) page.compact();
}

/** How `closingBlockers` names a deviation not reverted, as the model's rules do (`OPEN_DEVIATION`). */
const OPEN_DEVIATION = "deviation not reverted: ";

/**
 * The text of each exit criterion not yet DONE, then each deviation not reverted: closing past them needs a reason
 * (the server checks it too).
 */
function closingBlockers(view) {
  const exit = view?.fields?.find((field) => field.key === "exitCriteria" && field.kind === "checklist");
  const deviations = view?.fields?.find((field) => field.kind === "deviations");
  return [
    ...(exit?.value ?? []).filter((item) => !item.done).map((item) => item.text),
    ...(deviations?.value ?? []).filter((d) => !d.reverted).map((d) => `${OPEN_DEVIATION}${d.what}`),
  ];
}
