//! The deliverer: one task per server node that sends the outbox's due deliveries, records every attempt, retries
//! failures with exponential backoff, and sweeps open incidents for fields gone stale.
//!
//! It claims deliveries from the store (so nodes sharing a database never send the same row at once), POSTs each
//! with its signature headers, and records the outcome: 2xx is delivered, anything else (a refused connection, a
//! timeout, another status) is retried after [`DeliverySettings::backoff`] until `max-attempts`. The queue lives in
//! the store, so a restart resumes where the last run stopped; an attempt cut short by a crash is retried once its
//! claim's lease runs out. Receivers see each event once unless they accept it and the node dies before recording
//! that (at-least-once delivery); the `Commandpost-Event-Id` header lets them drop such a repeat.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use incident_doc::Incident;
use incident_doc::signals::Event;
use reqwest::header::CONTENT_TYPE;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{DeliverySettings, Webhooks, signature};
use crate::metrics::Metrics;
use crate::store::outbox::{Attempt, Delivery, NewDelivery, Next};
use crate::store::{ListFilter, Store};
use crate::wire::DocumentId;

/// How often the outbox is polled for retries that became due (new deliveries wake the task at once).
const POLL: Duration = Duration::from_secs(1);

/// Deliveries claimed per round.
const BATCH: usize = 64;

/// The header carrying the event id, the same on every attempt: receivers drop repeats by it.
pub const EVENT_ID_HEADER: &str = "Commandpost-Event-Id";
/// The header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "Commandpost-Timestamp";
/// The header carrying `sha256=<hex HMAC>` (see [`signature`]).
pub const SIGNATURE_HEADER: &str = "Commandpost-Signature";
/// The header carrying the attempt number, 1 for the first.
pub const ATTEMPT_HEADER: &str = "Commandpost-Attempt";

/// Starts the deliverer; it stops when `shutdown` is cancelled, after the attempts under way.
pub fn spawn(
    store: Arc<dyn Store>,
    webhooks: Arc<Webhooks>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let timeout = Duration::from_secs(webhooks.settings.timeout_secs.max(1));
        let client = match reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("commandpost/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                warn!(error = %e, "webhooks disabled: the HTTP client cannot start");
                return;
            }
        };
        let sweep_every = Duration::from_secs(webhooks.settings.stale_check_secs.max(1));
        let mut next_sweep = tokio::time::Instant::now() + sweep_every;
        while !shutdown.is_cancelled() {
            let full = match round(&*store, &webhooks, &metrics, &client, timeout).await {
                Ok(sent) => sent == BATCH,
                Err(e) => {
                    debug!(error = %e, "webhook outbox unavailable");
                    false
                }
            };
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + sweep_every;
                if webhooks.wants("fieldStale")
                    && let Err(e) = sweep(&store, &webhooks).await
                {
                    debug!(error = %e, "staleness sweep failed");
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = webhooks.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// Claims the due deliveries and sends them, each endpoint's in order, endpoints side by side; returns how many
/// were claimed.
async fn round(
    store: &dyn Store,
    webhooks: &Webhooks,
    metrics: &Metrics,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<usize, crate::store::StoreError> {
    let now = Utc::now();
    // The lease outlasts an attempt, so only a node that died mid-attempt leaves a claim to expire.
    let lease = now + timeout * 3;
    let claimed = store.claim_deliveries(now, lease, BATCH).await?;
    let count = claimed.len();
    let mut by_endpoint: Vec<(String, Vec<Delivery>)> = Vec::new();
    for delivery in claimed {
        match by_endpoint
            .iter_mut()
            .find(|(name, _)| *name == delivery.endpoint)
        {
            Some((_, list)) => list.push(delivery),
            None => by_endpoint.push((delivery.endpoint.clone(), vec![delivery])),
        }
    }
    let sends = by_endpoint.into_iter().map(|(_, deliveries)| async move {
        for delivery in deliveries {
            let attempt = attempt(client, webhooks, &delivery).await;
            match attempt.next {
                Next::Done => metrics.webhooks_delivered.inc(),
                Next::RetryAt(_) => metrics.webhook_attempts_failed.inc(),
                Next::GiveUp => {
                    metrics.webhook_attempts_failed.inc();
                    metrics.webhooks_given_up.inc();
                }
            }
            // The error is scrubbed of the endpoint's address (see `scrub`); a delivery given up is worth an
            // operator's attention, each failed attempt before it is not.
            match (&attempt.error, &attempt.next) {
                (Some(error), Next::GiveUp) => {
                    warn!(endpoint = %delivery.endpoint, event = %delivery.event_id, attempts = delivery.attempts, %error, "webhook delivery given up");
                }
                (Some(error), _) => {
                    debug!(endpoint = %delivery.endpoint, event = %delivery.event_id, %error, "webhook delivery failed");
                }
                (None, _) => {}
            }
            if let Err(e) = store.finish_delivery(delivery.id, &attempt).await {
                // The claim's lease runs out and the delivery is tried again: a repeat, never a loss.
                warn!(error = %e, "recording a webhook attempt failed");
            }
        }
    });
    futures_util::future::join_all(sends).await;
    Ok(count)
}

/// One attempt at one delivery.
async fn attempt(client: &reqwest::Client, webhooks: &Webhooks, delivery: &Delivery) -> Attempt {
    let settings: &DeliverySettings = &webhooks.settings;
    let Some(endpoint) = webhooks.endpoint(&delivery.endpoint) else {
        return Attempt {
            at: Utc::now(),
            status: None,
            error: Some("the endpoint is no longer configured".into()),
            next: Next::GiveUp,
        };
    };
    let body = endpoint.body(&delivery.payload);
    let timestamp = Utc::now().timestamp();
    let mut request = client
        .post(&endpoint.url)
        .header(CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, &delivery.event_id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(ATTEMPT_HEADER, delivery.attempts.to_string());
    if let Some(secret) = &endpoint.secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, timestamp, &body));
    }
    let (status, error) = match request.body(body).send().await {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            (
                Some(status.as_u16()),
                Some(scrub(&format!("HTTP {status}: {text}"), &endpoint.url)),
            )
        }
        Err(e) => (
            None,
            Some(scrub(&error_chain(&e.without_url()), &endpoint.url)),
        ),
    };
    let next = match &error {
        None => Next::Done,
        Some(_) if delivery.attempts >= settings.max_attempts => Next::GiveUp,
        Some(_) => {
            let delay = chrono::Duration::from_std(settings.backoff(delivery.attempts))
                .unwrap_or(chrono::Duration::MAX);
            Next::RetryAt(Utc::now() + delay)
        }
    };
    Attempt {
        at: Utc::now(),
        status,
        error,
        next,
    }
}

