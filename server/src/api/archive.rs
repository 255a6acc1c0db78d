//! The incident as evidence: its change history, and reopening a closed incident. (Point-in-time reads, `at=` on
//! exports, are the export module's.)
//!
//! A closed incident is archived: the model refuses every typed edit but a reopening (`Incident::apply_all`), and
//! this module turns that refusal into 409. Reopening is an admin's decision, recorded in the timeline.

use axum::Json;
use axum::extract::{Path, State};
use incident_doc::Operation;
use incident_doc::schema::Status;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::incidents::{IncidentId, editor, handle};
use super::openapi::{ReadRefusals, Unprocessable, WriteRefusals};
use super::{AppState, JsonBody, QueryParams};
use crate::audit::{self, ClientAddr};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;

/// Largest history page, so one request cannot ask the server to describe a huge document at once.
const MAX_PAGE: usize = 1000;

/// History page size when the caller names none.
const DEFAULT_PAGE: usize = 100;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(history))
        .routes(routes!(reopen))
}

/// Query of the history route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// The position of the first change (0: the creation).
    #[serde(default)]
    offset: usize,
    /// How many changes (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /api/incidents/{id}/history[?offset=&limit=]` (read): the changes oldest first, `{total, offset, changes,
/// next}` where `next` is the offset of the following page or `null`.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/history",
    tag = "archive",
    params(IncidentId, HistoryQuery),
    responses(
        (status = 200, description = "`{total, offset, changes, next}`: each change with its author, time, operations and the fields it touched (docs/schema.md)", body = Object),
        (status = 422, response = Unprocessable),
        ReadRefusals,
    )
)]
async fn history(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    query: Result<QueryParams<HistoryQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let QueryParams(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let offset = query.offset;
    let handle = handle(&state, &identity, &id).await?;
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Reopen {
    /// Why; recorded in the timeline.
    reason: String,
    /// The state to reopen into (default `resolved`).
    #[serde(default)]
    status: Option<Status>,
}

/// What a reopening answers.
#[derive(Serialize, ToSchema)]
struct Reopened {
    /// The state the incident is in now.
    status: Status,
    /// The id of the timeline entry recording the reopening.
    entry: Option<String>,
}

/// `POST /api/incidents/{id}/reopen` (admin) → 200 `{status, entry}` once durable; 409 if it is not closed.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/reopen",
    tag = "archive",
    params(IncidentId),
    request_body = Reopen,
    responses(
        (status = 200, description = "Reopened and durable", body = Reopened),
        WriteRefusals,
    )
)]
async fn reopen(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    ClientAddr(from): ClientAddr,
    JsonBody(body): JsonBody<Reopen>,
) -> Result<Json<Reopened>, ApiError> {
    identity.require(Scope::Admin, "reopen incidents")?;
    let status = body.status.unwrap_or(Status::Resolved);
    let detail = serde_json::json!({"reason": body.reason, "status": status});
    let op = Operation::Reopen {
        reason: body.reason,
        status: Some(status),
    };
    let handle = handle(&state, &identity, &id).await?;
    let applied = handle.apply(vec![op], editor(&identity)).await?;
    let event = audit::Event {
        actor: &identity.name,
        action: "incident.reopened",
        target: &handle.id.to_string(),
        detail,
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    let entry = applied.into_iter().next().and_then(|a| a.id);
    Ok(Json(Reopened { status, entry }))
}
