//! Token routes (admin): list, create, revoke. The same operations as `commandpost token …`, for a running server.
//! And one for writers: the names of the people who may take a role, so that a handoff names someone real.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, Conflict, ReadRefusals, Refusals, TooLarge, Unprocessable};
use super::{AppState, JsonBody};
use crate::audit::{self, ClientAddr};
use crate::auth::{self, Identity, Scope};
use crate::error::ApiError;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(people))
}

/// The people who may take a role.
#[derive(Serialize, ToSchema)]
struct People {
    /// Token names, sorted.
    people: Vec<String>,
}

/// `GET /api/people` (write) → `{"people": [names]}`: the live tokens and single sign-on sessions that may accept a
/// handoff (write and admin), sorted, so that the page suggests them rather than letting a typo name nobody. Names only: they already appear
/// in every incident's timeline and history; scopes, dates and revoked tokens stay the admins'.
#[utoipa::path(
    get,
    path = "/api/people",
    tag = "tokens",
    responses(
        (status = 200, body = People),
        Refusals,
    )
)]
async fn people(
    identity: Identity,
    State(state): State<AppState>,
) -> Result<Json<People>, ApiError> {
    identity.require(Scope::Write, "list the people who may take a role")?;
    let mut names: Vec<String> = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none() && t.scope >= Scope::Write)
        .map(|t| t.name)
        .collect();
    // People who signed in through single sign-on may take roles too, while their session lasts.
    let now = chrono::Utc::now();
    names.extend(
        state
            .store
            .list_sessions()
            .await?
            .into_iter()
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now && s.scope >= Scope::Write)
            .map(|s| s.name),
    );
    names.sort();
    names.dedup();
    Ok(Json(People { people: names }))
}

/// Body of `POST /api/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// The person's or bot's name: 1-64 letters, digits or `- _ . @`, not `commandpost`.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    /// `read`, `write` or `admin`.
    #[schema(pattern = "^(read|write|admin)$")]
    scope: String,
}

/// The tokens, for admins.
#[derive(Serialize, ToSchema)]
struct Tokens {
    /// Every token ever created, revoked ones too.
    tokens: Vec<TokenRow>,
}

/// One token: never the token itself (only its hash is stored).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokenRow {
    /// The person's or bot's name.
    name: String,
    /// `read`, `write` or `admin`.
    scope: &'static str,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    revoked_at: Option<DateTime<Utc>>,
}

/// `GET /api/tokens` (admin): names, scopes and dates; never the tokens themselves (only hashes are stored).
#[utoipa::path(
    get,
    path = "/api/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    responses(
        (status = 200, body = Tokens),
        Refusals,
    )
)]
async fn list(identity: Identity, State(state): State<AppState>) -> Result<Json<Tokens>, ApiError> {
    identity.require(Scope::Admin, "manage tokens")?;
    let tokens = state.store.list_tokens().await?;
    let tokens = tokens
        .into_iter()
        .map(|t| TokenRow {
            name: t.name,
            scope: t.scope.as_str(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        })
        .collect();
    Ok(Json(Tokens { tokens }))
}

/// A new token.
#[derive(Serialize, ToSchema)]
struct Created {
    /// Its name.
    name: String,
    /// Its scope.
    scope: &'static str,
    /// The token (`cp_…`): shown this once, never again.
    token: String,
}

/// `POST /api/tokens` (admin) → 201 `{"name", "scope", "token"}`: the only time the token is shown.
#[utoipa::path(
    post,
    path = "/api/tokens",
    operation_id = "create_token",
    tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, body = Created),
        (status = 400, response = BadRequest),
        Refusals,
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 422, response = Unprocessable),
    )
)]
async fn create(
    identity: Identity,
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
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
    let event = audit::Event {
        actor: &identity.name,
        action: "token.created",
        target: &body.name,
        detail: serde_json::json!({"scope": scope.as_str()}),
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            name: body.name,
            scope: scope.as_str(),
            token,
        }),
    )
        .into_response())
}

/// A token, by name, in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenName {
    /// The token's name.
    name: String,
}

/// `DELETE /api/tokens/{name}` (admin) → 204; the token stops working at once and its `/sync` connections close.
#[utoipa::path(
    delete,
    path = "/api/tokens/{name}",
    operation_id = "revoke_token",
    tag = "tokens",
    params(TokenName),
    responses(
        (status = 204, description = "Revoked"),
        ReadRefusals,
    )
)]
async fn revoke(
    identity: Identity,
    State(state): State<AppState>,
    Path(TokenName { name }): Path<TokenName>,
    ClientAddr(from): ClientAddr,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "manage tokens")?;
    if state.store.revoke_token(&name).await? {
        // Its live connections close now; the sweeper would find them within a second anyway.
        state.sync.sessions.revoke_name(&name);
        let event = audit::Event {
            actor: &identity.name,
            action: "token.revoked",
            target: &name,
            detail: serde_json::Value::Null,
            from,
        };
        audit::record(&*state.store, &state.metrics, event).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
