//! The incident as evidence: its change history, point-in-time reads (`at=` on exports) and reopening a closed
//! incident.
//!
//! A closed incident is archived: the model refuses every typed edit but a reopening (`Incident::apply_all`), and
//! this module turns that refusal into 409. Reopening is an admin's decision, recorded in the timeline.

use automerge::ChangeHash;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use incident_doc::schema::Status;
use incident_doc::{Incident, Operation, export};
use serde::Deserialize;
use serde_json::{Value, json};

use super::incidents::{editor, handle, with_ids};
use super::{AppState, JsonBody};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::wire::DocumentId;

/// Largest history page, so one request cannot ask the server to describe a huge document at once.
const MAX_PAGE: usize = 1000;

/// History page size when the caller names none.
const DEFAULT_PAGE: usize = 100;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/incidents/{id}/history", get(history))
        .route("/api/incidents/{id}/reopen", post(reopen))
}

/// Parses the `at=` of an export: an RFC 3339 time, or 400 saying what is expected.
pub(super) fn parse_at(at: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "at={at:?} is not an RFC 3339 time such as 2026-11-25T04:00:00Z ({e})"
            ))
        })
}

/// The heads of the document at `at` (`None`: now), or 422 when the incident did not exist yet.
fn heads_at(
    incident: &mut Incident,
    at: Option<DateTime<Utc>>,
) -> Result<Option<Vec<ChangeHash>>, ApiError> {
    let Some(at) = at else {
        return Ok(None);
    };
    match incident.heads_at(at) {
        Some(heads) => Ok(Some(heads)),
        None => {
            let declared = incident
                .view()
                .headline
                .created_at
                .map(|c| format!(" (it was declared at {})", c.to_rfc3339()))
                .unwrap_or_default();
            Err(ApiError::Unprocessable(format!(
                "the incident did not exist yet at {}{declared}",
                at.to_rfc3339()
            )))
        }
    }
}

/// The document as it was at `heads`, as an incident of its own: every read of it is then a read of the present.
///
/// Reading the document itself at past heads makes Automerge build a clock for every lookup, walking the history
/// back from `heads` until it meets a change whose clock it cached; a writer that never merges the others' changes
/// leaves no such change on its branch, and a view at past heads then walks that whole branch once per lookup
/// (300 ms instead of 19 for 5,000 changes). The fork costs one walk whatever the history's shape (47 ms there,
/// BENCHMARKS.md).
pub(crate) fn fork_at(incident: &mut Incident, heads: &[ChangeHash]) -> Result<Incident, ApiError> {
    let doc = incident.doc_mut().fork_at(heads).map_err(|e| {
        tracing::error!(error = %e, "forking a document at its own heads");
        ApiError::Internal
    })?;
    let mut past = Incident::empty(None);
    *past.doc_mut() = doc;
    Ok(past)
}

/// Renders incident `id` (as it was at `at`, or now) in `format`: markdown, html, postmortem, automerge or json
/// (the read model with the id and URL). Runs on a snapshot off the document actor, or on a document the CLI
/// loaded.
pub(crate) fn render(
    incident: &mut Incident,
    id: DocumentId,
    format: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Vec<u8>, ApiError> {
    let mut past;
    let incident = match heads_at(incident, at)? {
        Some(heads) => {
            past = fork_at(incident, &heads)?;
            &mut past
        }
        None => incident,
    };
    if format == "automerge" {
        return Ok(incident.save());
    }
    let view = incident.view();
    Ok(match format {
        "json" => {
            let mut text = serde_json::to_string_pretty(&with_ids(id, &view))
                .map_err(|_| ApiError::Internal)?;
            text.push('\n');
            text.into_bytes()
        }
        "html" => export::html(&view).into_bytes(),
        "postmortem" => export::postmortem(&view, &incident.record(None)).into_bytes(),
        _ => export::markdown(&view).into_bytes(),
    })
}

/// Query of the history route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// The position of the first change (0: the creation).
    #[serde(default)]
    offset: usize,
    /// How many changes, at most [`MAX_PAGE`].
    limit: Option<usize>,
}

/// `GET /api/incidents/{id}/history[?offset=&limit=]`: the changes oldest first, `{total, offset, changes, next}`
/// where `next` is the offset of the following page or `null`.
async fn history(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let offset = query.offset;
    let handle = handle(&state, &id).await?;
    let page = state
        .reads
        .run(&handle, move |incident| Ok(incident.history(offset, limit)))
        .await?;
    let end = page.offset + page.changes.len();
    let next = (end < page.total).then_some(end);
    let mut body = serde_json::to_value(&page).map_err(|_| ApiError::Internal)?;
    if let Some(map) = body.as_object_mut() {
        map.insert("next".into(), json!(next));
    }
    Ok(Json(body))
}

/// Body of `POST /api/incidents/{id}/reopen`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reopen {
    /// Why; recorded in the timeline.
    reason: String,
    /// The state to reopen into (default `resolved`).
    #[serde(default)]
    status: Option<Status>,
}

/// `POST /api/incidents/{id}/reopen` (admin) → 200 `{status, entry}` once durable; 409 if it is not closed.
async fn reopen(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Reopen>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Admin, "reopen incidents")?;
    let status = body.status.unwrap_or(Status::Resolved);
    let op = Operation::Reopen {
        reason: body.reason,
        status: Some(status),
    };
    let applied = handle(&state, &id)
        .await?
        .apply(vec![op], editor(&identity))
        .await?;
    let entry = applied.into_iter().next().and_then(|a| a.id);
    Ok(Json(json!({"status": status, "entry": entry})))
}
