//! Incident routes: declare, list, read, export (now or at a past moment), append to the timeline, apply typed
//! operations, delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use incident_doc::schema::Status;
use incident_doc::{Applied, Declaration, Editor, Incident, Operation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, ReadRefusals, Refusals, TooLarge, Unprocessable, WriteRefusals};
use super::{AppState, JsonBody, QueryParams, severity_filter, status_filter};
use crate::audit::{self, ClientAddr};
use crate::auth::{Identity, Scope};
use crate::document::DocHandle;
use crate::error::ApiError;
use crate::export::{self, Format};
use crate::input::parse_incident;
use crate::store::{IncidentSummary, ListFilter};
use crate::templates::Catalog;
use wire::DocumentId;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(declare, list))
        .routes(routes!(read, delete))
        .routes(routes!(export_doc))
        .routes(routes!(append_timeline))
        .routes(routes!(operations))
}

/// The key of the command post field, where a channel bound at declaration is written.
const COMMAND_POST_KEY: &str = "commandPost";

/// Body of `POST /api/incidents`. Anyone on call with a write token can declare, at once.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Declare {
    /// Template id; the default template when absent.
    #[serde(default)]
    template: Option<String>,
    /// The incident's name; the title becomes `<name>: <date>`.
    #[schema(pattern = "^[^\\r\\n]*\\S[^\\r\\n]*$", max_length = 200)]
    title: String,
    /// Declaration question: is a second team needed?
    #[serde(default)]
    second_team: Option<bool>,
    /// Declaration question: do customers see it?
    #[serde(default)]
    customer_visible: Option<bool>,
    /// Declaration question: still unsolved after an hour?
    #[serde(default)]
    unsolved_after_hour: Option<bool>,
    /// Starting severity, when known.
    #[serde(default)]
    severity: Option<String>,
    /// Starting summary, when known.
    #[serde(default)]
    summary: Option<String>,
    /// Whether only members (the declarer, role holders, people the commander adds) and admins may see it; the
    /// template's default when absent (the `security` template declares restricted).
    #[serde(default)]
    restricted: Option<bool>,
}

fn parse_id(id: &str) -> Result<DocumentId, ApiError> {
    parse_incident(id).ok_or(ApiError::NotFound)
}

/// The actor of incident `id` for `identity`. A restricted incident `identity` is not a member of is answered
/// exactly as an unknown id (404, the same body), so nobody learns that it exists.
pub(super) async fn handle(
    state: &AppState,
    identity: &Identity,
    id: &str,
) -> Result<DocHandle, ApiError> {
    let id = parse_id(id)?;
    visible(state, identity, id).await?;
    state.registry.get(id).await?.ok_or(ApiError::NotFound)
}

/// Refuses with 404 when incident `id` is restricted and `identity` is neither a member nor an admin. Decided from
/// the index row, which commits with every change on any node, so a restriction made on another node counts at
/// once. An incident without a row is left to the registry (unknown: 404 there too).
pub(super) async fn visible(
    state: &AppState,
    identity: &Identity,
    id: DocumentId,
) -> Result<(), ApiError> {
    if identity.scope == Scope::Admin {
        return Ok(());
    }
    match state.store.summary(id).await? {
        Some(row) if !row.visible_to(&identity.name, false) => Err(ApiError::NotFound),
        _ => Ok(()),
    }
}

/// What a listing shows `identity`: everything for admins, else open incidents and those they are a member of.
pub(super) fn viewer(identity: &Identity) -> Option<String> {
    (identity.scope != Scope::Admin).then(|| identity.name.clone())
}

pub(super) fn editor(identity: &Identity) -> Editor {
    Editor::new(identity.name.clone(), Utc::now()).with_admin(identity.scope == Scope::Admin)
}

/// A new incident, as `POST /api/incidents` answers it.
#[derive(Serialize, ToSchema)]
struct Declared {
    /// The incident's id (bs58check), as the other routes take it.
    id: String,
    /// Its `automerge:` URL, for sync clients.
    url: String,
    /// Its number, counting up from 1.
    number: i64,
    /// `<name>: <date>`.
    title: String,
    /// The template it was declared from.
    template: String,
    /// Its lifecycle state (`declared`).
    status: Option<String>,
    /// Its severity, when given.
    severity: Option<String>,
}

