//! The HTTP surface: the router, shared state, authentication and the small routes (health, metrics, session, the
//! `/sync` upgrade, the OpenAPI description). Incident, template, token and ticket routes live in their own modules;
//! every route is registered with its OpenAPI description (`openapi.rs`).

mod analytics;
pub(crate) mod archive;
mod audit;
mod channel;
mod chat;
mod command;
mod hooks;
mod incidents;
mod mail;
pub mod openapi;
mod replay;
mod slack;
mod sso;
mod templates;
mod tickets;
mod tokens;
mod update;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use incident_doc::OpError;
use incident_doc::schema::Status;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use tower_http::compression::CompressionLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Identity, Scope, hash_token};
use crate::connection::{self, SyncContext};
use crate::document::{DocError, Registry};
use crate::error::{ApiError, ErrorBody};
use crate::export::ExportError;
use crate::metrics::Metrics;
use crate::peer::ConnId;
use crate::reads::HeavyReads;
use crate::store::Store;
use crate::templates::{Catalog, Templates};
use crate::webhooks::Webhooks;

/// Everything a handler may need; cloned per request, so every field is a cheap handle.
#[derive(Clone)]
pub struct AppState {
    /// Durable storage: tokens, the incident index, documents.
    pub store: Arc<dyn Store>,
    /// The live documents.
    pub registry: Registry,
    /// Templates offered for new incidents (built-in, `templates-dir`, stored), reloaded while running.
    pub templates: Templates,
    /// Server metrics.
    pub metrics: Arc<Metrics>,
    /// What `/sync` connections need.
    pub sync: SyncContext,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The places for heavy reads, which run off the document actors.
    pub reads: HeavyReads,
    /// The outgoing webhook endpoints, for their admin routes.
    pub webhooks: Arc<Webhooks>,
    /// The Alertmanager label naming the incident an alert belongs to.
    pub alertmanager_label: Arc<str>,
    /// Single sign-on, when `[oidc]` is configured; without it the session cookie is ignored.
    pub sso: Option<Arc<crate::sso::Sso>>,
    /// Status updates by email, when `[mail]` is configured.
    pub mail: Option<Arc<crate::mail::Mail>>,
    /// The chat core: what lines said in bound channels do (the Slack routes and the IRC bot hand them over).
    pub chat: Arc<crate::chat::Chat>,
    /// The Slack app, when `[slack]` is configured; without it `/api/slack/…` answers 404.
    pub slack: Option<Arc<crate::chat::slack::SlackApp>>,
}

/// Every route, each with its description: `routes!` takes a handler's method and path from its
/// `#[utoipa::path]`, so what is routed and what is described are one list. Needs no state, so that the description
/// can be built without a server.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(sync))
        .routes(routes!(session))
        .routes(routes!(openapi::openapi_json))
        .merge(incidents::router())
        .merge(command::router())
        .merge(archive::router())
        .merge(analytics::router())
        .merge(tokens::router())
        .merge(sso::router())
        .merge(tickets::router())
        .merge(hooks::router())
        .merge(chat::router())
        .merge(slack::router())
        .merge(update::router())
        .merge(mail::router())
        .merge(templates::router())
        .merge(audit::router())
        .merge(replay::router())
}

/// The whole application as a router, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let body_limit = state.max_body_bytes;
    let (router, _) = routes().split_for_parts();
    router
        // The UI's files are gzipped for the wire (the WebAssembly client shrinks to a third); API answers are
        // small and left alone.
        .fallback(
            get(crate::web::asset)
                .layer(CompressionLayer::new())
                .fallback(unknown_route),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The token from `Authorization: Bearer …`, or the single sign-on session of the cookie, checked against storage.
/// A request that may change something (any method but GET, HEAD and OPTIONS) carrying the cookie must come from
/// the server's own pages ([`sso::same_origin`](crate::sso::same_origin)).
impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let changes = !matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        );
        Ok(credential(state, &parts.headers, changes).await?.0)
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Who is calling, and the key their `/sync` connections register under (`sessions.rs`): the bearer token if
/// there is one (a token wins over a cookie, so scripts are never judged by a browser's cookie), else the session
/// cookie. `changes`: the request may change something, so a cookie must come from the server's own origin.
pub(super) async fn credential(
    state: &AppState,
    headers: &HeaderMap,
    changes: bool,
) -> Result<(Identity, String), ApiError> {
    if let Some(token) = bearer(headers) {
        return Ok((authenticate(state, &token).await?, hash_token(&token)));
    }
    let (Some(sso), Some(secret)) = (
        &state.sso,
        crate::sso::cookie_value(headers, crate::sso::SESSION_COOKIE),
    ) else {
        return Err(ApiError::Unauthorized);
    };
    if changes && !crate::sso::same_origin(headers, Some(sso.public_origin())) {
        state.metrics.rejected_cross_origin.inc();
        return Err(ApiError::CrossOrigin);
    }
    let hash = hash_token(&secret);
    let record = sso
        .session(&*state.store, &hash)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok((
        Identity {
            name: record.name,
            scope: record.scope,
            session: Some(record.id),
        },
        format!("{}{hash}", crate::sessions::SESSION_KEY_PREFIX),
    ))
}