/// An error and its causes on one line ("error sending request: connection refused"). Give it the error
/// [`reqwest::Error::without_url`] leaves, then [`scrub`] the line: it is stored and logged.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` without the endpoint's address: the delivery log (admins read it) and the log keep what failed, never
/// where to. Slack-style URLs carry their credential in the path and query, and an error of the HTTP client or a
/// receiver's answer may quote the URL whole, or the path after a redirect, so every form is replaced by
/// [`Endpoint::shown_url`](super::Endpoint::shown_url)'s `scheme://host/…`.
fn scrub(text: &str, url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return text.replace(url, "…");
    };
    let shown = format!(
        "{}://{}/…",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default()
    );
    let tail = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    // The longest forms first, so a shorter one never leaves the rest of a longer one behind.
    let mut forms = vec![url.to_owned(), parsed.to_string()];
    if tail.len() > 1 {
        forms.push(tail);
    }
    if parsed.path().len() > 1 {
        forms.push(parsed.path().to_owned());
    }
    if let Some(query) = parsed.query().filter(|q| !q.is_empty()) {
        forms.push(query.to_owned());
    }
    let mut out = text.to_owned();
    for form in forms {
        out = out.replace(&form, &shown);
    }
    out
}

/// Queues a `fieldStale` event for every field past its due time in the open incidents. Documents are read from
/// storage, off the async threads, not through their actors, so the sweep keeps no incident loaded.
async fn sweep(
    store: &Arc<dyn Store>,
    webhooks: &Webhooks,
) -> Result<(), crate::store::StoreError> {
    let now = Utc::now();
    let open: Vec<_> = store
        .list(&ListFilter::default())
        .await?
        .into_iter()
        .filter(|row| row.status != "closed")
        .collect();
    let mut queued: Vec<NewDelivery> = Vec::new();
    for row in open {
        let Ok(doc) = row.id.parse::<DocumentId>() else {
            continue;
        };
        let Some(stored) = store.load(&row.id).await? else {
            continue;
        };
        let found = tokio::task::spawn_blocking(move || {
            let mut incident = Incident::load(&stored.chunks.concat()).ok()?;
            let stale = stale_events(&incident, now);
            Some((incident.signals(), stale))
        })
        .await
        .ok()
        .flatten();
        if let Some((signals, stale)) = found {
            for event in &stale {
                queued.extend(webhooks.stale(doc, &signals, event, now));
            }
        }
    }
    if !queued.is_empty() {
        store.enqueue(queued).await?;
        webhooks.wake.notify_one();
    }
    Ok(())
}