/// `POST /api/incidents` (write) → 201 with the new incident's id and `automerge:` URL. The 201 means it is durable.
#[utoipa::path(
    post,
    path = "/api/incidents",
    tag = "incidents",
    request_body = Declare,
    responses(
        (status = 201, description = "Declared and durable", body = Declared,
            headers(("location" = String, description = "/api/incidents/{id}"))),
        (status = 400, response = BadRequest),
        Refusals,
        (status = 413, response = TooLarge),
        (status = 422, description = "A mistyped field, an unknown template, or a severity the template does not offer", body = crate::error::ErrorBody),
    )
)]
async fn declare(
    identity: Identity,
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    JsonBody(body): JsonBody<Declare>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "declare incidents")?;
    let template_id = body
        .template
        .as_deref()
        .unwrap_or(incident_doc::DEFAULT_TEMPLATE);
    // One snapshot for the whole declaration, so a reload meanwhile cannot mix two versions.
    let catalog = state.templates.current();
    let template = &catalog
        .get(template_id)
        .ok_or_else(|| ApiError::Unprocessable(format!("unknown template {template_id:?}")))?
        .template;
    let mut starting = Vec::new();
    for (question, answer) in [
        ("secondTeam", body.second_team),
        ("customerVisible", body.customer_visible),
        ("unsolvedAfterHour", body.unsolved_after_hour),
    ] {
        if let (Some(value), Some(field)) = (
            answer,
            template
                .fields
                .iter()
                .find(|f| f.def.options.iter().any(|o| o.key == question)),
        ) {
            starting.push(Operation::Answer {
                field: field.def.key.clone(),
                question: question.into(),
                value: Some(value),
            });
        }
    }
    if let Some(severity) = body.severity {
        starting.push(Operation::SetChoice {
            field: "severity".into(),
            value: Some(severity),
        });
    }
    if let Some(summary) = body.summary {
        starting.push(Operation::SetText {
            field: "summary".into(),
            text: summary,
        });
    }
    // Only a choice other than the template's is written (and recorded in the timeline).
    if let Some(restricted) = body.restricted.filter(|r| *r != template.restricted) {
        starting.push(Operation::SetRestricted { restricted });
    }
    let editor = editor(&identity);
    // A refused declaration after this point leaves a gap in the numbers, which the store allows.
    let number = state.store.next_incident_number().await?;
    let name = body.title.clone();
    if let Some((network, rule)) = &template.channel {
        let has_post = template
            .fields
            .iter()
            .any(|f| f.def.key == COMMAND_POST_KEY);
        starting.extend(
            super::channel::declared_channel(&state, *network, rule, number, &name, has_post).await,
        );
    }
    let mut incident = Incident::create(
        template,
        &Declaration {
            name: body.title,
            number: Some(number),
        },
        &editor,
        None,
    )
    .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    if !starting.is_empty() {
        incident
            .apply_all(&starting, &editor)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    }
    let view = incident.view();
    let restricted = incident.restriction().0;
    let id = DocumentId::random();
    state.registry.create(id, incident).await?;
    super::channel::channels_changed(&state, &starting);
    if restricted {
        let event = audit::Event {
            actor: &identity.name,
            action: "incident.restriction_changed",
            target: &id.to_string(),
            detail: serde_json::json!({"restricted": true, "via": "declaration"}),
            from,
        };
        audit::record(&*state.store, &state.metrics, event).await;
    }
    let location = format!("/api/incidents/{id}");
    let body = Declared {
        id: id.to_string(),
        url: id.url(),
        number,
        title: view.headline.title,
        template: view.headline.template,
        status: view.headline.status,
        severity: view.headline.severity,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Query of `GET /api/incidents`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only incidents in this lifecycle state.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only incidents of this severity (as the template names it, e.g. `SEV1`).
    severity: Option<String>,
    /// At most this many, newest first.
    limit: Option<usize>,
}

/// The incidents of `GET /api/incidents`.
#[derive(Serialize, ToSchema)]
struct IncidentList {
    /// Newest first.
    incidents: Vec<ListRow>,
}

/// One incident of the list, from the index (no document is read).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ListRow {
    /// The incident's id.
    id: String,
    /// Its `automerge:` URL.
    url: String,
    /// Its number.
    number: Option<i64>,
    /// Its title.
    title: String,
    /// The template it was declared from.
    template: String,
    /// Whether that template is a drill's.
    drill: bool,
    /// Whether only its members and admins may see it (the caller is one, or it would not be listed).
    restricted: bool,
    /// Its lifecycle state.
    status: &'static str,
    /// Its severity, if set.
    severity: Option<String>,
    /// Who holds command, if anyone.
    commander: Option<String>,
    /// When it was declared.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
}

