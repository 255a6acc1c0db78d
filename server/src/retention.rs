//! Retention: an optional policy that deletes closed incidents once they are older than a configured age (some
//! organisations must not keep records longer), drills by an age of their own.
//!
//! An incident's age is the time since its last change: a closed incident is an archive that nobody edits (writes
//! answer 409 until an admin reopens it), so that is the time since it was closed, or reopened and closed again.
//! Open incidents are never deleted, whatever their age. The policy runs as a dry run until told to delete: the
//! server then logs what it would delete and `commandpost retention` lists it, so a mistaken age is seen before
//! anything is gone. Deleting goes through the registry (the live document is closed first) exactly as the admin
//! route does; every deletion is logged with the incident's number, id and title.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use incident_doc::schema::Status;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::audit;
use crate::document::Registry;
use crate::metrics::Metrics;
use crate::store::{IncidentSummary, ListFilter, Store, StoreError};
use crate::templates::Templates;

/// The `[retention]` table of the config file. Without an age nothing is ever deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionSettings {
    /// Closed incidents unchanged for this many days are deleted.
    pub closed_after_days: Option<u32>,
    /// Closed drills unchanged for this many days are deleted [default: `closed-after-days`].
    pub drills_after_days: Option<u32>,
    /// `false` (the default) is a dry run: what is due is logged, counted and listed, nothing is deleted.
    pub delete: bool,
    /// Seconds between two sweeps [default: one hour].
    pub check_every_secs: Option<u64>,
}

impl RetentionSettings {
    /// Whether a policy is set at all.
    pub fn enabled(&self) -> bool {
        self.closed_after_days.is_some() || self.drills_after_days.is_some()
    }

    /// The closed incidents among `rows` that the policy deletes at `now`; `is_drill` tells drills by their
    /// template. Oldest first.
    pub fn due<'a>(
        &self,
        rows: &'a [IncidentSummary],
        is_drill: impl Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Vec<&'a IncidentSummary> {
        let mut due: Vec<&IncidentSummary> = rows
            .iter()
            .filter(|row| row.status == Some(Status::Closed))
            .filter(|row| {
                let days = if is_drill(&row.template) {
                    self.drills_after_days.or(self.closed_after_days)
                } else {
                    self.closed_after_days
                };
                days.is_some_and(|days| {
                    now - row.updated_at >= chrono::Duration::days(i64::from(days))
                })
            })
            .collect();
        due.sort_by_key(|row| row.updated_at);
        due
    }
}

/// The closed incidents of `store` the policy deletes now.
pub async fn due_now(
    store: &dyn Store,
    settings: &RetentionSettings,
    templates: &Templates,
) -> Result<Vec<IncidentSummary>, StoreError> {
    let rows = store
        .list(&ListFilter {
            status: Some(Status::Closed),
            ..ListFilter::default()
        })
        .await?;
    let catalog = templates.current();
    let is_drill = |id: &str| catalog.get(id).is_some_and(|t| t.template.drill);
    Ok(settings
        .due(&rows, is_drill, Utc::now())
        .into_iter()
        .cloned()
        .collect())
}

/// Sweeps every `check-every-secs` until `stop`: counts what is due (`commandpost_retention_due`), and deletes it
/// when the policy says so, or logs it when the list changed (a dry run says it once, not every hour).
pub fn spawn(
    store: Arc<dyn Store>,
    registry: Registry,
    templates: Templates,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(settings.check_every_secs.unwrap_or(3600).max(1));
    tokio::spawn(async move {
        let mut last_due: Vec<String> = Vec::new();
        loop {
            match due_now(&*store, &settings, &templates).await {
                Ok(due) => {
                    metrics
                        .retention_due
                        .set(i64::try_from(due.len()).unwrap_or(i64::MAX));
                    if settings.delete {
                        delete(&*store, &registry, &metrics, &due).await;
                    } else {
                        let ids: Vec<String> = due.iter().map(|row| row.id.to_string()).collect();
                        if ids != last_due && !ids.is_empty() {
                            tracing::info!(
                                count = ids.len(),
                                incidents = %ids.join(", "),
                                "retention (dry run): these closed incidents would be deleted; set delete = true \
                                 under [retention] to delete them"
                            );
                        }
                        last_due = ids;
                    }
                }
                Err(error) => tracing::warn!(%error, "retention: listing closed incidents failed"),
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}

async fn delete(
    store: &dyn Store,
    registry: &Registry,
    metrics: &Metrics,
    due: &[IncidentSummary],
) {
    for row in due {
        match registry.delete(row.id).await {
            Ok(true) => {
                metrics.retention_deleted.inc();
                let event = audit::Event {
                    actor: audit::SERVER_ACTOR,
                    action: "incident.deleted",
                    target: &row.id.to_string(),
                    detail: serde_json::json!({
                        "reason": "retention",
                        "number": row.number,
                        "title": row.title,
                        "lastChanged": row.updated_at,
                    }),
                    from: None,
                };
                audit::record(store, metrics, event).await;
                tracing::info!(
                    number = row.number,
                    id = %row.id,
                    title = %row.title,
                    last_changed = %row.updated_at,
                    "retention: deleted a closed incident past its age"
                );
            }
            // Another node deleted it first.
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, id = %row.id, "retention: deleting failed; retried next sweep")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn row(
        name: &str,
        template: &str,
        status: Status,
        days_ago: i64,
        now: DateTime<Utc>,
    ) -> IncidentSummary {
        IncidentSummary {
            id: crate::store::conformance::doc_id(name),
            title: name.to_owned(),
            template: template.to_owned(),
            status: Some(status),
            severity: None,
            number: None,
            commander: None,
            created_at: now - chrono::Duration::days(days_ago + 1),
            updated_at: now - chrono::Duration::days(days_ago),
            restricted: false,
            members: Vec::new(),
            channel: None,
        }
    }

    #[test]
    fn only_closed_incidents_past_their_age_are_due_drills_by_their_own() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        let rows = vec![
            row("old open", "incident", Status::Active, 900, now),
            row("old closed", "incident", Status::Closed, 400, now),
            row("recent closed", "incident", Status::Closed, 100, now),
            row("closed drill", "drill", Status::Closed, 40, now),
            row("fresh drill", "drill", Status::Closed, 10, now),
        ];
        let is_drill = |t: &str| t == "drill";
        let titles = |settings: &RetentionSettings| -> Vec<String> {
            settings
                .due(&rows, is_drill, now)
                .iter()
                .map(|r| r.title.clone())
                .collect()
        };
        let policy = RetentionSettings {
            closed_after_days: Some(365),
            drills_after_days: Some(30),
            ..RetentionSettings::default()
        };
        assert_eq!(titles(&policy), ["old closed", "closed drill"]);
        let drills_follow = RetentionSettings {
            drills_after_days: None,
            ..policy.clone()
        };
        assert_eq!(titles(&drills_follow), ["old closed"]);
        let only_drills = RetentionSettings {
            closed_after_days: None,
            ..policy
        };
        assert_eq!(titles(&only_drills), ["closed drill"]);
        assert!(titles(&RetentionSettings::default()).is_empty());
        assert!(!RetentionSettings::default().enabled());
    }
}
