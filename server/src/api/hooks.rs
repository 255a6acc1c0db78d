//! Integrations over HTTP: Prometheus Alertmanager's webhook in (`/api/hooks/alertmanager`), and the outgoing
//! webhooks' endpoints and delivery logs for admins (`/api/webhooks`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use incident_doc::Operation;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::incidents::{IncidentId, editor, handle};
use super::openapi::{
    BadRequest, Conflict, ReadRefusals, Refusals, TooLarge, Unprocessable, WriteRefusals,
};
use super::{AppState, JsonBody, QueryParams};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;
use crate::store::outbox::DeliveryRecord;
use crate::webhooks::Format;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alertmanager))
        .routes(routes!(alertmanager_for))
        .routes(routes!(endpoints))
        .routes(routes!(deliveries))
}

/// Alertmanager's webhook payload (`version` 4), as its documentation gives it. Unused fields are accepted and
/// ignored, so newer Alertmanagers keep working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Notification {
    /// `"4"` for every current Alertmanager.
    #[schema(pattern = "^4$")]
    version: String,
    /// The group's status: `firing` or `resolved`.
    #[schema(pattern = "^(firing|resolved)$")]
    status: String,
    /// Labels every alert of the group shares.
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    /// The group's alerts.
    #[schema(min_items = 1)]
    alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Alert {
    /// `firing` or `resolved`.
    #[schema(pattern = "^(firing|resolved)$")]
    status: String,
    /// Identifying labels, `alertname` among them.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Descriptive annotations (`summary`, `description`, …).
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// When it started firing.
    starts_at: DateTime<Utc>,
    /// When it resolved (Alertmanager sends the zero time, year 1, while it fires).
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    /// The alert's source (a Prometheus graph).
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    /// Alertmanager's hash of the labels: one alert across notifications.
    fingerprint: String,
}

/// What a notification added.
#[derive(Serialize, ToSchema)]
struct Recorded {
    /// Alerts recorded in a timeline.
    recorded: usize,
    /// Alerts already recorded in the same state (Alertmanager sends again), which added nothing.
    duplicates: usize,
}

/// `POST /api/hooks/alertmanager` (write token): each alert goes to the incident its `incident` label (the
/// configured label name) holds.
#[utoipa::path(
    post,
    path = "/api/hooks/alertmanager",
    tag = "integrations",
    request_body = Notification,
    responses(
        (status = 200, body = Recorded),
        (status = 400, response = BadRequest),
        Refusals,
        (status = 404, description = "An alert's label names no incident", body = crate::error::ErrorBody),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 422, response = Unprocessable),
    )
)]
async fn alertmanager(
    identity: Identity,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Notification>,
) -> Result<Json<Recorded>, ApiError> {
    record_alerts(identity, state, None, body).await
}

/// `POST /api/hooks/alertmanager/{id}` (write token): every alert goes to incident `id`.
#[utoipa::path(
    post,
    path = "/api/hooks/alertmanager/{id}",
    tag = "integrations",
    params(IncidentId),
    request_body = Notification,
    responses(
        (status = 200, body = Recorded),
        WriteRefusals,
    )
)]
async fn alertmanager_for(
    identity: Identity,
    State(state): State<AppState>,
    Path(IncidentId { id }): Path<IncidentId>,
    JsonBody(body): JsonBody<Notification>,
) -> Result<Json<Recorded>, ApiError> {
    record_alerts(identity, state, Some(id), body).await
}

/// Checks the whole notification, then records each incident's alerts as one change. Answers
/// `{"recorded": n, "duplicates": n}`: a notification Alertmanager sends again adds nothing.
async fn record_alerts(
    identity: Identity,
    state: AppState,
    incident: Option<String>,
    body: Notification,
) -> Result<Json<Recorded>, ApiError> {
    identity.require(Scope::Write, "record alerts")?;
    if body.version != "4" {
        return Err(ApiError::Unprocessable(format!(
            "unsupported Alertmanager payload version {:?} (expected \"4\")",
            body.version
        )));
    }
    if !matches!(body.status.as_str(), "firing" | "resolved") {
        return Err(ApiError::Unprocessable(format!(
            "unknown notification status {:?} (expected firing or resolved)",
            body.status
        )));
    }
    if body.alerts.is_empty() {
        return Err(ApiError::Unprocessable(
            "the notification has no alerts".into(),
        ));
    }
    let label = &*state.alertmanager_label;
    // Incident id → its alerts' operations, in payload order; everything is checked before anything is written.
    let mut batches: Vec<(String, Vec<Operation>)> = Vec::new();
    for alert in &body.alerts {
        let target = match &incident {
            Some(id) => id.clone(),
            None => alert
                .labels
                .get(label)
                .or_else(|| body.common_labels.get(label))
                .cloned()
                .ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "alert {} has no {label:?} label naming its incident (or post to \
                         /api/hooks/alertmanager/<incident id>)",
                        alert_name(alert)
                    ))
                })?,
        };
        let op = operation(alert, label)?;
        match batches.iter_mut().find(|(id, _)| *id == target) {
            Some((_, ops)) => ops.push(op),
            None => batches.push((target, vec![op])),
        }
    }
    let mut handles = Vec::with_capacity(batches.len());
    for (id, ops) in batches {
        handles.push((handle(&state, &identity, &id).await?, ops));
    }
    let (mut recorded, mut duplicates) = (0, 0);
    for (handle, ops) in handles {
        let applied = handle.apply(ops, editor(&identity)).await?;
        let added = applied.iter().filter(|a| a.id.is_some()).count();
        recorded += added;
        duplicates += applied.len() - added;
    }
    Ok(Json(Recorded {
        recorded,
        duplicates,
    }))
}