/// A row of the list; `templates` tell drills apart (the drill flag comes from the template, and the index keeps
/// the template id).
fn list_row(s: &IncidentSummary, templates: &Catalog) -> ListRow {
    ListRow {
        id: s.id.to_string(),
        url: s.id.url(),
        number: s.number,
        title: s.title.clone(),
        template: s.template.clone(),
        drill: templates.get(&s.template).is_some_and(|t| t.template.drill),
        restricted: s.restricted,
        status: s.status_name(),
        severity: s.severity.clone(),
        commander: s.commander.clone(),
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

/// `GET /api/incidents[?status=…&severity=…&limit=…]` (read): newest first.
#[utoipa::path(
    get,
    path = "/api/incidents",
    operation_id = "list_incidents",
    tag = "incidents",
    params(ListQuery),
    responses(
        (status = 200, body = IncidentList),
        (status = 422, response = Unprocessable),
        Refusals,
    )
)]
async fn list(
    identity: Identity,
    State(state): State<AppState>,
    query: Result<QueryParams<ListQuery>, ApiError>,
) -> Result<Json<IncidentList>, ApiError> {
    identity.require(Scope::Read, "list incidents")?;
    let QueryParams(query) = query?;
    let status = query.status.as_deref().map(status_filter).transpose()?;
    let templates = state.templates.current();
    let rows = state
        .store
        .list(&ListFilter {
            status,
            severity: query
                .severity
                .map(|name| severity_filter(&templates, name))
                .transpose()?,
            limit: query.limit,
            viewer: viewer(&identity),
        })
        .await?;
    Ok(Json(IncidentList {
        incidents: rows.iter().map(|row| list_row(row, &templates)).collect(),
    }))
}

/// `GET /api/incidents/{id}` (read): the JSON export plus id and URL.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}",
    operation_id = "read_incident",
    tag = "incidents",
    params(IncidentId),
    responses(
        (status = 200, description = "The incident as the JSON export shows it (docs/schema.md), with `id` and `url`", body = Object),
        ReadRefusals,
    )
)]
async fn read(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let doc_id = handle.id;
    let mut view = state
        .reads
        .run(&handle, |incident| Ok(incident.view()))
        .await?;
    view.mark_stale(Utc::now());
    Ok(Json(export::with_ids(doc_id, &view)))
}

/// Parses the `at=` of an export: an RFC 3339 time, or 422 saying what is expected.
fn parse_at(at: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::Unprocessable(format!(
                "at={at:?} is not an RFC 3339 time such as 2026-11-25T04:00:00Z ({e})"
            ))
        })
}

/// The incident of a route: its id, or its `automerge:` URL (percent-encoded).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct IncidentId {
    /// The incident's id, as `POST /api/incidents` answers it; anything else is not found.
    pub(super) id: String,
}

/// Query of the export route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `markdown` (default), `html`, `json`, `automerge` (the document's bytes) or `postmortem` (a Markdown draft).
    #[param(pattern = "^(markdown|html|json|automerge|postmortem)$")]
    format: Option<String>,
    /// An RFC 3339 time: the document as it was then.
    #[param(format = DateTime)]
    at: Option<String>,
}

/// `GET /api/incidents/{id}/export?format=markdown|html|json|automerge|postmortem[&at=<RFC 3339>]` (read).
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/export",
    tag = "incidents",
    params(IncidentId, ExportQuery),
    responses(
        (status = 200, description = "The export, with a filename in `Content-Disposition`", content(
            (String = "text/markdown"),
            (String = "text/html"),
            (Object = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )),
        ReadRefusals,
        (status = 422, description = "An unknown format, an `at` that is no RFC 3339 time, or one before the incident existed", body = crate::error::ErrorBody),
    )
)]
async fn export_doc(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    query: Result<QueryParams<ExportQuery>, ApiError>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Read, "export incidents")?;
    let QueryParams(query) = query?;
    let format = match &query.format {
        Some(name) => name.parse::<Format>()?,
        None => Format::Markdown,
    };
    let at = query.at.as_deref().map(parse_at).transpose()?;
    let handle = handle(&state, &identity, &id).await?;
    let doc_id = handle.id;
    let log = match format {
        Format::Automerge => Vec::new(),
        _ => export::chat_log(&*state.store, doc_id).await?,
    };
    let body = state
        .reads
        .run(&handle, move |incident| {
            let body = export::render(incident, doc_id, format, at)?;
            Ok(export::with_chat_log(body, format, &log, at)?)
        })
        .await?;
    let extension = format.extension();
    let disposition = format!("inline; filename=\"incident-{doc_id}.{extension}\"");
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_SECURITY_POLICY, EXPORT_POLICY.to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// The content security policy of every export: a second wall behind the sanitizer, so that even markup that got
/// through could run no script, load nothing (no image: a remote one is a tracking pixel that reports who read the
/// incident), no frame or plugin, and submit no form; only the export's own inline stylesheet applies. With
/// `nosniff`, no browser takes a Markdown or JSON export for HTML. The page carries the same policy in a `<meta>`
/// (`incident_doc::export::HTML_POLICY`) for when it is saved and opened as a file.
const EXPORT_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'; sandbox";