/// The `fieldStale` events of an incident at `now`: one per field past its due time.
fn stale_events(incident: &Incident, now: chrono::DateTime<Utc>) -> Vec<Event> {
    let mut view = incident.view();
    view.mark_stale(now);
    view.fields
        .iter()
        .filter(|f| f.stale)
        .filter_map(|f| {
            Some(Event::FieldStale {
                field: f.def.key.clone(),
                label: f.def.label.clone(),
                due_at: f.due_at?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use incident_doc::{Declaration, Editor, Operation, template};

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::webhooks::{Endpoint, Format};

    /// A drill (30-minute cadence on the summary and detailed status) declared at `t0`, its summary refreshed 20
    /// minutes later.
    fn drill(t0: chrono::DateTime<Utc>) -> Incident {
        let template = template::builtin()
            .into_iter()
            .find(|t| t.id == "drill")
            .expect("the drill template");
        let declaration = Declaration {
            name: "Replay of the DNS outage".into(),
            number: Some(7),
        };
        let mut incident =
            Incident::create(&template, &declaration, &Editor::new("alice", t0), None)
                .expect("create");
        let edit = Operation::SetText {
            field: "summary".into(),
            text: "DNS answers time out.".into(),
        };
        incident
            .apply(&edit, &Editor::new("erin", t0 + Duration::minutes(20)))
            .expect("edit");
        incident
    }

    #[test]
    fn scrubbed_errors_keep_what_failed_and_lose_where_to() {
        let url = "https://hooks.slack.com/services/T0AB/B0CD/s3cr3tPath?token=q5ecret";
        let echoed = format!(
            "HTTP 404 Not Found: no hook at /services/T0AB/B0CD/s3cr3tPath?token=q5ecret ({url})"
        );
        let scrubbed = scrub(&echoed, url);
        assert_eq!(
            scrubbed,
            "HTTP 404 Not Found: no hook at https://hooks.slack.com/… (https://hooks.slack.com/…)"
        );
        let path_only = scrub("redirected to /services/T0AB/B0CD/s3cr3tPath", url);
        assert!(!path_only.contains("s3cr3t"), "{path_only}");
        let query_only = scrub("bad token=q5ecret", url);
        assert!(!query_only.contains("q5ecret"), "{query_only}");
        assert_eq!(
            scrub("error sending request: connection refused", url),
            "error sending request: connection refused"
        );
    }

    #[tokio::test]
    async fn client_errors_name_no_url() {
        // A port nobody listens on: the connection is refused, and reqwest's error names the whole URL.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/services/T0AB/B0CD/s3cr3tPath");
        let error = reqwest::Client::new()
            .post(&url)
            .send()
            .await
            .expect_err("nobody listens");
        assert!(
            error_chain(&error).contains("s3cr3tPath"),
            "the raw error names the URL"
        );
        let line = scrub(&error_chain(&error.without_url()), &url);
        assert!(
            !line.contains("s3cr3t") && !line.contains("/services"),
            "{line}"
        );
        assert!(line.contains("error sending request"), "{line}");
    }

    #[tokio::test]
    async fn stale_fields_are_queued_once_per_due_time() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
            .single()
            .expect("a valid time");
        let mut incident = drill(t0);
        let due = |minutes| t0 + Duration::minutes(minutes);
        assert!(stale_events(&incident, due(29)).is_empty());
        let at_40: Vec<String> = stale_events(&incident, due(40))
            .iter()
            .map(|e| match e {
                Event::FieldStale { field, due_at, .. } => format!("{field} {due_at}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(at_40, ["detailedStatus 2026-11-25 09:30:00 UTC"]);
        assert_eq!(
            stale_events(&incident, due(60)).len(),
            2,
            "the summary's turn"
        );

        let endpoint = Endpoint {
            name: "ops".into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            format: Format::Json,
            events: Some(vec!["fieldStale".into()]),
            drills: true,
        };
        let webhooks = Webhooks::new(vec![endpoint], DeliverySettings::default()).expect("valid");
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path()).expect("store");
        let doc = DocumentId::random();
        let signals = incident.signals();
        // Two sweeps (or two nodes) find the same stale fields: each is queued once.
        for _ in 0..2 {
            let mut queued = Vec::new();
            for event in stale_events(&incident, due(60)) {
                queued.extend(webhooks.stale(doc, &signals, &event, due(60)));
            }
            store.enqueue(queued).await.expect("enqueue");
        }
        let log = store.deliveries("ops", 10).await.expect("log");
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log.iter().all(|d| d.kind == "fieldStale"));
        store.close().await.expect("close");
    }
}