pub(super) async fn authenticate(state: &AppState, token: &str) -> Result<Identity, ApiError> {
    match state.store.token_by_hash(&hash_token(token)).await? {
        Some(record) if record.revoked_at.is_none() => Ok(Identity {
            name: record.name,
            scope: record.scope,
            session: None,
        }),
        _ => Err(ApiError::Unauthorized),
    }
}

impl Identity {
    /// Refuses with 403 unless the token's scope includes `needed`.
    pub fn require(&self, needed: Scope, action: &'static str) -> Result<(), ApiError> {
        if self.scope >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(action))
        }
    }
}

/// A JSON body whose rejections speak our error format: 400 for bad JSON, 422 for wrong types, 413 for size.
/// Every body is a JSON object, as the OpenAPI description says: an array is refused (422) rather than read
/// field by field in order, as serde reads structs from sequences.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<Object<T>>::from_request(req, state).await {
            Ok(Json(Object(value))) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_error(rejection, state.max_body_bytes, &state.metrics)),
        }
    }
}

/// A body taken as it comes (a template's Markdown), refused in our error format as [`JsonBody`] is: 413 past the
/// limit, not axum's plain text.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large(state.max_body_bytes, &state.metrics))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `T` read from a JSON object only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// Accepts a map and reads `T` from it; anything else is an "invalid type" error naming what was expected.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Object)
    }
}

/// A query string whose rejection speaks our error format (422 with axum's explanation, as a body of the wrong shape
/// gets from [`JsonBody`]: the URL was read, one of its values was not what the route takes). Handlers that check
/// the token's scope first take it as `Result<QueryParams<T>, ApiError>`, so a caller without the scope learns
/// nothing about the parameters.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => Err(ApiError::Unprocessable(rejection.body_text())),
        }
    }
}

/// An RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC) in query parameter `name`; 422 naming it otherwise.
fn moment(name: &str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    crate::input::parse_moment(value).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "{name}={value:?} is neither an RFC 3339 time nor a date like 2026-11-25"
        ))
    })
}

/// Maps a JSON rejection to our error; `limit` is the body limit, named in the 413 message (and counted).
fn json_error(rejection: JsonRejection, limit: usize, metrics: &Metrics) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected a JSON body with Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(limit, metrics),
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// A body over `limit`: counted, and answered naming the limit.
fn too_large(limit: usize, metrics: &Metrics) -> ApiError {
    metrics.rejected_bodies.inc();
    ApiError::TooLarge(limit)
}

/// A `status=` filter: a lifecycle state's name, or 422 naming them all.
fn status_filter(name: &str) -> Result<Status, ApiError> {
    name.parse().map_err(|()| {
        ApiError::Unprocessable(format!(
            "unknown status {name:?} (expected declared, active, mitigated, resolved or closed)"
        ))
    })
}

/// A `severity=` filter: an option of some template's `severity` field, or 422 naming them all (an unknown one
/// could only ever answer an empty list, which reads as "no such incidents").
fn severity_filter(templates: &Catalog, name: String) -> Result<String, ApiError> {
    let mut known: Vec<&str> = templates
        .templates()
        .iter()
        .filter_map(|t| t.template.field("severity"))
        .flat_map(|field| field.def.options.iter().map(|o| o.key.as_str()))
        .collect();
    known.sort_unstable();
    known.dedup();
    if known.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(ApiError::Unprocessable(format!(
            "unknown severity {name:?} (expected one of {})",
            known.join(", ")
        )))
    }
}

