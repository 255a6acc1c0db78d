//! Analysis across incidents: `GET /api/analytics/incidents` answers one row of facts per incident as CSV or JSON
//! Lines (columns in `docs/analytics.md`), and `GET /insights` draws charts of the same rows.
//!
//! A row needs the whole document and its history (role intervals, editors), so it is computed from the stored
//! document, off the async threads, and cached in memory under the incident's `updated_at` from the index: a
//! closed incident is computed once per server process, an active one again after each change. Documents are read
//! from the store, not through the document actors, so an analysis over thousands of incidents does not load
//! them all as live documents. The role rotation routes (`/api/people/{name}/roles`, `/api/people/rotation`)
//! read the same rows, drills included (`rotation.rs`).

mod insights;
mod rotation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use incident_doc::analytics::{self, Facts, Filter};
use incident_doc::schema::Status;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, Refusals, Unprocessable};
use super::{AppState, QueryParams, bearer, credential, moment, status_filter, template_filter};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::store::{IncidentSummary, ListFilter};
use crate::templates::Catalog;
use wire::DocumentId;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rows))
        .routes(routes!(insights))
        .routes(routes!(person_roles))
        .routes(routes!(rotation))
        .layer(Extension(Arc::new(FactsCache::default())))
}

/// A computed row and the index's `updated_at` it was computed for.
type Cached = (DateTime<Utc>, Arc<Facts>);

/// Rows already computed, by incident id.
#[derive(Default)]
struct FactsCache {
    rows: Mutex<HashMap<DocumentId, Cached>>,
}

impl FactsCache {
    fn get(&self, summary: &IncidentSummary) -> Option<Arc<Facts>> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.get(&summary.id)
            .filter(|(updated, _)| *updated == summary.updated_at)
            .map(|(_, facts)| facts.clone())
    }

    fn put(&self, summary: &IncidentSummary, facts: Arc<Facts>) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.insert(summary.id, (summary.updated_at, facts));
    }

    /// Forgets incidents that are no longer listed (deleted), so the cache stays as large as the index.
    fn retain(&self, listed: &[IncidentSummary]) {
        let ids: std::collections::HashSet<DocumentId> = listed.iter().map(|s| s.id).collect();
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.retain(|id, _| ids.contains(id));
    }
}

/// Query of both routes.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AnalyticsQuery {
    /// `csv` (default) or `jsonl`; the analytics route only.
    #[param(pattern = "^(csv|jsonl)$")]
    format: Option<String>,
    /// Declared at or after: RFC 3339, or a date (midnight UTC).
    from: Option<String>,
    /// Declared before: RFC 3339, or a date (midnight UTC, so `to=2026-12-01` ends with November).
    to: Option<String>,
    /// Only this lifecycle state.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only this template.
    template: Option<String>,
    /// Keep drills (left out by default).
    #[serde(default)]
    include_drills: bool,
    /// Read only to be refused with a clear error (see [`reader`]).
    #[param(ignore)]
    token: Option<String>,
}

impl AnalyticsQuery {
    fn filter(&self, templates: &Catalog) -> Result<Filter, ApiError> {
        let status = self.status.as_deref().map(status_filter).transpose()?;
        Ok(Filter {
            from: self
                .from
                .as_deref()
                .map(|v| moment("from", v))
                .transpose()?,
            to: self.to.as_deref().map(|v| moment("to", v)).transpose()?,
            status: status.map(|s| s.as_str().to_owned()),
            template: self
                .template
                .clone()
                .map(|id| template_filter(templates, id))
                .transpose()?,
            include_drills: self.include_drills,
        })
    }

    /// The filter in words, for the insights page.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(from) = &self.from {
            parts.push(format!("declared from {from}"));
        }
        if let Some(to) = &self.to {
            parts.push(format!("declared before {to}"));
        }
        if let Some(status) = &self.status {
            parts.push(format!("status {status}"));
        }
        if let Some(template) = &self.template {
            parts.push(format!("template {template}"));
        }
        parts.push(if self.include_drills {
            "drills included".into()
        } else {
            "drills left out".into()
        });
        parts.join(", ")
    }
}

