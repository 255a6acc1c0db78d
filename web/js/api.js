/**
 * The HTTP API as the page uses it: Bearer authentication (or, signed in through single sign-on, the session cookie
 * the browser sends by itself to its own origin), JSON in and out, and the server's error text carried
 * to the user unchanged (its messages are written for people).
 */

import { rememberSession, signOut, token } from "./auth.js";

/** An API failure; `message` is the server's own `error.message` when it sent one. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** The server answers `{"error": {"code", "message"}}`; accept a bare string too, so no message is ever lost. */
function errorText(body) {
  const error = body?.error;
  if (typeof error === "string") return error;
  return error?.message ?? null;
}

/**
 * Calls the API; resolves to the JSON answer, or with `raw` to the `Response` itself (for text answers). `body` is
 * sent as JSON, `markdown` (a template's source) as it is.
 */
async function request(path, { method = "GET", body, markdown, raw = false } = {}) {
  const current = token();
  const headers = current ? { Authorization: `Bearer ${current}` } : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (markdown !== undefined) headers["Content-Type"] = "text/markdown; charset=utf-8";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? markdown : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check the connection and try again.");
  }
  if (raw && response.ok) return response;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const message = errorText(data) ?? `The server answered ${response.status} ${response.statusText}.`;
  if (response.status === 401) {
    signOut(message);
    location.hash = "#/sign-in";
  }
  throw new ApiError(response.status, message);
}

/** The query string (`?a=1&b=2`, or nothing) of `filter` and `extra` parameters, empty values left out. */
export function queryOf(filter, extra = {}) {
  const params = new URLSearchParams(Object.entries({ ...filter, ...extra }).filter(([, v]) => v));
  return params.size ? `?${params}` : "";
}

/** A one-use ticket for opening `/sync`: a WebSocket cannot carry the token in a header, and URLs are logged. */
export const syncTicket = async () => (await request("/api/sync-ticket", { method: "POST" })).ticket;

/**
 * The answer to `GET path` as a `Response`, fetched with the token in the header: for the server's pages and files
 * (the insights page, the CSV rows) that a plain link could only reach with the token in its URL.
 */
export const fetchAnswer = (path) => request(path, { raw: true });

/**
 * Who `other` (a token that is not the signed-in one, say from a sign-in link) belongs to, as `{name, scope}`, or
 * null when the server does not know it or it was revoked. Signs nobody in or out; throws when the server cannot
 * say (unreachable).
 */
export async function sessionOf(other) {
  let response;
  try {
    response = await fetch("/api/session", { headers: { Authorization: `Bearer ${other}` }, cache: "no-store" });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check the connection and try again.");
  }
  if (response.status === 401) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, errorText(data) ?? `The server answered ${response.status}.`);
  return { name: data.name, scope: data.scope };
}

/**
 * The ways to sign in besides a token: `{name, login}` of the single sign-on provider, or null when there is none
 * or the server cannot be reached (the token form still works then).
 */
export async function ssoProvider() {
  try {
    const response = await fetch("/api/auth/providers", { cache: "no-store" });
    return response.ok ? ((await response.json()).oidc ?? null) : null;
  } catch {
    return null;
  }
}

/** Ends this browser's single sign-on session on the server (its live connections close, the cookie is cleared). */
export const endSession = () => request("/api/session/signout", { method: "POST" });

/** The single sign-on sessions, for admins: `[{id, name, scope, createdAt, lastUsedAt, expiresAt, from, revokedAt, live}]`. */
export const listSessions = async () => (await request("/api/sessions")).sessions;

