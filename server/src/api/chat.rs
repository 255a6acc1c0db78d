//! The incident's chat channel over HTTP: binding and unbinding it (the commander or an administrator, by the
//! command rules, as the `bindChannel`/`unbindChannel` operations), and reading its log (`GET …/chat`, newest
//! first, paged, with the incident's visibility: a restricted incident's log answers its non-members 404 like
//! the incident).
//!
//! One open incident per channel: binding a channel another open incident holds is refused with 409 here and in
//! `POST …/operations` (`channel.rs`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use incident_doc::Operation;
use incident_doc::channel::{Channel, Network};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::channel::{channels_changed, check_channels};
use super::incidents::{IncidentId, editor, handle};
use super::openapi::{ReadRefusals, Unprocessable, WriteRefusals};
use super::{AppState, JsonBody, QueryParams};
use crate::audit::ClientAddr;
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::store::chat_log::ChatLine;

/// Largest log page.
const MAX_PAGE: usize = 500;

/// Log page size when the caller names none.
const DEFAULT_PAGE: usize = 100;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(bind, unbind))
        .routes(routes!(log))
}

/// Body of `PUT /api/incidents/{id}/channel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BindBody {
    /// `irc` or `slack`.
    network: Network,
    /// IRC: the channel (`#inc-465-checkout`); Slack: the channel's name.
    #[schema(max_length = 80)]
    name: String,
    /// Slack: the channel id (`C0123ABCD`); absent on IRC.
    #[serde(default)]
    id: Option<String>,
}

/// `PUT /api/incidents/{id}/channel` (write; the commander or an admin by the command rules) → 200 the channel:
/// binds the incident to it, with a timeline entry; the bots join it and log its lines with the incident.
#[utoipa::path(
    put,
    path = "/api/incidents/{id}/channel",
    tag = "chat",
    params(IncidentId),
    request_body = BindBody,
    responses(
        (status = 200, description = "Bound and durable", body = Channel),
        WriteRefusals,
    )
)]
async fn bind(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    ClientAddr(from): ClientAddr,
    JsonBody(body): JsonBody<BindBody>,
) -> Result<Json<Channel>, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let ops = vec![Operation::BindChannel {
        network: body.network,
        name: body.name,
        id: body.id,
    }];
    check_channels(&state, handle.id, &ops).await?;
    handle
        .apply_from(ops.clone(), editor(&identity), from)
        .await?;
    channels_changed(&state, &ops);
    let channel = handle.read(|incident| incident.channel()).await?;
    channel
        .map(Json)
        .ok_or_else(|| ApiError::Conflict("the channel was unbound meanwhile".into()))
}

/// `DELETE /api/incidents/{id}/channel` (write; the commander or an admin) → 204: unbinds the channel, with a
/// timeline entry; the bots stop logging it (its log so far stays with the incident).
#[utoipa::path(
    delete,
    path = "/api/incidents/{id}/channel",
    tag = "chat",
    params(IncidentId),
    responses(
        (status = 204, description = "Unbound (or none was bound) and durable"),
        WriteRefusals,
    )
)]
async fn unbind(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    ClientAddr(from): ClientAddr,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Write, "edit incidents")?;
    let handle = handle(&state, &identity, &id).await?;
    let ops = vec![Operation::UnbindChannel {}];
    handle
        .apply_from(ops.clone(), editor(&identity), from)
        .await?;
    channels_changed(&state, &ops);
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the log route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Only lines logged before this line id (the `next` of the previous page).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// How many lines (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A page of the channel log.
#[derive(Serialize, ToSchema)]
struct ChatLog {
    /// The channel bound to the incident now, if any.
    channel: Option<Channel>,
    /// The lines, newest first.
    lines: Vec<ChatLine>,
    /// The `before` of the next (older) page, or `null` at the start of the log.
    next: Option<i64>,
}

/// `GET /api/incidents/{id}/chat[?before=&limit=]` (read) → `{channel, lines, next}`: the bound channel and its
/// log, newest first.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/chat",
    tag = "chat",
    params(IncidentId, LogQuery),
    responses(
        (status = 200, description = "A page of the log, newest first", body = ChatLog),
        (status = 422, response = Unprocessable),
        ReadRefusals,
    )
)]
async fn log(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    query: Result<QueryParams<LogQuery>, ApiError>,
) -> Result<Json<ChatLog>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let QueryParams(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    if query.before.is_some_and(|b| b < 1) {
        return Err(ApiError::Unprocessable(
            "before must be a line id (1 or more)".into(),
        ));
    }
    let handle = handle(&state, &identity, &id).await?;
    let lines = state.store.chat_log(handle.id, query.before, limit).await?;
    let next = (lines.len() == limit)
        .then(|| lines.last().map(|l| l.id))
        .flatten();
    let channel = state
        .store
        .summary(handle.id)
        .await?
        .and_then(|s| s.channel);
    Ok(Json(ChatLog {
        channel,
        lines,
        next,
    }))
}
