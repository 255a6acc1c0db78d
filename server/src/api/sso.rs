//! Single sign-on routes: what the sign-in page offers, the two legs of the OpenID Connect flow (`/auth/oidc/…`,
//! browser navigations answered with redirects or a plain page that says why a sign-in was refused), signing out,
//! and admins' list and revocation of sessions. The flow and sessions themselves are `sso.rs`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use incident_doc::export::escape_html as escape;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{ReadRefusals, Refusals, Unprocessable};
use super::{AppState, QueryParams, registry_name};
use crate::audit::{self, ClientAddr};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::sso::{Refusal, STATE_COOKIE, cookie_value};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(providers))
        .routes(routes!(login))
        .routes(routes!(callback))
        .routes(routes!(sign_out))
        .routes(routes!(list))
        .routes(routes!(revoke))
}

/// The ways to sign in besides a token.
#[derive(Serialize, ToSchema)]
struct Providers {
    /// The OpenID Connect provider, when single sign-on is configured.
    oidc: Option<Provider>,
}

/// A provider the sign-in page offers.
#[derive(Serialize, ToSchema)]
struct Provider {
    /// Its name, for "Sign in with …".
    name: String,
    /// Where the browser goes to start signing in (add `?next=/path` to land there afterwards).
    login: &'static str,
}

/// `GET /api/auth/providers` (no token): `{"oidc": {"name", "login"}}` when single sign-on is configured,
/// `{"oidc": null}` otherwise, so the sign-in page knows whether to offer "Sign in with …".
#[utoipa::path(
    get,
    path = "/api/auth/providers",
    tag = "sessions",
    security(()),
    responses((status = 200, body = Providers))
)]
async fn providers(State(state): State<AppState>) -> Json<Providers> {
    Json(Providers {
        oidc: state.sso.as_ref().map(|sso| Provider {
            name: sso.display_name().to_owned(),
            login: "/auth/oidc/login",
        }),
    })
}

/// Query of `/auth/oidc/login`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LoginQuery {
    /// A path on this server to land on once signed in (default `/`); anything else lands on `/`.
    next: Option<String>,
}

/// `GET /auth/oidc/login` (no token): 303 to the provider's authorization endpoint with a fresh `state`, nonce and
/// PKCE challenge (S256). The `state` is also set in a cookie that binds the sign-in to this browser. 404 when
/// single sign-on is not configured; 502 (a page) when the provider cannot be reached.
#[utoipa::path(
    get,
    path = "/auth/oidc/login",
    tag = "sessions",
    security(()),
    params(LoginQuery),
    responses(
        (status = 303, description = "To the provider's sign-in"),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = Unprocessable),
        (status = 502, description = "The provider could not be reached (a page saying so)", content_type = "text/html", body = String),
        (status = 503, description = "Storage unavailable (a page saying so)", content_type = "text/html", body = String),
    )
)]
async fn login(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<LoginQuery>,
) -> Result<Response, ApiError> {
    let sso = state.sso.as_ref().ok_or(ApiError::NotFound)?;
    let next = query.next.as_deref().unwrap_or("/");
    match sso.begin(&*state.store, next).await {
        Ok((url, oauth_state)) => {
            let mut response = redirect(&url);
            response
                .headers_mut()
                .append(header::SET_COOKIE, sso.state_cookie(&oauth_state));
            Ok(response)
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.code(), error = %refusal, "starting a single sign-in");
            Ok(refused_page(&refusal))
        }
    }
}

/// Query of `/auth/oidc/callback`, as the provider sends it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    /// The authorization code.
    code: Option<String>,
    /// The `state` of the sign-in this finishes.
    state: Option<String>,
    /// The provider's error code, when it refused.
    error: Option<String>,
    /// The provider's words about it.
    error_description: Option<String>,
}

