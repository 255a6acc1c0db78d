//! The HTTP API's one error type: a status code and a JSON body `{"error": {"code", "message"}}`.
//!
//! Messages are for the caller; internal details (storage errors, paths) are logged, never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// The `Retry-After` of a busy answer, in seconds: a heavy read takes milliseconds to a fraction of a second, so
/// places free up within one.
const BUSY_RETRY_AFTER_SECS: &str = "1";

/// The body of every error answer, as the OpenAPI description names it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The two parts of an error: one for programs, one for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code: `bad_request`, `token_in_url`, `unauthorized`, `invalid_ticket`,
    /// `forbidden`, `cross_origin`, `command_rule`, `not_found`, `method_not_allowed`, `conflict`, `upgrade_required`, `too_large`,
    /// `unprocessable`, `too_many_requests`, `unavailable`, `busy` or `internal`.
    #[schema(example = "not_found")]
    pub code: &'static str,
    /// What to do about it, in words; it may change between versions.
    pub message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read: a body that is not JSON or not sent as JSON, a token in the URL, a ticket
    /// and a token at once. A request that reads but carries a value the route cannot take is a 422
    /// ([`ApiError::Unprocessable`]), wherever the value is: path, query or body.
    #[error("{0}")]
    BadRequest(String),
    /// 400: a bearer token in the query string, where proxies and access logs keep it.
    #[error(
        "tokens are not accepted in URLs (proxies log them): send Authorization: Bearer …, or open /sync with a \
         ticket from POST /api/sync-ticket"
    )]
    TokenInUrl,
    /// 401: no token or session, or an unknown, revoked or expired one.
    #[error("a valid token (Authorization: Bearer …) or a signed-in session is required")]
    Unauthorized,
    /// 401: a request to `/api/slack/…` that is not Slack's: no, a forged or a stale signature (a replay).
    #[error("{0}")]
    BadSignature(String),
    /// 401: a `/sync` ticket that is unknown, used, expired, or whose token was revoked.
    #[error(
        "this sync ticket is unknown, used or expired: ask POST /api/sync-ticket for a new one"
    )]
    InvalidTicket,
    /// 403: the token's scope does not allow this.
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    /// 403: a request carrying the session cookie whose `Origin` (or `Sec-Fetch-Site`) is not this server's: a
    /// page of another site made the browser send it (cross-site request forgery). Bearer tokens are never refused
    /// this way, since browsers do not attach them by themselves.
    #[error(
        "this request came from another site's page (Origin or Sec-Fetch-Site) and carries the session cookie: \
         refused; the server's own pages, and clients sending Authorization: Bearer, are not affected"
    )]
    CrossOrigin,
    /// 403: a command rule forbids this person this change (only the commander changes the command hierarchy, …).
    #[error("{0}")]
    CommandRule(String),
    /// 404: no such thing, or one the token may not see (the same answer, so ids cannot be probed).
    #[error("not found")]
    NotFound,
    /// 405: the route exists but not with this method.
    #[error("this route does not take this method")]
    MethodNotAllowed,
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 426: `/sync` asked for without a WebSocket upgrade (a browser tab, curl).
    #[error(
        "/sync speaks the automerge-repo protocol over a WebSocket: connect with a WebSocket client (Upgrade: \
         websocket); HTTP clients use /api"
    )]
    NotWebSocket,
    /// 413: the body is larger than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// 422: readable, but a value is not one the route takes (an unknown role, status, severity, template or
    /// format; a wrong type; a number out of range; a bad time) or the document's rules refuse the change.
    #[error("{0}")]
    Unprocessable(String),
    /// 429: a per-token limit (open `/sync` connections) is reached; retry once some close.
    #[error("{0}")]
    TooMany(String),
    /// 503: storage is unavailable; nothing was changed, retry later.
    #[error("storage unavailable, retry later")]
    Unavailable,
    /// 503 with `Retry-After`: every place for a heavy read (history, exports, the postmortem, the status update,
    /// the JSON view) is taken; the number is the configured limit.
    #[error(
        "the server is busy with {0} heavy reads (history, exports, updates) and as many waiting; retry in a moment"
    )]
    Busy(usize),
    /// 500: a bug or corruption; details are in the log.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The status code answered.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::TokenInUrl => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidTicket | ApiError::BadSignature(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) | ApiError::CrossOrigin | ApiError::CommandRule(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotWebSocket => StatusCode::UPGRADE_REQUIRED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TokenInUrl => "token_in_url",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidTicket => "invalid_ticket",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::CrossOrigin => "cross_origin",
            ApiError::CommandRule(_) => "command_rule",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::NotWebSocket => "upgrade_required",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooMany(_) => "too_many_requests",
            ApiError::Unavailable => "unavailable",
            ApiError::Busy(_) => "busy",
            ApiError::Internal => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        match self {
            ApiError::Busy(_) => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(BUSY_RETRY_AFTER_SECS),
                );
            }
            // RFC 9110: a 426 names the protocol to switch to.
            ApiError::NotWebSocket => {
                response
                    .headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                ApiError::Unavailable
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "storage corrupt");
                ApiError::Internal
            }
        }
    }
}

/// An error and its causes on one line ("error sending request: connection refused"), for messages that say what
/// actually failed. A webhook's error is given as [`reqwest::Error::without_url`] leaves it and scrubbed after: the
/// line is stored and logged.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
