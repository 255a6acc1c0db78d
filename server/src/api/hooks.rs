//! Integrations over HTTP: Prometheus Alertmanager's webhook in (`/api/hooks/alertmanager`), and the outgoing
//! webhooks' endpoints and delivery logs for admins (`/api/webhooks`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use incident_doc::Operation;
use serde::Deserialize;
use serde_json::{Value, json};

use super::incidents::{editor, handle};
use super::{AppState, JsonBody, QueryParams};
use crate::auth::{Identity, Scope};
use crate::error::ApiError;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/hooks/alertmanager", post(alertmanager))
        .route("/api/hooks/alertmanager/{id}", post(alertmanager_for))
        .route("/api/webhooks", get(endpoints))
        .route("/api/webhooks/{name}/deliveries", get(deliveries))
}

/// Alertmanager's webhook payload (`version` 4), as its documentation gives it. Unused fields are accepted and
/// ignored, so newer Alertmanagers keep working.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    /// `"4"` for every current Alertmanager.
    version: String,
    /// The group's status: `firing` or `resolved`.
    status: String,
    /// Labels every alert of the group shares.
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    /// The group's alerts.
    alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    /// `firing` or `resolved`.
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

/// `POST /api/hooks/alertmanager` (write token): each alert goes to the incident its `incident` label (the
/// configured label name) holds.
async fn alertmanager(
    identity: Identity,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Notification>,
) -> Result<Json<Value>, ApiError> {
    record_alerts(identity, state, None, body).await
}

/// `POST /api/hooks/alertmanager/{id}` (write token): every alert goes to incident `id`.
async fn alertmanager_for(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Notification>,
) -> Result<Json<Value>, ApiError> {
    record_alerts(identity, state, Some(id), body).await
}

/// Checks the whole notification, then records each incident's alerts as one change. Answers
/// `{"recorded": n, "duplicates": n}`: a notification Alertmanager sends again adds nothing.
async fn record_alerts(
    identity: Identity,
    state: AppState,
    incident: Option<String>,
    body: Notification,
) -> Result<Json<Value>, ApiError> {
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
        handles.push((handle(&state, &id).await?, ops));
    }
    let (mut recorded, mut duplicates) = (0, 0);
    for (handle, ops) in handles {
        let applied = handle.apply(ops, editor(&identity)).await?;
        let added = applied.iter().filter(|a| a.id.is_some()).count();
        recorded += added;
        duplicates += applied.len() - added;
    }
    Ok(Json(
        json!({"recorded": recorded, "duplicates": duplicates}),
    ))
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

/// `GET /api/webhooks` (admin): the configured endpoints, without secrets; URLs show scheme and host only, since
/// chat tools put their credentials in the path.
async fn endpoints(
    identity: Identity,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    identity.require(Scope::Admin, "read the webhook configuration")?;
    let list: Vec<Value> = state
        .webhooks
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "url": e.shown_url(),
                "format": e.format,
                "events": e.events,
                "drills": e.drills,
                "signed": e.secret.is_some(),
            })
        })
        .collect();
    Ok(Json(json!({ "endpoints": list })))
}

/// Query of the delivery log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// At most this many deliveries, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /api/webhooks/{name}/deliveries?limit=` (admin): the endpoint's delivery log, newest first.
async fn deliveries(
    identity: Identity,
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<QueryParams<LogQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "endpoint": name, "deliveries": log })))
}