/// A `template=` filter: a template's id, or 422 naming them all, for the same reason as [`severity_filter`].
fn template_filter(templates: &Catalog, id: String) -> Result<String, ApiError> {
    if templates.get(&id).is_some() {
        Ok(id)
    } else {
        let known: Vec<&str> = templates
            .templates()
            .iter()
            .map(|t| t.template.id.as_str())
            .collect();
        Err(ApiError::Unprocessable(format!(
            "unknown template {id:?} (expected one of {})",
            known.join(", ")
        )))
    }
}

/// What a document's refusal means to an HTTP client. It lives here, in the layer that already calls the documents,
/// so that `error.rs`, which lower layers (`reads`, `web`) use, depends on no document.
impl From<DocError> for ApiError {
    fn from(e: DocError) -> Self {
        match e {
            DocError::Refused(OpError::Forbidden(message)) => ApiError::CommandRule(message),
            DocError::Refused(e @ (OpError::Archived | OpError::NotArchived)) => {
                ApiError::Conflict(e.to_string())
            }
            DocError::Refused(op) => ApiError::Unprocessable(op.to_string()),
            DocError::Storage(store) => store.into(),
            DocError::Gone => ApiError::Unavailable,
            e @ DocError::TooLarge(_) => ApiError::Unprocessable(e.to_string()),
        }
    }
}

/// An unknown format and a moment before the incident existed are values the route cannot take (422, as every
/// unknown name is); the rest are bugs, logged and answered as such.
impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::UnknownFormat(_) => ApiError::Unprocessable(e.to_string()),
            ExportError::NotYet { .. } => ApiError::Unprocessable(e.to_string()),
            ExportError::Fork(_) | ExportError::Json(_) => {
                tracing::error!(error = %e, "rendering an export");
                ApiError::Internal
            }
        }
    }
}

/// Any method but GET on a path no route has: the same JSON 404 as an unknown id, not a bare 405.
async fn unknown_route() -> ApiError {
    ApiError::NotFound
}

/// A route called with a method it does not take: 405 in our error format (axum's own has an empty body).
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Health<'a> {
    /// `ok`, or `degraded` when storage does not answer.
    status: &'static str,
    /// `ok` or `unavailable`.
    storage: &'static str,
    /// Incidents loaded as live documents on this node.
    documents_loaded: usize,
    /// Open `/sync` connections on this node.
    connections: i64,
    /// Templates on offer.
    templates: usize,
    /// The refused templates, each `file:line: reason`.
    template_errors: Vec<&'a str>,
}

/// `GET /healthz`: 200 `{"status":"ok"}`, or 503 `{"status":"degraded"}` when storage does not answer. Refused
/// templates are detail (`templateErrors`, each `file:line: reason`): the server still serves, with the last good
/// version of each, so they do not make it unhealthy.
///
/// For load balancers and probes: needs no token and tells nothing about incidents.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Serving, storage answers", body = Health),
        (status = 503, description = "Storage does not answer within 2 s", body = Health),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    let storage = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    let (status, storage) = match storage {
        Ok(Ok(())) => (StatusCode::OK, "ok"),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let overall = if status == StatusCode::OK {
        "ok"
    } else {
        "degraded"
    };
    let templates = state.templates.current();
    let body = Health {
        status: overall,
        storage,
        documents_loaded: state.registry.loaded(),
        connections: state.metrics.connections.get(),
        templates: templates.templates().len(),
        template_errors: templates
            .problems()
            .iter()
            .map(|p| p.error.as_str())
            .collect(),
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, from counters and gauges alone (it needs no token, so it must cost nothing
/// that depends on the documents).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Who is calling.
#[derive(Serialize, ToSchema)]
struct Session {
    /// The token's name, or the signed-in person's: the person or bot, as the timeline and history name them.
    name: String,
    /// `read`, `write` or `admin`.
    scope: &'static str,
    /// `token` (a bearer token) or `session` (signed in through single sign-on, with the cookie).
    #[schema(pattern = "^(token|session)$")]
    kind: &'static str,
}

/// `GET /api/session`: who the token or the signed-in session belongs to, for the UI's sign-in.
#[utoipa::path(
    get,
    path = "/api/session",
    tag = "meta",
    responses(
        (status = 200, body = Session),
        (status = 401, response = openapi::Unauthorized),
        (status = 503, response = openapi::Unavailable),
    )
)]
async fn session(identity: Identity) -> Json<Session> {
    Json(Session {
        kind: if identity.session.is_some() {
            "session"
        } else {
            "token"
        },
        name: identity.name,
        scope: identity.scope.as_str(),
    })
}

/// Query of `/sync`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SyncQuery {
    /// A ticket from `POST /api/sync-ticket`: how browsers, which cannot set headers on a WebSocket, authenticate.
    ticket: Option<String>,
    /// Read only to be refused: a token in the URL reaches proxy and access logs.
    #[param(ignore)]
    token: Option<String>,
}

