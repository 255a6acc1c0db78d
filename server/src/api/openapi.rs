//! The OpenAPI 3.1 description of the HTTP API, served at `GET /api/openapi.json`.
//!
//! Nothing here lists routes: each handler carries its own `#[utoipa::path]` (method, path, parameters, body,
//! answers), and every route is registered through `utoipa_axum::routes!`, which takes the method and path from that
//! same attribute. The router and the description are therefore built from one source and cannot drift; the test
//! `tests/tests/openapi.rs` checks that no route was added around it. This module holds what the handlers share:
//! the document's header, the bearer scheme, and the error answers (all [`ErrorBody`]) they refer to.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};

use crate::error::ErrorBody;

/// The document's fixed part; the router adds every path to it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "commandpost",
        description = "Incident command documents: declare, edit, hand over, export and analyse incidents. Every \
                       error is JSON `{\"error\": {\"code\", \"message\"}}`. Live editing goes over the `/sync` \
                       WebSocket (the automerge-repo protocol), described here only as its upgrade.",
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    components(responses(
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        Unprocessable,
        TooMany,
        Unavailable
    ))
)]
pub struct ApiDoc;

/// The name of the security scheme: tokens from `commandpost token create` or `POST /api/tokens`.
const BEARER: &str = "bearer";

/// Adds the bearer scheme, which the derive cannot declare itself.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "A token (`cp_…`) from `commandpost token create` or `POST /api/tokens`, with scope read, write or \
             admin; each route says which it needs."
                .into(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// The whole description, built once from the router (which needs no state to describe itself).
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let openapi = super::routes().into_openapi();
    // Serializing a document of plain strings and maps cannot fail.
    openapi.to_pretty_json().unwrap_or_default()
});

/// The description as served (and as the test reads it).
pub fn document() -> &'static str {
    &DOCUMENT
}

/// `GET /api/openapi.json`: this description, without a token (it holds no data).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object))
)]
pub(super) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// 400: a request that cannot be read: a body that is not JSON or lacks `Content-Type: application/json`, a token in
/// the URL (`token_in_url`).
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// 401: no `Authorization: Bearer` token or session cookie, or an unknown, revoked or expired one.
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// 403: the token's scope does not allow this, a command rule forbids this person this change (only the
/// commander changes the command hierarchy, …), or a request carrying the session cookie came from another site's
/// page (`cross_origin`).
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// 404: no such incident (or token, endpoint); an id that is no incident id is not found either.
#[derive(ToResponse)]
pub struct NotFound(pub ErrorBody);

/// 409: conflicts with the current state: the incident is closed (archived) and takes no edit but a reopening, or
/// is not closed and cannot be reopened; a token name already taken.
#[derive(ToResponse)]
pub struct Conflict(pub ErrorBody);

/// 413: the body is larger than the server's limit (`--max-body-bytes`).
#[derive(ToResponse)]
pub struct TooLarge(pub ErrorBody);

/// 422: a request that reads, with a value the route does not take wherever it is (a missing or mistyped field, an
/// unknown operation, field, role, status, template, severity or format, a bad time, a number out of range), or a
/// change the document's rules refuse.
#[derive(ToResponse)]
pub struct Unprocessable(pub ErrorBody);

/// 429: a per-token limit is reached (open `/sync` connections, unused tickets); retry once some close or expire.
#[derive(ToResponse)]
pub struct TooMany(pub ErrorBody);

/// 503: storage is unavailable (nothing was changed), or every place for a heavy read is taken (with
/// `Retry-After`); retry later.
#[derive(ToResponse)]
pub struct Unavailable(pub ErrorBody);

/// 401, 403 and 503: what every route behind a token may answer (no or a bad token, too small a scope, storage
/// away). Routes list their refusals by what they are, through these sets, and add only what is theirs alone.
pub struct Refusals;

/// [`Refusals`] and 404: routes that name a thing by id (an incident, a token, an endpoint, a template).
pub struct ReadRefusals;

/// [`ReadRefusals`] and 400, 409, 413, 422: routes that change an incident with a JSON body (unreadable, archived,
/// too large, or not a change it takes).
pub struct WriteRefusals;

/// The components named in `names`, by their status codes.
fn refer(names: &[(u16, &str)]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    names
        .iter()
        .map(|(status, name)| {
            (
                status.to_string(),
                RefOr::Ref(Ref::from_response_name(*name)),
            )
        })
        .collect()
}

const REFUSALS: [(u16, &str); 3] = [
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (503, "Unavailable"),
];
const NOT_FOUND: (u16, &str) = (404, "NotFound");

impl IntoResponses for Refusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        refer(&REFUSALS)
    }
}

impl IntoResponses for ReadRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        refer(&[REFUSALS[0], REFUSALS[1], REFUSALS[2], NOT_FOUND])
    }
}

impl IntoResponses for WriteRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let mut all = ReadRefusals::responses();
        all.append(&mut refer(&[
            (400, "BadRequest"),
            (409, "Conflict"),
            (413, "TooLarge"),
            (422, "Unprocessable"),
        ]));
        all
    }
}