/// `GET /auth/oidc/callback` (no token): where the provider sends the browser back. The sign-in of this `state` is
/// taken (once: a replayed `state` is refused), the code exchanged with the PKCE verifier, the ID token verified
/// (signature, issuer, audience, expiry, nonce) and its claims mapped to a name and a scope; then the session
/// cookie is set and the browser sent on (303). A refusal is a page saying why: 400 for an unknown, used or
/// foreign `state`; 403 for a refused ID token or account; 502 when the provider does not answer.
#[utoipa::path(
    get,
    path = "/auth/oidc/callback",
    tag = "sessions",
    security(()),
    params(CallbackQuery),
    responses(
        (status = 303, description = "Signed in: the session cookie is set, on to the page the sign-in started from"),
        (status = 400, description = "An unknown, used or expired sign-in, or one another browser started (a page)", content_type = "text/html", body = String),
        (status = 403, description = "The ID token or the account was refused (a page saying why)", content_type = "text/html", body = String),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = Unprocessable),
        (status = 502, description = "The provider could not be reached (a page)", content_type = "text/html", body = String),
        (status = 503, description = "Storage unavailable (a page)", content_type = "text/html", body = String),
    )
)]
async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddr(from): ClientAddr,
    QueryParams(query): QueryParams<CallbackQuery>,
) -> Result<Response, ApiError> {
    let sso = state.sso.as_ref().ok_or(ApiError::NotFound)?;
    let cookie_state = cookie_value(&headers, STATE_COOKIE);
    let outcome = match (&query.state, &query.code, &query.error) {
        (Some(oauth_state), _, Some(error)) => {
            // Spent, so the same answer cannot be replayed later with a code.
            let _ = state
                .store
                .take_login(&crate::auth::hash_token(oauth_state), Utc::now())
                .await;
            let detail = query.error_description.as_deref().unwrap_or(error);
            Err(Refusal::Provider(detail.chars().take(300).collect()))
        }
        (Some(oauth_state), Some(code), None) => {
            sso.finish(&*state.store, oauth_state, cookie_state.as_deref(), code)
                .await
        }
        _ => Err(Refusal::State),
    };
    let (person, next) = match outcome {
        Ok(signed_in) => signed_in,
        Err(refusal) => {
            state.metrics.sso_refusals.inc();
            tracing::warn!(reason = refusal.code(), error = %refusal, from = ?from, "single sign-in refused");
            let event = audit::Event {
                actor: refusal.person().unwrap_or(ANONYMOUS),
                action: "signin.refused",
                target: "",
                detail: serde_json::json!({"reason": refusal.code(), "message": refusal.to_string()}),
                from,
            };
            audit::record(&*state.store, &state.metrics, event).await;
            let mut page = refused_page(&refusal);
            page.headers_mut()
                .append(header::SET_COOKIE, sso.clear_state_cookie());
            return Ok(page);
        }
    };
    let (secret, record) = match sso.open_session(&*state.store, &person, from.clone()).await {
        Ok(opened) => opened,
        Err(e) => return Ok(refused_page(&Refusal::Storage(e))),
    };
    state.metrics.sso_sign_ins.inc();
    tracing::info!(name = %record.name, scope = %record.scope, session = %record.id, "signed in");
    let event = audit::Event {
        actor: &record.name,
        action: "session.created",
        target: &record.id,
        detail: serde_json::json!({"scope": record.scope.as_str(), "expiresAt": record.expires_at}),
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    let mut response = redirect(&next);
    let cookies = response.headers_mut();
    cookies.append(header::SET_COOKIE, sso.session_cookie(&secret));
    cookies.append(header::SET_COOKIE, sso.clear_state_cookie());
    Ok(response)
}

/// `POST /api/session/signout` (a session): ends the caller's own session (its live `/sync` connections close)
/// and clears the cookie → 204. A token is not signed out but revoked by an admin: 422.
#[utoipa::path(
    post,
    path = "/api/session/signout",
    tag = "sessions",
    responses(
        (status = 204, description = "Signed out: the session ended and the cookie is cleared"),
        Refusals,
        (status = 422, response = Unprocessable),
    )
)]
async fn sign_out(
    identity: Identity,
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
) -> Result<Response, ApiError> {
    let (Some(sso), Some(id)) = (&state.sso, &identity.session) else {
        return Err(ApiError::Unprocessable(
            "signing out ends a browser session; a token is revoked by an admin (DELETE /api/tokens/{name})".into(),
        ));
    };
    state.store.revoke_session(id).await?;
    state.sync.sessions.revoke_name(&registry_name(&identity));
    tracing::info!(name = %identity.name, session = %id, "signed out");
    let event = audit::Event {
        actor: &identity.name,
        action: "session.signed_out",
        target: id,
        detail: serde_json::Value::Null,
        from,
    };
    audit::record(&*state.store, &state.metrics, event).await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, sso.clear_session_cookie());
    Ok(response)
}