/// The name a connection registers under in `sessions.rs`, by which this node closes it at once: the token's name,
/// or `session:<id>` (no token name has a colon).
pub(super) fn registry_name(identity: &Identity) -> String {
    match &identity.session {
        Some(id) => format!("{}{id}", crate::sessions::SESSION_KEY_PREFIX),
        None => identity.name.clone(),
    }
}

/// The WebSocket read buffer and write batching threshold of each `/sync` connection.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024;

/// `GET /sync`: upgrades to the automerge-repo protocol after checking the ticket (`?ticket=`, browsers), the
/// token (`Authorization: Bearer`, other clients) or the session cookie (from the server's own origin only). A token in the query is refused, never used.
///
/// Only a WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`) is served; any other request is answered
/// 426. The frames are automerge-repo's CBOR messages (docs/protocol.md).
#[utoipa::path(
    get,
    path = "/sync",
    tag = "sync",
    params(SyncQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switched to the automerge-repo protocol over a WebSocket"),
        (status = 400, response = openapi::BadRequest),
        (status = 401, description = "No token, ticket or session, or an unknown, revoked, spent or expired one", body = ErrorBody),
        (status = 403, response = openapi::Forbidden),
        (status = 426, description = "Not a WebSocket upgrade (a browser tab, curl); answered before anything else", body = ErrorBody),
        (status = 429, response = openapi::TooMany),
        (status = 503, response = openapi::Unavailable),
    )
)]
async fn sync(
    State(state): State<AppState>,
    query: Result<QueryParams<SyncQuery>, ApiError>,
    headers: HeaderMap,
    crate::audit::ClientAddr(from): crate::audit::ClientAddr,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Checked first, and answered in the API's JSON rather than axum's plain text: whoever opened /sync without a
    // WebSocket learns that before anything about tokens.
    let upgrade = upgrade.map_err(|_| ApiError::NotWebSocket)?;
    let QueryParams(query) = query?;
    if query.token.is_some() {
        return Err(ApiError::TokenInUrl);
    }
    let (identity, token_hash) = match (query.ticket, bearer(&headers)) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "send either a ticket or an Authorization header, not both".into(),
            ));
        }
        (Some(ticket), None) => tickets::redeem(&state, &ticket).await?,
        // The token, or the session cookie, which a WebSocket upgrade carries from any site's page: only the
        // server's own origin may use it (cross-site WebSocket hijacking).
        (None, _) => credential(&state, &headers, true).await?,
    };
    let ctx = state.sync.clone();
    // Registered before the upgrade, so the cap answers a plain 429 and a revocation from now on closes it.
    let session = ctx
        .sessions
        .admit(
            &token_hash,
            &registry_name(&identity),
            ConnId::next(),
            ctx.limits.max_connections_per_token,
        )
        .map_err(|e| {
            ctx.metrics.rejected_connections.inc();
            ApiError::TooMany(e.to_string())
        })?;
    // The socket library's own limit is a backstop above ours, so that oversized frames usually get our clear
    // `error` message rather than a bare close.
    let hard_limit = ctx.limits.max_frame_bytes.saturating_mul(2);
    // Most connections are viewers that receive keystrokes and send short acknowledgements: the socket's default
    // 128 KiB buffers cost 128 KiB of memory per viewer and a 128 KiB zero-fill per read (BENCHMARKS.md, "Where
    // the time goes"). Larger frames are still read and written whole.
    Ok(upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| connection::serve(socket, identity, session, ctx, from)))
}