/// Body of `POST /api/incidents/{id}/timeline`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TimelineEntry {
    /// What happened (Markdown).
    text: String,
    /// When it happened, if not now.
    #[serde(default)]
    at: Option<DateTime<Utc>>,
}

/// `POST /api/incidents/{id}/timeline` (write) → 201 `{"id"}`; author = the token's name. The 201 means it is
/// durable.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/timeline",
    tag = "incidents",
    params(IncidentId),
    request_body = TimelineEntry,
    responses(
        (status = 201, description = "Added and durable", body = Applied),
        WriteRefusals,
    )
)]
async fn append_timeline(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<TimelineEntry>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let op = Operation::AddTimelineEntry {
        text: body.text,
        at: body.at,
    };
    let applied = handle.apply(vec![op], editor(&identity)).await?;
    let entry = applied.into_iter().next().unwrap_or_default();
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// Body of `POST /api/incidents/{id}/operations`: typed edits applied all together or not at all.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Operations {
    /// The edits, in order.
    #[schema(min_items = 1)]
    operations: Vec<Operation>,
}

/// What `POST /api/incidents/{id}/operations` answers.
#[derive(Serialize, ToSchema)]
struct AppliedAll {
    /// One per operation, in order: the id of the entry or item it created, if any.
    applied: Vec<Applied>,
}

/// What an operation does that only an administrator may do, if anything: reopening an archive, and taking command
/// without a handoff. The model holds both to the rules too; this answers a writer with 403 before any work.
fn admin_only(op: &Operation) -> Option<&'static str> {
    match op {
        Operation::Reopen { .. } => Some("reopen incidents"),
        Operation::OverrideCommand { .. } => Some("override command"),
        _ => None,
    }
}

/// `POST /api/incidents/{id}/operations` (write) → 200 `{"applied": [{"id"}…]}` once durable.
///
/// Each operation is an object whose `op` names it; they apply in order, as one change, all or none. `reopen` and
/// `overrideCommand` need an admin token.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/operations",
    tag = "incidents",
    params(IncidentId),
    request_body = Operations,
    responses(
        (status = 200, description = "Applied and durable", body = AppliedAll),
        WriteRefusals,
    )
)]
async fn operations(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    ClientAddr(from): ClientAddr,
    JsonBody(body): JsonBody<Operations>,
) -> Result<Json<AppliedAll>, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    for action in body.operations.iter().filter_map(admin_only) {
        identity.require(Scope::Admin, action)?;
    }
    if body.operations.is_empty() {
        return Err(ApiError::Unprocessable(
            "operations must not be empty".into(),
        ));
    }
    let handle = handle(&state, &identity, &id).await?;
    super::channel::check_channels(&state, handle.id, &body.operations).await?;
    // The actor records any change of who may see the incident in the audit log, with where it came from.
    let applied = handle
        .apply_from(body.operations.clone(), editor(&identity), from)
        .await?;
    super::channel::channels_changed(&state, &body.operations);
    Ok(Json(AppliedAll { applied }))
}

/// `DELETE /api/incidents/{id}` (admin): removes the document and its history for good.
#[utoipa::path(
    delete,
    path = "/api/incidents/{id}",
    operation_id = "delete_incident",
    tag = "incidents",
    params(IncidentId),
    responses(
        (status = 204, description = "Deleted"),
        ReadRefusals,
    )
)]
async fn delete(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    ClientAddr(from): ClientAddr,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "delete incidents")?;
    let doc_id = parse_id(&id)?;
    // Read before it goes, so the log says what was deleted.
    let summary = state.store.summary(doc_id).await?;
    if state.registry.delete(doc_id).await? {
        let detail = summary.map_or(serde_json::Value::Null, |s| {
            serde_json::json!({"number": s.number, "title": s.title, "status": s.status_name()})
        });
        let event = audit::Event {
            actor: &identity.name,
            action: "incident.deleted",
            target: &doc_id.to_string(),
            detail,
            from,
        };
        audit::record(&*state.store, &state.metrics, event).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
