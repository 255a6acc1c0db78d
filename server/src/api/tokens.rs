//! Token routes (admin): list, create, revoke. The same operations as `commandpost token …`, for a running server.
//! And one for writers: the names of the people who may take a role, so that a handoff names someone real.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, JsonBody};
use crate::auth::{self, Identity, Scope};
use crate::error::ApiError;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tokens", get(list).post(create))
        .route("/api/tokens/{name}", delete(revoke))
        .route("/api/people", get(people))
}

/// `GET /api/people` (write) → `{"people": [names]}`: the live tokens that may accept a handoff (write and admin),
/// sorted, so that the page suggests them rather than letting a typo name nobody. Names only: they already appear
/// in every incident's timeline and history; scopes, dates and revoked tokens stay the admins'.
async fn people(
    identity: Identity,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Write, "list the people who may take a role")?;
    let mut names: Vec<String> = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none() && t.scope >= Scope::Write)
        .map(|t| t.name)
        .collect();
    names.sort();
    names.dedup();
    Ok(Json(json!({ "people": names })))
}

/// Body of `POST /api/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// The person's or bot's name.
    name: String,
    /// read, write or admin.
    scope: String,
}

/// `GET /api/tokens`: names, scopes and dates; never the tokens themselves (only hashes are stored).
async fn list(identity: Identity, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Admin, "manage tokens")?;
    let tokens = state.store.list_tokens().await?;
    let rows: Vec<_> = tokens
        .iter()
        .map(|t| json!({"name": t.name, "scope": t.scope.as_str(), "createdAt": t.created_at, "revokedAt": t.revoked_at}))
        .collect();
    Ok(Json(json!({ "tokens": rows })))
}

/// `POST /api/tokens` → 201 `{"name", "scope", "token"}`: the only time the token is shown.
async fn create(
    identity: Identity,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Admin, "manage tokens")?;
    let scope: Scope = body
        .scope
        .parse()
        .map_err(|e: auth::UnknownScope| ApiError::Unprocessable(e.to_string()))?;
    if !auth::valid_token_name(&body.name) {
        return Err(ApiError::Unprocessable(
            "a token name is 1-64 letters, digits or - _ . @, and not the server's own name (commandpost)".into(),
        ));
    }
    let token = auth::new_token();
    state
        .store
        .create_token(&body.name, scope, &auth::hash_token(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": body.name, "scope": scope.as_str(), "token": token})),
    )
        .into_response())
}

/// `DELETE /api/tokens/{name}` → 204; the token stops working at once and its `/sync` connections close.
async fn revoke(
    identity: Identity,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "manage tokens")?;
    if state.store.revoke_token(&name).await? {
        // Its live connections close now; the sweeper would find them within a second anyway.
        state.sync.sessions.revoke_name(&name);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
