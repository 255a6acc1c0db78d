//! The command routes: roles, handoffs and pins over HTTP, for bots and tests (the web client makes the same
//! typed operations itself). Identity is the token's name; the command rules (`incident_doc::rules`) decide, so a
//! refusal here is the same refusal a browser or a sync client gets: 403 with the rule's words.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use incident_doc::schema::Role;
use incident_doc::{Handoff, Operation, Pin};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::incidents::{IncidentId, editor, handle};
use super::openapi::{Conflict, ReadRefusals, Unprocessable, WriteRefusals};
use super::{AppState, JsonBody};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(assign))
        .routes(routes!(propose))
        .routes(routes!(accept))
        .routes(routes!(cancel))
        .routes(routes!(pins))
}

/// An incident and one of its roles, in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct IncidentRole {
    /// The incident's id.
    id: String,
    /// The role; any other name is 422.
    #[param(value_type = Role)]
    role: String,
}

/// The incident's command state after the change.
#[derive(Serialize, ToSchema)]
struct CommandState {
    /// Role → the person holding it (a token name), or `null`.
    #[schema(value_type = Object)]
    roles: Value,
    /// Pending handoffs by role.
    handoffs: BTreeMap<Role, Handoff>,
    /// The pinned fields, in order.
    pins: Vec<Pin>,
}

/// The role in a path, or a 422 naming the roles there are (as an unknown role in a body is).
fn role(name: &str) -> Result<Role, ApiError> {
    name.parse().map_err(|()| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::Unprocessable(format!(
            "unknown role {name:?} (expected one of {})",
            known.join(", ")
        ))
    })
}

/// Applies `ops` as the caller, all or nothing, once durable; answers the incident's command state.
async fn run(
    identity: &Identity,
    state: &AppState,
    id: &str,
    ops: Vec<Operation>,
) -> Result<Json<CommandState>, ApiError> {
    identity.require(Scope::Write, "change the command")?;
    let handle = handle(state, identity, id).await?;
    handle.apply(ops, editor(identity)).await?;
    let view = state
        .reads
        .run_waiting(&handle, |incident| Ok(incident.view()))
        .await?;
    let roles = view
        .field_of_kind(incident_doc::schema::FieldKind::Roles)
        .map(|f| serde_json::to_value(&f.value).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(Json(CommandState {
        roles,
        handoffs: view.handoffs,
        pins: view.pins,
    }))
}

/// Body of `PUT /api/incidents/{id}/roles/{role}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Assign {
    /// The person, or `null` to unassign.
    person: Option<String>,
}

/// `PUT /api/incidents/{id}/roles/{role}` `{"person"}` (write): the commander assigns a role directly (command
/// itself only changes hands by a handoff, or is taken while nobody holds it: the model refuses the rest).
#[utoipa::path(
    put,
    path = "/api/incidents/{id}/roles/{role}",
    tag = "command",
    params(IncidentRole),
    request_body = Assign,
    responses(
        (status = 200, body = CommandState),
        WriteRefusals,
    )
)]
async fn assign(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentRole { id, role: name }): Path<IncidentRole>,
    JsonBody(body): JsonBody<Assign>,
) -> Result<Json<CommandState>, ApiError> {
    let op = Operation::AssignRole {
        role: role(&name)?,
        person: body.person,
    };
    run(&identity, &state, &id, vec![op]).await
}

/// Body of `POST /api/incidents/{id}/handoffs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Propose {
    /// The role handed over.
    role: Role,
    /// The person (a token name) who is to take it.
    to: String,
}

/// `POST /api/incidents/{id}/handoffs` `{"role", "to"}` (write): propose; nothing changes until `to` accepts.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/handoffs",
    tag = "command",
    params(IncidentId),
    request_body = Propose,
    responses(
        (status = 200, body = CommandState),
        WriteRefusals,
    )
)]
async fn propose(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<Propose>,
) -> Result<Json<CommandState>, ApiError> {
    let op = Operation::ProposeHandoff {
        role: body.role,
        to: body.to,
    };
    run(&identity, &state, &id, vec![op]).await
}

/// Body of `POST /api/incidents/{id}/handoffs/accept`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Accept {
    /// The role proposed to the caller.
    role: Role,
}

/// `POST /api/incidents/{id}/handoffs/accept` `{"role"}` (write): the named recipient takes the role.
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/handoffs/accept",
    tag = "command",
    params(IncidentId),
    request_body = Accept,
    responses(
        (status = 200, body = CommandState),
        WriteRefusals,
    )
)]
async fn accept(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<Accept>,
) -> Result<Json<CommandState>, ApiError> {
    let op = Operation::AcceptHandoff { role: body.role };
    run(&identity, &state, &id, vec![op]).await
}

/// `DELETE /api/incidents/{id}/handoffs/{role}` (write): withdraw a pending handoff.
#[utoipa::path(
    delete,
    path = "/api/incidents/{id}/handoffs/{role}",
    tag = "command",
    params(IncidentRole),
    responses(
        (status = 200, body = CommandState),
        ReadRefusals,
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
    )
)]
async fn cancel(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentRole { id, role: name }): Path<IncidentRole>,
) -> Result<Json<CommandState>, ApiError> {
    let op = Operation::CancelHandoff { role: role(&name)? };
    run(&identity, &state, &id, vec![op]).await
}

/// Body of `PUT /api/incidents/{id}/pins`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Pins {
    /// The field keys to pin, in order; every other field is unpinned.
    fields: Vec<String>,
}

/// `PUT /api/incidents/{id}/pins` `{"fields": […]}` (write): the commander sets the pinned fields and their order.
#[utoipa::path(
    put,
    path = "/api/incidents/{id}/pins",
    tag = "command",
    params(IncidentId),
    request_body = Pins,
    responses(
        (status = 200, body = CommandState),
        WriteRefusals,
    )
)]
async fn pins(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<Pins>,
) -> Result<Json<CommandState>, ApiError> {
    let handle = handle(&state, &identity, &id).await?;
    let current: Vec<String> = state
        .reads
        .run_waiting(&handle, |incident| {
            Ok(incident.view().pins.into_iter().map(|p| p.field).collect())
        })
        .await?;
    // Unpin everything, then pin in the order given: one change, so the order is exactly the one asked for.
    let ops = current
        .into_iter()
        .map(|field| Operation::Unpin { field })
        .chain(
            body.fields
                .into_iter()
                .map(|field| Operation::Pin { field }),
        )
        .collect();
    run(&identity, &state, &id, ops).await
}
