//! The Communications lead's status update: `GET /api/incidents/{id}/update` renders it, `POST …/update/sent`
//! records that it went out (see `incident_doc::update`).

use automerge::ChangeHash;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use incident_doc::Operation;
use incident_doc::update::{UpdateFormat, status_update};
use serde::Deserialize;
use serde_json::json;

use super::incidents::{editor, handle};
use super::{AppState, JsonBody, QueryParams};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::export;

/// The response header listing the heads (comma-separated hex) an update describes; pass them back when marking
/// it sent, so the next update's "what changed" starts exactly where this one ended.
pub const HEADS_HEADER: &str = "commandpost-heads";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/incidents/{id}/update", get(render))
        .route("/api/incidents/{id}/update/sent", post(mark_sent))
}

/// Query of the update route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateQuery {
    /// `text` (default) or `markdown`.
    format: Option<String>,
}

/// `GET /api/incidents/{id}/update?format=text|markdown`: the update, ready to paste.
async fn render(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
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
    let handle = handle(&state, &id).await?;
    let now = Utc::now();
    let (body, heads) = state
        .reads
        .run(&handle, move |incident| {
            let view = incident.view();
            let last = incident.last_update();
            let then = match &last {
                Some(last) => {
                    // Heads recorded with the update, else the document as it was when it was marked sent.
                    let heads = if !last.heads.is_empty() && incident.has_heads(&last.heads) {
                        Some(last.heads.clone())
                    } else {
                        incident.heads_at(last.at)
                    };
                    Some(match heads {
                        Some(heads) => export::fork_at(incident, &heads)?.view(),
                        None => view.clone(),
                    })
                }
                None => None,
            };
            let before = last.as_ref().zip(then.as_ref());
            let body = status_update(&view, before, now, format);
            Ok((body, incident.head_strings().join(",")))
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
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Sent {
    /// The heads the update described (the `Commandpost-Heads` header of the GET); now when absent.
    #[serde(default)]
    heads: Option<Vec<String>>,
    /// Where it went, for the timeline (`to status-updates@example.com`).
    #[serde(default)]
    note: Option<String>,
}

/// `POST /api/incidents/{id}/update/sent` → 201 `{"id", "at"}`: the timeline records the update and the
/// Communications lead's cadence starts again.
async fn mark_sent(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Sent>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &id).await?;
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
    Ok((StatusCode::CREATED, Json(json!({"id": entry, "at": at}))).into_response())
}
