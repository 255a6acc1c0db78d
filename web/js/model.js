/**
 * Reading the incident view (`IncidentView`, the JSON export) the way the page needs it: the schema's fixed
 * vocabularies with their display labels, render order, role holders, what the signed-in person may do with the
 * command hierarchy, and which fields changed between two views. The labels repeat `incident-doc/src/schema.rs`, so
 * the page reads like the exports.
 */

/** Lifecycle states in the order an incident moves through them. */
export const STATUSES = [
  ["declared", "Declared"],
  ["active", "Active"],
  ["mitigated", "Mitigated"],
  ["resolved", "Resolved"],
  ["closed", "Closed"],
];

/** The command hierarchy; the last three default to the commander while nobody else holds them. */
export const ROLES = [
  ["commander", "Incident Commander"],
  ["operations", "Operations lead"],
  ["planning", "Planning lead"],
  ["communications", "Communications lead"],
  ["nextCommander", "Next Incident Commander"],
];

const COMMANDER_DEFAULTS = new Set(["operations", "planning", "communications"]);

/** The named moments of an incident, impact kept apart from response. */
export const STAGES = [
  ["impactStarted", "Impact started"],
  ["detected", "Detected"],
  ["declared", "Declared"],
  ["mitigated", "Mitigated"],
  ["resolved", "Resolved"],
  ["closed", "Closed"],
];

/** The command rules (`incident-doc/src/rules.rs`), as the audit trail names them. */
const RULES = {
  commandHierarchy: "Command hierarchy",
  pins: "Pins",
  lifecycle: "Lifecycle",
  timelineEdit: "Timeline edit",
  archived: "Archived",
  commandOverride: "Command overridden by an administrator",
  access: "Who can see it",
  checkIn: "Check-ins",
};

export const statusLabel = (status) => STATUSES.find(([key]) => key === status)?.[1] ?? status ?? "No status";
export const roleLabel = (role) => ROLES.find(([key]) => key === role)?.[1] ?? role;
export const ruleLabel = (rule) => RULES[rule] ?? rule;

/** Status, roles, timeline and timestamps occur at most once per document, and operations find them by kind. */
const fieldOfKind = (view, kind) => view.fields.find((f) => f.kind === kind);

export const fieldByKey = (view, key) => view.fields.find((f) => f.key === key);

/**
 * The field key of a text address (`LiveIncident`'s name for a text): a field key, or `field/item` for a checklist
 * item's text. Presence names the text someone is in this way, so the field a caret belongs to is found here.
 */
export const fieldOf = (address) => address.split("/")[0];

/** The roles field's value (role → person), empty when the template has none. */
export const rolesOf = (view) => fieldOfKind(view, "roles")?.value ?? {};

/** `{person, byDefault}` for a role: its assignee, or the commander for an undelegated lead role. */
export function holder(roles, role) {
  if (roles[role]) return { person: roles[role], byDefault: false };
  if (COMMANDER_DEFAULTS.has(role) && roles.commander) return { person: roles.commander, byDefault: true };
  return null;
}

/**
 * What `name` may do with the command hierarchy and the pins, by the rules the model enforces
 * (`incident-doc/src/rules.rs`): controls are disabled up front, with the reason as their tooltip, rather than
 * refused after a click. With nobody in command anyone may act, as the rules allow.
 */
export function commandOf(view, name) {
  const roles = rolesOf(view);
  const commander = roles.commander ?? null;
  const commands = commander === null || commander === name;
  const onlyCommander = (what) => `Only the Incident Commander (${commander}) ${what}`;
  return {
    name,
    commander,
    /** Pending handoffs by role: `{to, by, at}`. */
    handoffs: view.handoffs ?? {},
    pins: view.pins,
    /** Why `name` may not assign roles or pin, or null when they may. */
    assignRefusal: commands ? null : onlyCommander("assigns roles"),
    pinRefusal: commands ? null : onlyCommander("pins fields"),
    /** Why `name` may not hand `role` over (or withdraw its handoff): the commander and the role's holder may. */
    handoffRefusal: (role) => {
      if (commands || holder(roles, role)?.person === name) return null;
      return role === "commander"
        ? onlyCommander("hands command over")
        : onlyCommander(`or the ${roleLabel(role)} hands it over`);
    },
  };
}

/**
 * The people a handoff may name, so that nobody has to type a name from memory in the worst hour: those present
 * (`peers`, from presence), those the server says may take a role (`tokens`), those holding or proposed a role,
 * and the timeline's authors; sorted, without `me`.
 */
export function knownPeople(view, peers, tokens, me) {
  const names = [
    ...peers.map((peer) => peer.name),
    ...tokens,
    ...Object.values(rolesOf(view)),
    ...Object.values(view.handoffs ?? {}).flatMap((handoff) => [handoff.to, handoff.by]),
    ...(fieldOfKind(view, "timeline")?.value ?? []).map((entry) => entry.author),
  ];
  return [...new Set(names.filter((name) => typeof name === "string" && name && name !== me))].sort();
}

/** The labels of the roles explicitly given to `name`, joined, or null: what presence shows beside a name. */
export function rolesHeldBy(roles, name) {
  const held = ROLES.filter(([key]) => roles[key] === name).map(([, label]) => label);
  return held.length ? held.join(", ") : null;
}

/** The fields in display order: pinned fields first in pin order, then the rest in template order. */
export function renderOrder(view) {
  const pinned = view.pins.map((p) => fieldByKey(view, p.field)).filter(Boolean);
  return [...pinned, ...view.fields.filter((f) => !pinned.includes(f))];
}

/**
 * The document keys a field's section shows: its own value, its pin, and who commands (the pin buttons are the
 * commander's); the roles section also shows the pending handoffs.
 */
export function sectionKeys(view, field) {
  const rolesKey = fieldOfKind(view, "roles")?.key;
  // A severity-specific cadence changes the "kept current" line when the severity changes.
  const severity = field.cadenceBySeverity && "severity";
  // The operations log marks who may change production: the delegations change it too.
  const delegates = field.kind === "changes" && "operationsDelegates";
  return [field.key, "pins", rolesKey, field.kind === "roles" && "handoffs", severity, delegates].filter(Boolean);
}

/** Document keys the headline shows, so it is redrawn only when one of them changes. */
export function headlineKeys(view) {
  const byKind = ["status", "roles"].map((kind) => fieldOfKind(view, kind)?.key);
  return new Set(["title", "summary", "severity", "incidentNumber", "drill", "access", ...byKind].filter(Boolean));
}

/** Top-level document keys outside the fields that the view carries, under the same names. */
const ROOT_KEYS = ["pins", "handoffs", "audit", "access", "operationsDelegates"];

/**
 * The field keys (and `pins`, `handoffs`, `audit`, `access`) whose value, stamp or pin differ between two views: what a local
 * operation touched, since `apply` reports ids rather than keys.
 */
export function changedKeys(before, after) {
  const differ = (a, b) => JSON.stringify(a) !== JSON.stringify(b);
  const keys = after.fields.filter((f) => differ(f, fieldByKey(before, f.key))).map((f) => f.key);
  return [...keys, ...ROOT_KEYS.filter((key) => differ(before[key], after[key]))];
}