/// The rows that pass `filter` among the incidents `identity` may see, oldest declaration first (then by id),
/// computing those not cached. The cache keeps every incident's row whoever asks, so it is pruned by the whole
/// index and the restricted incidents are left out afterwards.
async fn facts(
    state: &AppState,
    cache: &FactsCache,
    filter: &Filter,
    identity: &Identity,
) -> Result<Vec<Facts>, ApiError> {
    let listed = state.store.list(&ListFilter::default()).await?;
    cache.retain(&listed);
    let mut rows = Vec::new();
    let admin = identity.scope == Scope::Admin;
    for summary in listed
        .iter()
        .filter(|row| row.visible_to(&identity.name, admin))
    {
        // The index already knows these two; no need to read documents that fail them.
        if filter
            .status
            .as_deref()
            .is_some_and(|s| s != summary.status_name())
            || filter
                .template
                .as_ref()
                .is_some_and(|t| *t != summary.template)
        {
            continue;
        }
        let row = match cache.get(summary) {
            Some(row) => row,
            None => {
                let Some(row) = compute(state, summary.id).await? else {
                    continue;
                };
                cache.put(summary, row.clone());
                row
            }
        };
        if filter.accepts(&row) {
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| {
        a.declared_at
            .cmp(&b.declared_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(rows.iter().map(|r| Facts::clone(r)).collect())
}

/// One incident's row from its stored document; `None` if it vanished meanwhile or cannot be read (logged: one
/// damaged document must not hide every other incident from the analysis).
async fn compute(state: &AppState, id: DocumentId) -> Result<Option<Arc<Facts>>, ApiError> {
    let Some(stored) = state.store.load(id).await? else {
        return Ok(None);
    };
    let row = tokio::task::spawn_blocking(move || {
        let mut incident = match stored.incident() {
            Ok(incident) => incident,
            Err(e) => {
                tracing::error!(incident = %id, error = %e, "left out of analytics: unreadable document");
                return None;
            }
        };
        let view = incident.view();
        let record = incident.record(None);
        Some(Arc::new(Facts::new(&id.to_string(), &view, &record)))
    })
    .await
    .map_err(|_| ApiError::Internal)?;
    Ok(row)
}

/// The caller, from `Authorization: Bearer …` or the session cookie. A `token` in the query is refused, not used: URLs reach proxy and
/// access logs. The web UI fetches both routes with the header (and shows or saves the answer).
async fn reader(
    state: &AppState,
    headers: &HeaderMap,
    query: &AnalyticsQuery,
) -> Result<Identity, ApiError> {
    if query.token.is_some() {
        return Err(ApiError::TokenInUrl);
    }
    let (identity, _) = credential(state, headers, false).await?;
    identity.require(Scope::Read, "read incidents")?;
    Ok(identity)
}

/// `GET /api/analytics/incidents?format=csv|jsonl[&from=&to=&status=&template=&include_drills=]` (read).
#[utoipa::path(
    get,
    path = "/api/analytics/incidents",
    tag = "analytics",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "One row of facts per incident, oldest declaration first (columns in docs/analytics.md)",
            content((String = "text/csv"), (String = "application/jsonl"))),
        (status = 400, response = BadRequest),
        (status = 422, response = Unprocessable),
        Refusals,
    )
)]
async fn rows(
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<FactsCache>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<AnalyticsQuery>,
) -> Result<Response, ApiError> {
    let identity = reader(&state, &headers, &query).await?;
    let filter = query.filter(&state.templates.current())?;
    let format = query.format.as_deref().unwrap_or("csv");
    let content_type = match format {
        "csv" => "text/csv; charset=utf-8; header=present",
        "jsonl" => "application/jsonl; charset=utf-8",
        other => {
            return Err(ApiError::Unprocessable(format!(
                "unknown format {other:?} (expected csv or jsonl)"
            )));
        }
    };
    let rows = facts(&state, &cache, &filter, &identity).await?;
    let body = if format == "csv" {
        analytics::csv(&rows)
    } else {
        analytics::jsonl(&rows)
    };
    let disposition = format!("inline; filename=\"incidents.{format}\"");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Whether the request is a browser navigation: it asks for HTML and carries no token (a browser cannot add the
/// header to a typed address or a bookmark).
fn browser_navigation(headers: &HeaderMap) -> bool {
    bearer(headers).is_none()
        && headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// `GET /insights[?from=&to=&status=&template=&include_drills=]`: the charts page.
///
/// Opened in a browser's address bar (a bookmark, a link pasted in chat), it redirects to the app's insights page
/// with the same filters: the app holds the signed-in session and fetches the charts with the header, where a bare
/// 401 would leave the person stranded outside the app. A `token=` in the address is still refused first.
#[utoipa::path(
    get,
    path = "/insights",
    tag = "analytics",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The charts page (self-contained HTML with inline SVG)", content_type = "text/html", body = String),
        (status = 303, description = "A browser's navigation (it asks for HTML and sends no token): to the app's insights page, same filters",
            headers(("location" = String))),
        (status = 400, response = BadRequest),
        (status = 422, response = Unprocessable),
        Refusals,
    )
)]
async fn insights(
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<FactsCache>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    QueryParams(query): QueryParams<AnalyticsQuery>,
) -> Result<Response, ApiError> {
    if query.token.is_none() && browser_navigation(&headers) {
        let query = raw.map(|q| format!("?{q}")).unwrap_or_default();
        // A query that is no valid header value (raw non-ASCII bytes) loses its filters rather than failing.
        let location = HeaderValue::try_from(format!("/#/insights{query}"))
            .unwrap_or_else(|_| HeaderValue::from_static("/#/insights"));
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response());
    }
    let identity = reader(&state, &headers, &query).await?;
    if query.format.is_some() {
        return Err(ApiError::Unprocessable(
            "/insights is a page; for rows use /api/analytics/incidents?format=csv".into(),
        ));
    }
    let filter = query.filter(&state.templates.current())?;
    let rows = facts(&state, &cache, &filter, &identity).await?;
    let html = insights::page(&rows, &query.describe());
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Its filters say what someone was looking into: keep them out of other sites' Referer headers.
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response())
}

