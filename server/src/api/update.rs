//! The Communications lead's status update: `GET /api/incidents/{id}/update` renders it, `POST …/update/sent`
//! records that it went out (see `incident_doc::update`).

use automerge::ChangeHash;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use incident_doc::Operation;
use incident_doc::update::UpdateFormat;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::incidents::{IncidentId, editor, handle};
use super::openapi::{ReadRefusals, Unprocessable, WriteRefusals};
use super::{AppState, JsonBody, QueryParams};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::export;

/// The response header listing the heads (comma-separated hex) an update describes; pass them back when marking
/// it sent, so the next update's "what changed" starts exactly where this one ended.
pub const HEADS_HEADER: &str = "commandpost-heads";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(render))
        .routes(routes!(mark_sent))
}

/// Query of the update route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UpdateQuery {
    /// `text` (default) or `markdown`.
    #[param(pattern = "^(text|markdown)$")]
    format: Option<String>,
}

/// `GET /api/incidents/{id}/update?format=text|markdown` (read): the update, ready to paste.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/update",
    tag = "update",
    params(IncidentId, UpdateQuery),
    responses(
        (status = 200, description = "The status update: what changed since the last one sent, then the state now",
            content((String = "text/plain"), (String = "text/markdown")),
            headers(("commandpost-heads" = String, description = "The heads it describes (comma-separated hex), for `POST …/update/sent`"))),
        (status = 422, response = Unprocessable),
        ReadRefusals,
    )
)]
async fn render(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    query: Result<QueryParams<UpdateQuery>, ApiError>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let QueryParams(query) = query?;
    let (format, content_type) = match query.format.as_deref().unwrap_or("text") {
        "text" => (UpdateFormat::Text, "text/plain; charset=utf-8"),
        "markdown" => (UpdateFormat::Markdown, "text/markdown; charset=utf-8"),
        other => {
            return Err(ApiError::Unprocessable(format!(
                "unknown format {other:?} (expected text or markdown)"
            )));
        }
    };
    let handle = handle(&state, &identity, &id).await?;
    let now = Utc::now();
    let (body, heads) = state
        .reads
        .run(&handle, move |incident| {
            Ok(export::status_update(incident, now, format)?)
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::HeaderName::from_static(HEADS_HEADER), heads),
        ],
        body,
    )
        .into_response())
}

/// Body of `POST /api/incidents/{id}/update/sent`; both fields are optional.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct Sent {
    /// The heads the update described (the `Commandpost-Heads` header of the GET); now when absent.
    #[serde(default)]
    heads: Option<Vec<String>>,
    /// Where it went, for the timeline (`to status-updates@example.com`).
    #[serde(default)]
    note: Option<String>,
}

/// What marking an update sent answers.
#[derive(Serialize, ToSchema)]
struct MarkedSent {
    /// The id of the timeline entry recording it.
    id: Option<String>,
    /// When it was recorded as sent.
    at: DateTime<Utc>,
}

/// `POST /api/incidents/{id}/update/sent` (write) → 201 `{"id", "at"}`: the timeline records the update and the
/// Communications lead's cadence starts again.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/update/sent",
    tag = "update",
    params(IncidentId),
    request_body = Sent,
    responses(
        (status = 201, description = "Recorded and durable", body = MarkedSent),
        WriteRefusals,
    )
)]
async fn mark_sent(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<Sent>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let heads = match body.heads {
        Some(heads) => {
            let parsed: Vec<ChangeHash> = heads
                .iter()
                .map(|h| {
                    h.parse().map_err(|_| {
                        ApiError::Unprocessable(format!("{h:?} is not a document head"))
                    })
                })
                .collect::<Result<_, _>>()?;
            // Cheap (a lookup per head), so it runs in the actor, ordered after every edit queued before it.
            let known = handle
                .read(move |incident| incident.has_heads(&parsed))
                .await?;
            if !known {
                return Err(ApiError::Unprocessable(
                    "the heads are not this incident's (take them from the update's Commandpost-Heads header)"
                        .into(),
                ));
            }
            heads
        }
        None => handle.read(|incident| incident.head_strings()).await?,
    };
    let editor = editor(&identity);
    let at = editor.at;
    let applied = handle
        .apply(
            vec![Operation::MarkUpdateSent {
                heads,
                note: body.note,
            }],
            editor,
        )
        .await?;
    let entry = applied.into_iter().next().and_then(|a| a.id);
    Ok((StatusCode::CREATED, Json(MarkedSent { id: entry, at })).into_response())
}