fn alert_name(alert: &Alert) -> String {
    alert
        .labels
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| alert.fingerprint.clone())
}

/// The timeline entry of one alert: `**FIRING** HighErrorRate (service=checkout, severity=critical): summary`,
/// with a link to its source; at its start when firing, at its end when resolved.
fn operation(alert: &Alert, incident_label: &str) -> Result<Operation, ApiError> {
    let firing = match alert.status.as_str() {
        "firing" => true,
        "resolved" => false,
        other => {
            return Err(ApiError::Unprocessable(format!(
                "alert {} has unknown status {other:?} (expected firing or resolved)",
                alert_name(alert)
            )));
        }
    };
    let labels: Vec<String> = alert
        .labels
        .iter()
        .filter(|(k, _)| *k != "alertname" && *k != incident_label)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut text = format!(
        "**{}** {}",
        if firing { "FIRING" } else { "RESOLVED" },
        alert_name(alert)
    );
    if !labels.is_empty() {
        text.push_str(&format!(" ({})", labels.join(", ")));
    }
    if let Some(summary) = alert
        .annotations
        .get("summary")
        .or_else(|| alert.annotations.get("description"))
    {
        text.push_str(&format!(": {}", summary.trim()));
    }
    if let Some(url) = alert.generator_url.as_deref().filter(|u| !u.is_empty()) {
        text.push_str(&format!(" ([source]({url}))"));
    }
    // A firing alert's endsAt is Alertmanager's zero time or a future estimate; a resolved one's is its end.
    let ended = alert
        .ends_at
        .filter(|t| *t > alert.starts_at && *t <= Utc::now());
    let at = if firing {
        alert.starts_at
    } else {
        ended.unwrap_or_else(Utc::now)
    };
    Ok(Operation::RecordAlert {
        fingerprint: alert.fingerprint.clone(),
        firing,
        starts_at: alert.starts_at,
        text,
        at,
    })
}

/// The configured webhook endpoints.
#[derive(Serialize, ToSchema)]
struct Endpoints<'a> {
    /// In configuration order.
    endpoints: Vec<EndpointRow<'a>>,
}

/// One endpoint, without its secret.
#[derive(Serialize, ToSchema)]
struct EndpointRow<'a> {
    /// Its name, as the delivery log route takes it.
    name: &'a str,
    /// Scheme and host only: chat tools put their credentials in the path.
    url: String,
    /// The body sent.
    format: Format,
    /// The event types sent, or `null` for all.
    events: Option<&'a [String]>,
    /// Whether drills' events are sent.
    drills: bool,
    /// Whether restricted incidents' events are sent.
    restricted: bool,
    /// Whether deliveries carry an HMAC signature.
    signed: bool,
}

/// `GET /api/webhooks` (admin): the configured endpoints, without secrets; URLs show scheme and host only, since
/// chat tools put their credentials in the path.
#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "integrations",
    responses(
        (status = 200, body = Endpoints),
        Refusals,
    )
)]
async fn endpoints(
    identity: Identity,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    identity.require(Scope::Admin, "read the webhook configuration")?;
    let endpoints = state
        .webhooks
        .endpoints
        .iter()
        .map(|e| EndpointRow {
            name: &e.name,
            url: e.shown_url(),
            format: e.format,
            events: e.events.as_deref(),
            drills: e.drills,
            restricted: e.restricted,
            signed: e.secret.is_some(),
        })
        .collect();
    Ok(Json(Endpoints { endpoints }).into_response())
}

/// Query of the delivery log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// At most this many deliveries, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A webhook endpoint, by name, in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct EndpointName {
    /// The endpoint's configured name.
    name: String,
}

/// An endpoint's delivery log.
#[derive(Serialize, ToSchema)]
struct Log {
    /// The endpoint's name.
    endpoint: String,
    /// Newest first.
    deliveries: Vec<DeliveryRecord>,
}

/// `GET /api/webhooks/{name}/deliveries?limit=` (admin): the endpoint's delivery log, newest first.
#[utoipa::path(
    get,
    path = "/api/webhooks/{name}/deliveries",
    tag = "integrations",
    params(EndpointName, LogQuery),
    responses(
        (status = 200, body = Log),
        (status = 422, response = Unprocessable),
        ReadRefusals,
    )
)]
async fn deliveries(
    identity: Identity,
    State(state): State<AppState>,
    Path(EndpointName { name }): Path<EndpointName>,
    query: Result<QueryParams<LogQuery>, ApiError>,
) -> Result<Json<Log>, ApiError> {
    identity.require(Scope::Admin, "read webhook deliveries")?;
    let QueryParams(query) = query?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable(
            "limit must be between 1 and 1000".into(),
        ));
    }
    if state.webhooks.endpoint(&name).is_none() {
        return Err(ApiError::NotFound);
    }
    let log = state.store.deliveries(&name, limit).await?;
    Ok(Json(Log {
        endpoint: name,
        deliveries: log,
    }))
}