/** Ends someone's session (admins): it stops working and its live `/sync` connections close. */
export const endSessionOf = (id) => request(`/api/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });

/** Asks who the token is (`{name, scope}`) and caches the answer for offline use. */
export async function fetchSession() {
  const session = await request("/api/session");
  rememberSession(session);
  return session;
}

/** `[{id, name, description, drill, version, origin, file, overrides, fields}]`, default template first. */
/** A page of the audit log (`{entries, nextBefore}`), newest first, for `filter` (admins). */
export const getAudit = (filter) => request(`/api/audit${queryOf(filter)}`);

export const getTemplates = async () => (await request("/api/templates")).templates;

/** The templates on offer and `errors`, the refused ones (`{id, origin, error, serving}`), for the admin page. */
export const getTemplateCatalog = () => request("/api/templates");

/** One template with its Markdown `source`. */
export const getTemplate = (id) => request(`/api/templates/${encodeURIComponent(id)}`);

/** Uploads a template's Markdown (admins); refused whole with `file:line: reason` if it does not parse. */
export const putTemplate = (id, markdown) =>
  request(`/api/templates/${encodeURIComponent(id)}`, { method: "PUT", markdown });

/** Deletes an uploaded template (admins); its id falls back to the directory's or the built-in one. */
export const deleteTemplate = (id) => request(`/api/templates/${encodeURIComponent(id)}`, { method: "DELETE" });

/** Newest first; `filter` holds `status` and `severity`, empty values meaning "any". */
export async function listIncidents(filter) {
  const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
  const suffix = query.size ? `?${query}` : "";
  return (await request(`/api/incidents${suffix}`)).incidents;
}

/** Declares an incident; resolves to `{id, url, number, …}` once the server has stored it. */
export const declareIncident = (body) => request("/api/incidents", { method: "POST", body });

/**
 * The Communications lead's status update as plain text, and the document heads it describes (the
 * `Commandpost-Heads` header), which `markUpdateSent` passes back so the next update starts where this one ended.
 */
export async function fetchUpdate(id) {
  const response = await request(`/api/incidents/${encodeURIComponent(id)}/update?format=text`, { raw: true });
  const heads = (response.headers.get("Commandpost-Heads") ?? "").split(",").filter(Boolean);
  return { text: await response.text(), heads };
}

/** Records that the update describing `heads` went out: a timeline entry, and the cadence starts again. */
export const markUpdateSent = (id, heads) =>
  request(`/api/incidents/${encodeURIComponent(id)}/update/sent`, { method: "POST", body: { heads } });

/**
 * Mails the update describing `heads` to the incident's lists and records it as `markUpdateSent` does; resolves to
 * `{id, at, messageId, to}` once both are durable (the mailer sends it after).
 */
export const sendUpdate = (id, heads) =>
  request(`/api/incidents/${encodeURIComponent(id)}/update/send`, { method: "POST", body: { heads } });

/** The incident's mail thread: `{configured, to, messages}`, the lists an update would go to and each one mailed. */
export const fetchMailThread = (id) => request(`/api/incidents/${encodeURIComponent(id)}/mail`);

/** The names of the people who may take a role (write and admin tokens), for the hand-over suggestions. */
export const listPeople = async () => (await request("/api/people")).people;

/**
 * Applies typed operations on the server, for the edits only the server may write: closing with an override
 * reason records `closeOverride`, and an administrator's `overrideCommand` the audit trail, which the server
 * refuses from a replica's own changes.
 */
/** A page of the channel log, newest first, with the bound channel: `{channel, lines, next}`. */
export const getChatLog = (id) => request(`/api/incidents/${encodeURIComponent(id)}/chat?limit=50`);

/** Binds the incident to `{network, name, id?}` (the commander or an admin). */
export const bindChannel = (id, body) =>
  request(`/api/incidents/${encodeURIComponent(id)}/channel`, { method: "PUT", body });

/** Unbinds the incident's channel. */
export const unbindChannel = (id) =>
  request(`/api/incidents/${encodeURIComponent(id)}/channel`, { method: "DELETE" });

export const applyOperations = (id, operations) =>
  request(`/api/incidents/${encodeURIComponent(id)}/operations`, { method: "POST", body: { operations } });

/** The people present (or, without a list, those connected to the server) ranked for command: `{present, candidates}`. */
export const getRotation = (present) =>
  request(`/api/people/rotation${present?.length ? `?present=${encodeURIComponent(present.join(","))}` : ""}`);

/** One person's roles across incidents: `{person, incidents, drills}`, each `{roles, held}`. */
export const getPersonRoles = (name) => request(`/api/people/${encodeURIComponent(name)}/roles`);
/** Starts a replay drill of the closed incident `id` at `speed`; resolves to the drill's `{id, number, title, steps}`. */
export const startReplay = (id, speed) =>
  request(`/api/incidents/${encodeURIComponent(id)}/replay`, { method: "POST", body: { speed } });

/** Where the replay of drill `id` is: `{state, delivered, total, nextDueAt, facilitator, …}`. */
export const replayStatus = (id) => request(`/api/incidents/${encodeURIComponent(id)}/replay`);

/** `pause`, `resume` or `jump` (to the next step) the replay of drill `id` (its facilitator or an admin). */
export const controlReplay = (id, action) =>
  request(`/api/incidents/${encodeURIComponent(id)}/replay/${action}`, {
    method: "POST",
    body: action === "jump" ? {} : undefined,
  });

/** The drill beside the incident it replays: `{replay, drill, original, …}`. */
export const compareReplay = (id) => request(`/api/incidents/${encodeURIComponent(id)}/replay/compare`);
