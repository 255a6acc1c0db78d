//! `/sync` tickets: how a browser opens its WebSocket without putting its bearer token in the URL.
//!
//! Browsers cannot set headers on a WebSocket, and URLs end up in proxy and access logs. So the page asks
//! `POST /api/sync-ticket` (with `Authorization: Bearer …`, any scope) for a ticket and opens `/sync?ticket=…`: the
//! ticket stands for the token that asked for it, once, for [`TICKET_TTL`]. A logged ticket is worthless: it was
//! spent by the upgrade that logged it, or it has expired.
//!
//! Tickets live in the [`Store`](crate::store::Store), by the hash of the ticket (like tokens), so any node sharing
//! the store accepts a ticket another node issued: the deployment's load balancer needs no sticky sessions. The
//! store hands each ticket out once, even to nodes racing for it; the identity, scope and revocation are read from
//! the token at the upgrade, so a revoked token's unused tickets open nothing.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Forbidden, TooMany, Unauthorized, Unavailable};
use super::{AppState, credential};
use crate::auth::{Identity, hash_token};
use crate::error::ApiError;
use crate::sessions::SESSION_KEY_PREFIX;

/// How long a ticket may wait for its upgrade: a page asks for one right before it connects, so seconds would do;
/// 30 s leaves room for a slow network and for clocks of nodes sharing a store that differ by a few seconds.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(issue))
}

/// A ticket for one `/sync` upgrade.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Ticket {
    /// Open `/sync?ticket=…` with it, once.
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

/// `POST /api/sync-ticket` (any scope): `{"ticket", "expiresIn"}` (seconds) for the token in the `Authorization`
/// header, or the signed-in session of the cookie (from the server's own pages only). It takes no body.
#[utoipa::path(
    post,
    path = "/api/sync-ticket",
    tag = "sync",
    responses(
        (status = 200, body = Ticket),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooMany),
        (status = 503, response = Unavailable),
    )
)]
async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Ticket>, ApiError> {
    // Any scope: a read token syncs read-only, and the upgrade applies the token's scope.
    let (_, key) = credential(&state, &headers, true).await?;
    let ticket = new_ticket();
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::from_std(TICKET_TTL).map_err(|_| ApiError::Internal)?;
    // As many unused tickets as the token may hold connections: enough for every page of a shared token to
    // reconnect at once, and a bound on what a looping (or leaked read) token can make the server write.
    let limit = state.sync.limits.max_connections_per_token;
    let created = state
        .store
        .create_ticket(&hash_token(&ticket), &key, now, now + ttl, limit)
        .await?;
    if !created {
        state.metrics.rejected_connections.inc();
        return Err(ApiError::TooMany(format!(
            "this token already holds {limit} unused sync tickets, the limit; they expire within {} s",
            TICKET_TTL.as_secs()
        )));
    }
    Ok(Json(Ticket {
        ticket,
        expires_in: TICKET_TTL.as_secs(),
    }))
}

/// Spends `ticket` and returns who it stands for, with its credential's key (under which the connection registers,
/// so the per-token connection cap counts it and revoking the token or ending the session closes it). Unknown, spent and expired
/// tickets, and tickets of a token revoked since, are all the same 401.
pub(super) async fn redeem(state: &AppState, ticket: &str) -> Result<(Identity, String), ApiError> {
    let now = chrono::Utc::now();
    let key = state
        .store
        .take_ticket(&hash_token(ticket), now)
        .await?
        .ok_or(ApiError::InvalidTicket)?;
    if let Some(session) = key.strip_prefix(SESSION_KEY_PREFIX) {
        let Some(sso) = &state.sso else {
            return Err(ApiError::InvalidTicket);
        };
        return match sso.session(&*state.store, session).await? {
            Some(record) => Ok((
                Identity {
                    name: record.name,
                    scope: record.scope,
                    session: Some(record.id),
                },
                key,
            )),
            None => Err(ApiError::InvalidTicket),
        };
    }
    match state.store.token_by_hash(&key).await? {
        Some(record) if record.revoked_at.is_none() => Ok((
            Identity {
                name: record.name,
                scope: record.scope,
                session: None,
            },
            key,
        )),
        _ => Err(ApiError::InvalidTicket),
    }
}

/// A new ticket: 256 random bits, so it cannot be guessed within its lifetime; only its hash is stored.
fn new_ticket() -> String {
    crate::auth::random_secret("cpt_")
}
