/**
 * Reading the incident view (`IncidentView`, the JSON export) the way the page needs it: the schema's fixed
 * vocabularies with their display labels, render order, role holders, and which fields changed between two views.
 * The labels repeat `incident-doc/src/schema.rs`, so the page reads like the exports.
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

export const statusLabel = (status) => STATUSES.find(([key]) => key === status)?.[1] ?? status ?? "No status";
export const roleLabel = (role) => ROLES.find(([key]) => key === role)?.[1] ?? role;

/** Status, roles, timeline and timestamps occur at most once per document, and operations find them by kind. */
const fieldOfKind = (view, kind) => view.fields.find((f) => f.kind === kind);

export const fieldByKey = (view, key) => view.fields.find((f) => f.key === key);

/** The roles field's value (role → person), empty when the template has none. */
export const rolesOf = (view) => fieldOfKind(view, "roles")?.value ?? {};

/** `{person, byDefault}` for a role: its assignee, or the commander for an undelegated lead role. */
export function holder(roles, role) {
  if (roles[role]) return { person: roles[role], byDefault: false };
  if (COMMANDER_DEFAULTS.has(role) && roles.commander) return { person: roles.commander, byDefault: true };
  return null;
}

/** The labels of the roles explicitly given to `name`, joined, or null: what presence shows beside a name. */
export function rolesHeldBy(roles, name) {
  const held = ROLES.filter(([key]) => roles[key] === name).map(([, label]) => label);
  return held.length ? held.join(", ") : null;
}

/** `[{field, pinned}]`: pinned fields first in pin order, then the rest in template order. */
export function renderOrder(view) {
  const pinned = view.pins.map((p) => fieldByKey(view, p.field)).filter(Boolean);
  const rest = view.fields.filter((f) => !pinned.includes(f));
  return [...pinned.map((field) => ({ field, pinned: true })), ...rest.map((field) => ({ field, pinned: false }))];
}

/** Document keys the headline shows, so it is redrawn only when one of them changes. */
export function headlineKeys(view) {
  const byKind = ["status", "roles"].map((kind) => fieldOfKind(view, kind)?.key);
  return new Set(["title", "summary", "severity", "incidentNumber", "drill", ...byKind].filter(Boolean));
}

/**
 * The field keys (and `pins`) whose value, stamp or pin differ between two views: what a local operation
 * touched, since `apply` reports ids rather than keys.
 */
export function changedKeys(before, after) {
  const keys = after.fields
    .filter((f) => JSON.stringify(f) !== JSON.stringify(fieldByKey(before, f.key)))
    .map((f) => f.key);
  if (JSON.stringify(before.pins) !== JSON.stringify(after.pins)) keys.push("pins");
  return keys;
}
