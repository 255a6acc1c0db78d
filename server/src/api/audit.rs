//! `GET /api/audit` (admin): the audit log (`crate::audit`), filtered, as JSON pages or CSV.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Refusals, Unprocessable};
use super::{AppState, QueryParams, moment};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::store::{AuditFilter, AuditRecord};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

/// The most entries one answer holds; older ones are the next page's (`before`).
const MAX_LIMIT: u32 = 1000;

/// Entries per answer unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;

/// The CSV's columns, the JSON fields of an entry in order.
const COLUMNS: [&str; 7] = ["id", "at", "actor", "action", "target", "from", "detail"];

/// Query of `GET /api/audit`; every condition given must hold.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// `json` or `csv`; without it, CSV when the request accepts `text/csv` and not JSON, JSON otherwise.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// Only what this person, token or process did (`commandpost` for the server, `cli` for local commands).
    actor: Option<String>,
    /// Only this action (`token.revoked`), or every action of a kind when it ends with a dot (`session.`).
    #[param(pattern = "^[a-z_]+(\\.[a-z_]*)*$")]
    action: Option<String>,
    /// Only entries about this target (a token or person's name, an incident id).
    target: Option<String>,
    /// Written at or after: RFC 3339, or a date (midnight UTC). `from` is taken too, as the analytics route names it.
    #[serde(alias = "from")]
    since: Option<String>,
    /// Written before: RFC 3339, or a date (midnight UTC). `to` is taken too, as the analytics route names it.
    #[serde(alias = "to")]
    until: Option<String>,
    /// Only entries older than this id: the `nextBefore` of the previous page.
    #[param(minimum = 1)]
    before: Option<i64>,
    /// At most this many entries, the newest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

impl AuditQuery {
    fn filter(self) -> Result<AuditFilter, ApiError> {
        if let Some(action) = &self.action
            && !valid_action(action)
        {
            return Err(ApiError::Unprocessable(format!(
                "action={action:?} is not an action name such as token.revoked, nor a kind such as session."
            )));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::Unprocessable(format!(
                "limit={limit} is outside 1 to {MAX_LIMIT}"
            )));
        }
        if self.before.is_some_and(|before| before < 1) {
            return Err(ApiError::Unprocessable(
                "before is an entry's id, 1 or more".into(),
            ));
        }
        Ok(AuditFilter {
            since: self
                .since
                .as_deref()
                .map(|v| moment("since", v))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|v| moment("until", v))
                .transpose()?,
            actor: self.actor,
            action: self.action,
            target: self.target,
            before: self.before,
            limit,
        })
    }
}

/// Dotted lowercase words, the last of which may be empty (a kind: `session.`).
fn valid_action(action: &str) -> bool {
    let mut words = action.split('.');
    let first = words.next().unwrap_or_default();
    let word = |w: &str| w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    !first.is_empty() && word(first) && words.all(word) && action.len() <= 64
}

/// One page of the log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditPage {
    /// The entries, newest first.
    entries: Vec<AuditEntry>,
    /// The `before` that asks for the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

/// One entry of the log.
#[derive(Serialize, ToSchema)]
struct AuditEntry {
    /// Increases with every entry.
    id: i64,
    /// When it was written.
    at: chrono::DateTime<chrono::Utc>,
    /// Who acted.
    actor: String,
    /// What happened (docs/security.md lists the actions).
    action: String,
    /// What it happened to, or empty.
    target: String,
    /// Where the request came from: the peer's address and any `X-Forwarded-For` it sent, or the local user.
    from: Option<String>,
    /// The facts of this kind of action.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

impl From<AuditRecord> for AuditEntry {
    fn from(record: AuditRecord) -> Self {
        AuditEntry {
            id: record.id,
            at: record.at,
            actor: record.actor,
            action: record.action,
            target: record.target,
            from: record.from,
            detail: record.detail,
        }
    }
}

/// `GET /api/audit` (admin) → the entries `filter` selects, newest first: JSON pages, or CSV (the same columns,
/// `detail` as JSON text) for spreadsheets and SIEM imports.
#[utoipa::path(
    get,
    path = "/api/audit",
    operation_id = "audit_log",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The entries, newest first", content(
            (AuditPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = 422, response = Unprocessable),
        Refusals,
    )
)]
async fn audit_log(
    identity: Identity,
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<QueryParams<AuditQuery>, ApiError>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Admin, "read the audit log")?;
    let QueryParams(query) = query?;
    let csv = match query.format.as_deref().unwrap_or(negotiated(&headers)) {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::Unprocessable(format!(
                "unknown format {other:?} (expected json or csv)"
            )));
        }
    };
    let filter = query.filter()?;
    let records = state.store.audit(&filter).await?;
    let next_before = (records.len() == filter.limit as usize)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    let entries: Vec<AuditEntry> = records.into_iter().map(AuditEntry::from).collect();
    if csv {
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/csv; charset=utf-8; header=present",
                ),
                (
                    header::CONTENT_DISPOSITION,
                    "inline; filename=\"audit.csv\"",
                ),
            ],
            incident_doc::analytics::csv_table(&COLUMNS, &entries),
        )
            .into_response());
    }
    Ok(Json(AuditPage {
        entries,
        next_before,
    })
    .into_response())
}

/// The format an `Accept` header asks for: `csv` when it names `text/csv` and not JSON (a spreadsheet's or a SIEM
/// collector's request), `json` otherwise.
fn negotiated(headers: &HeaderMap) -> &'static str {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("text/csv") && !accept.contains("json") {
        "csv"
    } else {
        "json"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_and_kinds() {
        assert!(valid_action("token.revoked"));
        assert!(valid_action("session."));
        assert!(valid_action("incident.member_added"));
        assert!(!valid_action(""));
        assert!(!valid_action(".x"));
        assert!(!valid_action("Token.revoked"));
        assert!(!valid_action("token.%"));
    }
}
