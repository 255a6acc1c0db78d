//! The command routes: roles, handoffs and pins over HTTP, for bots and tests (the web client makes the same
//! typed operations itself). Identity is the token's name; the command rules (`incident_doc::rules`) decide, so a
//! refusal here is the same refusal a browser or a sync client gets: 403 with the rule's words.

use axum::extract::{Path, State};
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use incident_doc::Operation;
use incident_doc::schema::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use super::incidents::{editor, handle};
use super::{AppState, JsonBody};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/incidents/{id}/roles/{role}", put(assign))
        .route("/api/incidents/{id}/handoffs", post(propose))
        .route("/api/incidents/{id}/handoffs/accept", post(accept))
        .route("/api/incidents/{id}/handoffs/{role}", delete(cancel))
        .route("/api/incidents/{id}/pins", put(pins))
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
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Write, "change the command")?;
    let handle = handle(state, id).await?;
    handle.apply(ops, editor(identity)).await?;
    let view = state
        .reads
        .run_waiting(&handle, |incident| Ok(incident.view()))
        .await?;
    let roles = view
        .field_of_kind(incident_doc::schema::FieldKind::Roles)
        .map(|f| json!(f.value))
        .unwrap_or(Value::Null);
    Ok(Json(json!({
        "roles": roles,
        "handoffs": view.handoffs,
        "pins": view.pins,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Assign {
    /// The person, or `null` to unassign.
    person: Option<String>,
}

/// `PUT /api/incidents/{id}/roles/{role}` `{"person"}`: the commander assigns a role directly (command itself only
/// changes hands by a handoff, or is taken while nobody holds it: the model refuses the rest).
async fn assign(
    identity: Identity,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<Assign>,
) -> Result<Json<Value>, ApiError> {
    let op = Operation::AssignRole {
        role: role(&name)?,
        person: body.person,
    };
    run(&identity, &state, &id, vec![op]).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Propose {
    role: Role,
    to: String,
}

/// `POST /api/incidents/{id}/handoffs` `{"role", "to"}`: propose; nothing changes until `to` accepts.
async fn propose(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Propose>,
) -> Result<Json<Value>, ApiError> {
    let op = Operation::ProposeHandoff {
        role: body.role,
        to: body.to,
    };
    run(&identity, &state, &id, vec![op]).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    role: Role,
}

/// `POST /api/incidents/{id}/handoffs/accept` `{"role"}`: the named recipient takes the role.
async fn accept(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Accept>,
) -> Result<Json<Value>, ApiError> {
    let op = Operation::AcceptHandoff { role: body.role };
    run(&identity, &state, &id, vec![op]).await
}

/// `DELETE /api/incidents/{id}/handoffs/{role}`: withdraw a pending handoff.
async fn cancel(
    identity: Identity,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let op = Operation::CancelHandoff { role: role(&name)? };
    run(&identity, &state, &id, vec![op]).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pins {
    /// The field keys to pin, in order; every other field is unpinned.
    fields: Vec<String>,
}

/// `PUT /api/incidents/{id}/pins` `{"fields": […]}`: the commander sets the pinned fields and their order.
async fn pins(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Pins>,
) -> Result<Json<Value>, ApiError> {
    let handle = handle(&state, &id).await?;
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