/// The sessions, for admins.
#[derive(Serialize, ToSchema)]
struct Sessions {
    /// Every session not yet past its lifetime, ended ones too, oldest first.
    sessions: Vec<SessionRow>,
}

/// One session: never its secret (only a hash is stored).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionRow {
    /// Its id, for `DELETE /api/sessions/{id}`.
    id: String,
    /// Who signed in.
    name: String,
    /// `read`, `write` or `admin`.
    scope: &'static str,
    /// When they signed in.
    created_at: DateTime<Utc>,
    /// When it was last used (to within a tenth of the idle timeout).
    last_used_at: DateTime<Utc>,
    /// Its absolute end.
    expires_at: DateTime<Utc>,
    /// The address the sign-in came from.
    from: Option<String>,
    /// When it was signed out or revoked, if it was.
    revoked_at: Option<DateTime<Utc>>,
    /// Whether it still works now (not ended, not past its lifetime, not idle too long).
    live: bool,
}

/// `GET /api/sessions` (admin): who is signed in through single sign-on, with what scope, since when, last used,
/// until when and from where.
#[utoipa::path(
    get,
    path = "/api/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    responses(
        (status = 200, body = Sessions),
        Refusals,
    )
)]
async fn list(
    identity: Identity,
    State(state): State<AppState>,
) -> Result<Json<Sessions>, ApiError> {
    identity.require(Scope::Admin, "manage sessions")?;
    let now = Utc::now();
    let sessions = state
        .store
        .list_sessions()
        .await?
        .into_iter()
        .filter(|s| s.expires_at > now)
        .map(|s| SessionRow {
            live: state.sso.as_ref().is_some_and(|sso| sso.live(&s, now)),
            id: s.id,
            name: s.name,
            scope: s.scope.as_str(),
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            from: s.created_from,
            revoked_at: s.revoked_at,
        })
        .collect();
    Ok(Json(Sessions { sessions }))
}

/// A session, by id, in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SessionId {
    /// The session's id (from `GET /api/sessions`).
    id: String,
}

/// `DELETE /api/sessions/{id}` (admin) → 204: the session stops working at once and its live `/sync` connections
/// close within a second, on every node. 404 for an unknown or already ended one.
#[utoipa::path(
    delete,
    path = "/api/sessions/{id}",
    operation_id = "revoke_session",
    tag = "sessions",
    params(SessionId),
    responses(
        (status = 204, description = "Ended"),
        ReadRefusals,
    )
)]
async fn revoke(
    identity: Identity,
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    Path(SessionId { id }): Path<SessionId>,
) -> Result<StatusCode, ApiError> {
    identity.require(Scope::Admin, "manage sessions")?;
    let whose = state
        .store
        .list_sessions()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| s.name);
    if state.store.revoke_session(&id).await? {
        // Its connections on this node close now; other nodes' sweepers find them within a second.
        state
            .sync
            .sessions
            .revoke_name(&format!("{}{id}", crate::sessions::SESSION_KEY_PREFIX));
        tracing::info!(session = %id, by = %identity.name, "session revoked");
        let event = audit::Event {
            actor: &identity.name,
            action: "session.revoked",
            target: &id,
            detail: serde_json::json!({"name": whose}),
            from,
        };
        audit::record(&*state.store, &state.metrics, event).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The actor of a refused sign-in whose person is not known (the state or the ID token was refused).
const ANONYMOUS: &str = "anonymous";

/// A 303 to `location`.
fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The page a refused sign-in lands on: what happened, in words, and the way back to the sign-in page. Inert:
/// the message is escaped and the page may load nothing.
fn refused_page(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::State => StatusCode::BAD_REQUEST,
        Refusal::Unreachable(_) => StatusCode::BAD_GATEWAY,
        Refusal::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::Provider(_)
        | Refusal::IdToken(_)
        | Refusal::Name(_)
        | Refusal::UnverifiedEmail
        | Refusal::NoAccess(_) => StatusCode::FORBIDDEN,
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in refused · commandpost</title>\
         </head><body><main><h1>Sign-in refused</h1><p id=\"reason\" data-code=\"{code}\">{message}</p>\
         <p><a href=\"/#/signin\">Back to sign-in</a></p></main></body></html>\n",
        code = refusal.code(),
        message = escape(&refusal.to_string()),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