/// Every row the caller may see, drills included: the role rotation counts drills apart, never leaves them out.
async fn all_rows(
    state: &AppState,
    cache: &FactsCache,
    identity: &Identity,
) -> Result<Vec<Facts>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let filter = Filter {
        include_drills: true,
        ..Filter::default()
    };
    facts(state, cache, &filter, identity).await
}

/// The person of `/api/people/{name}/roles`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct PersonName {
    /// The person (a token name).
    name: String,
}

/// `GET /api/people/{name}/roles` (read): which roles the person held across the incidents the caller may see
/// (real incidents and drills apart): per role how often, how long and when last, and the incidents.
#[utoipa::path(
    get,
    path = "/api/people/{name}/roles",
    tag = "analytics",
    params(PersonName),
    responses(
        (status = 200, body = rotation::PersonRoles),
        (status = 422, response = Unprocessable),
        Refusals,
    )
)]
async fn person_roles(
    identity: Identity,
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<FactsCache>>,
    Path(PersonName { name }): Path<PersonName>,
) -> Result<Json<rotation::PersonRoles>, ApiError> {
    let name = person(&name)?;
    let rows = all_rows(&state, &cache, &identity).await?;
    Ok(Json(rotation::person_roles(&rows, name, Utc::now())))
}

/// At most this many people are ranked at once: a room, not the company.
const MAX_PRESENT: usize = 100;

/// Query of `/api/people/rotation`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RotationQuery {
    /// The people present, comma-separated (the incident page's presence, or whoever the declarer lists); absent:
    /// the people with live `/sync` connections to this node.
    present: Option<String>,
}

/// A person's name as a route takes it: trimmed, not empty, not too long.
fn person(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > incident_doc::MAX_SHORT_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "a person is a name of 1 to {} characters",
            incident_doc::MAX_SHORT_CHARS
        )));
    }
    Ok(name)
}

/// `GET /api/people/rotation[?present=a,b,c]` (read): the people present ranked for command, those who never
/// commanded a real incident first, then those who commanded longest ago, each with the reason.
#[utoipa::path(
    get,
    path = "/api/people/rotation",
    tag = "analytics",
    params(RotationQuery),
    responses(
        (status = 200, body = rotation::Rotation),
        (status = 400, response = BadRequest),
        (status = 422, response = Unprocessable),
        Refusals,
    )
)]
async fn rotation(
    identity: Identity,
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<FactsCache>>,
    QueryParams(query): QueryParams<RotationQuery>,
) -> Result<Json<rotation::Rotation>, ApiError> {
    identity.require(Scope::Read, "read incidents")?;
    let mut present: Vec<String> = match &query.present {
        Some(list) => list
            .split(',')
            .filter(|name| !name.trim().is_empty())
            .map(|name| person(name).map(str::to_owned))
            .collect::<Result<_, _>>()?,
        None => state.sync.sessions.names(),
    };
    present.retain(|name| name != incident_doc::schema::SERVER_NAME);
    present.sort();
    present.dedup();
    if present.len() > MAX_PRESENT {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_PRESENT} people are ranked at once"
        )));
    }
    let rows = all_rows(&state, &cache, &identity).await?;
    Ok(Json(rotation::rotation(&rows, present, Utc::now())))
}
