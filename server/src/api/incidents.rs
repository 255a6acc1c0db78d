//! Incident routes: declare, list, read, export (now or at a past moment), append to the timeline, apply typed
//! operations, delete.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use incident_doc::{Declaration, Editor, Incident, Operation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, JsonBody, QueryParams, severity_filter, status_filter};
use crate::auth::{Identity, Scope};
use crate::document::{Command, DocHandle};
use crate::error::ApiError;
use crate::export::{self, Format};
use crate::input::parse_incident;
use crate::store::{IncidentSummary, ListFilter};
use crate::templates::Catalog;
use wire::DocumentId;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/incidents", post(declare).get(list))
        .route("/api/incidents/{id}", get(read).delete(delete))
        .route("/api/incidents/{id}/export", get(export_doc))
        .route("/api/incidents/{id}/timeline", post(append_timeline))
        .route("/api/incidents/{id}/operations", post(operations))
}

/// Body of `POST /api/incidents`. Anyone on call with a write token can declare, at once.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Declare {
    /// Template id; the default template when absent.
    #[serde(default)]
    template: Option<String>,
    /// The incident's name; the title becomes `<name>: <date>`.
    title: String,
    /// The three declaration answers, when given.
    #[serde(default)]
    second_team: Option<bool>,
    #[serde(default)]
    customer_visible: Option<bool>,
    #[serde(default)]
    unsolved_after_hour: Option<bool>,
    /// Starting severity, when known.
    #[serde(default)]
    severity: Option<String>,
    /// Starting summary, when known.
    #[serde(default)]
    summary: Option<String>,
}

fn parse_id(id: &str) -> Result<DocumentId, ApiError> {
    parse_incident(id).ok_or(ApiError::NotFound)
}

pub(super) async fn handle(state: &AppState, id: &str) -> Result<DocHandle, ApiError> {
    let id = parse_id(id)?;
    state.registry.get(id).await?.ok_or(ApiError::NotFound)
}

pub(super) fn editor(identity: &Identity) -> Editor {
    Editor::new(identity.name.clone(), Utc::now()).with_admin(identity.scope == Scope::Admin)
}

/// `POST /api/incidents` → 201 with the new incident's id and `automerge:` URL. The 201 means it is durable.
async fn declare(
    identity: Identity,
    State(state): State<AppState>,
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
    let editor = editor(&identity);
    // A refused declaration after this point leaves a gap in the numbers, which the store allows.
    let number = state.store.next_incident_number().await?;
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
    let id = DocumentId::random();
    state.registry.create(id, incident).await?;
    let location = format!("/api/incidents/{id}");
    let body = json!({
        "id": id.to_string(),
        "url": id.url(),
        "number": number,
        "title": view.headline.title,
        "template": view.headline.template,
        "status": view.headline.status,
        "severity": view.headline.severity,
    });
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Query of `GET /api/incidents`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only incidents in this lifecycle state.
    status: Option<String>,
    /// Only incidents of this severity (as the template names it, e.g. `SEV1`).
    severity: Option<String>,
    /// At most this many, newest first.
    limit: Option<usize>,
}

/// A row of the list; `templates` tell drills apart (the drill flag comes from the template, and the index keeps
/// the template id).
fn list_row(s: &IncidentSummary, templates: &Catalog) -> Value {
    json!({
        "id": s.id,
        "url": s.id.url(),
        "number": s.number,
        "title": s.title,
        "template": s.template,
        "drill": templates.get(&s.template).is_some_and(|t| t.template.drill),
        "status": s.status_name(),
        "severity": s.severity,
        "commander": s.commander,
        "createdAt": s.created_at,
        "updatedAt": s.updated_at,
    })
}

/// `GET /api/incidents[?status=…&severity=…&limit=…]`: newest first.
async fn list(
    identity: Identity,
    State(state): State<AppState>,
    query: Result<QueryParams<ListQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
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
        })
        .await?;
    Ok(Json(
        json!({"incidents": rows.iter().map(|row| list_row(row, &templates)).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/incidents/{id}`: the JSON export plus id and URL.
async fn read(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let handle = handle(&state, &id).await?;
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

/// Query of the export route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// markdown, html, json, automerge or postmortem.
    format: Option<String>,
    /// An RFC 3339 time: the document as it was then.
    at: Option<String>,
}

/// `GET /api/incidents/{id}/export?format=markdown|html|json|automerge|postmortem[&at=<RFC 3339>]`.
async fn export_doc(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<QueryParams<ExportQuery>, ApiError>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Read, "export incidents")?;
    let QueryParams(query) = query?;
    let format = match &query.format {
        Some(name) => name.parse::<Format>()?,
        None => Format::Markdown,
    };
    let at = query.at.as_deref().map(parse_at).transpose()?;
    let handle = handle(&state, &id).await?;
    let doc_id = handle.id;
    let body = state
        .reads
        .run(&handle, move |incident| {
            Ok(export::render(incident, doc_id, format, at)?)
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineEntry {
    /// What happened (Markdown).
    text: String,
    /// When it happened, if not now.
    #[serde(default)]
    at: Option<DateTime<Utc>>,
}

/// `POST /api/incidents/{id}/timeline` → 201 `{"id"}`; author = the token's name. The 201 means it is durable.
async fn append_timeline(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TimelineEntry>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &id).await?;
    let op = Operation::AddTimelineEntry {
        text: body.text,
        at: body.at,
    };
    let applied = handle.apply(vec![op], editor(&identity)).await?;
    let entry = applied.into_iter().next().and_then(|a| a.id);
    Ok((StatusCode::CREATED, Json(json!({"id": entry}))).into_response())
}

/// Body of `POST /api/incidents/{id}/operations`: typed edits applied all together or not at all.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Operations {
    /// The edits, in order (see `incident_doc::Operation` for their JSON form).
    operations: Vec<Operation>,
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

/// `POST /api/incidents/{id}/operations` → 200 `{"applied": [{"id"}…]}` once durable.
async fn operations(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Operations>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    for action in body.operations.iter().filter_map(admin_only) {
        identity.require(Scope::Admin, action)?;
    }
    if body.operations.is_empty() {
        return Err(ApiError::Unprocessable(
            "operations must not be empty".into(),
        ));
    }
    let handle = handle(&state, &id).await?;
    let applied = handle.apply(body.operations, editor(&identity)).await?;
    Ok(Json(json!({ "applied": applied })))
}

/// `DELETE /api/incidents/{id}` (admin): removes the document and its history for good.
async fn delete(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "delete incidents")?;
    let doc_id = parse_id(&id)?;
    if let Some(handle) = state.registry.evict(doc_id) {
        let _ = handle.send(Command::Close).await;
    }
    if state.store.delete(doc_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
