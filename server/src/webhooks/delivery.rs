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

use chrono::{DateTime, Utc};
use incident_doc::Incident;
use incident_doc::schema::Status;
use incident_doc::signals::Event;
use reqwest::header::CONTENT_TYPE;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{DeliverySettings, Endpoint, Webhooks, signature};
use crate::error::error_chain;
use crate::metrics::Metrics;
use crate::store::outbox::{Attempt, Delivery, NewDelivery, Next, Sink};
use crate::store::{ListFilter, Store};

/// How often the outbox is polled for retries that became due (new deliveries wake the task at once, and a retry
/// this node scheduled wakes it at its own time, so `retry-initial-ms` is kept to the millisecond, not to the poll).
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
            let (full, next_retry) =
                match round(&*store, &webhooks, &metrics, &client, timeout).await {
                    Ok(round) => (round.claimed == BATCH, round.next_retry),
                    Err(e) => {
                        debug!(error = %e, "webhook outbox unavailable");
                        (false, None)
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
                () = tokio::time::sleep(pause(next_retry, Utc::now())) => {}
            }
        }
    })
}

/// How long the deliverer sleeps when nothing wakes it: until the earliest retry it scheduled, at most [`POLL`].
fn pause(next_retry: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    next_retry.map_or(POLL, |at| {
        (at - now).to_std().unwrap_or(Duration::ZERO).min(POLL)
    })
}

/// What one round did.
struct Round {
    /// Deliveries claimed; a full batch means more may be waiting.
    claimed: usize,
    /// The earliest retry this round scheduled.
    next_retry: Option<DateTime<Utc>>,
}

/// Claims the due deliveries and sends them, each endpoint's in order, endpoints side by side.
async fn round(
    store: &dyn Store,
    webhooks: &Webhooks,
    metrics: &Metrics,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<Round, crate::store::StoreError> {
    let now = Utc::now();
    // The lease outlasts an attempt, so only a node that died mid-attempt leaves a claim to expire.
    let lease = now + timeout * 3;
    let claimed = store
        .claim_deliveries(Sink::Webhook, now, lease, BATCH)
        .await?;
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
        let mut next_retry: Option<DateTime<Utc>> = None;
        for delivery in deliveries {
            let attempt = attempt(client, webhooks, &delivery).await;
            match attempt.next {
                Next::Done => metrics.webhooks_delivered.inc(),
                Next::RetryAt(at) => {
                    metrics.webhook_attempts_failed.inc();
                    next_retry = Some(next_retry.map_or(at, |earliest| earliest.min(at)));
                }
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
        next_retry
    });
    let next_retry = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .min();
    Ok(Round {
        claimed: count,
        next_retry,
    })
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
                Some(scrub(&format!("HTTP {status}: {text}"), endpoint)),
            )
        }
        Err(e) => (None, Some(scrub(&error_chain(&e.without_url()), endpoint))),
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

/// `text` without the endpoint's address: the delivery log (admins read it) and the log keep what failed, never
/// where to. Slack-style URLs carry their credential in the path and query, and an error of the HTTP client or a
/// receiver's answer may quote the URL whole, its path (after a redirect, say) or a piece of it, so the URL, its
/// path and query become [`Endpoint::shown_url`]'s `scheme://host:port/…`, and any other path segment or query value
/// of [`SECRET_PIECE`] characters or more becomes `…`.
fn scrub(text: &str, endpoint: &Endpoint) -> String {
    let shown = endpoint.shown_url();
    let Ok(url) = reqwest::Url::parse(&endpoint.url) else {
        return text.replace(&endpoint.url, &shown);
    };
    let path = url.path();
    let query = url.query().unwrap_or_default();
    // Longest first, so a shorter form never leaves the rest of a longer one behind.
    let mut forms: Vec<(String, &str)> = vec![
        (endpoint.url.clone(), &shown),
        (url.to_string(), &shown),
        (format!("{path}?{query}"), &shown),
        (path.to_owned(), &shown),
        (query.to_owned(), &shown),
    ];
    let pieces = path.split('/').chain(
        query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(_, v)| v)),
    );
    forms.extend(
        pieces
            .filter(|piece| piece.chars().count() >= SECRET_PIECE)
            .map(|piece| (piece.to_owned(), "…")),
    );
    let mut out = text.to_owned();
    for (form, replacement) in forms {
        if form.len() > 1 && form != "/?" {
            out = out.replace(&form, replacement);
        }
    }
    out
}

/// The shortest path segment or query value [`scrub`] takes for a credential: Slack's hook ids (`T…`, `B…`) are 9
/// to 11 characters, its secret 24, and shorter pieces (`/hooks`, `/api`) are words an error needs.
const SECRET_PIECE: usize = 8;

/// Queues a `fieldStale` event for every field past its due time in the open incidents. Documents are read from
/// storage, off the async threads, not through their actors, so the sweep keeps no incident loaded.
async fn sweep(
    store: &Arc<dyn Store>,
    webhooks: &Webhooks,
) -> Result<(), crate::store::StoreError> {
    let now = Utc::now();
    let mut queued: Vec<NewDelivery> = Vec::new();
    for stale in stale_incidents(store, now, false).await? {
        for (event, _) in &stale.events {
            queued.extend(webhooks.stale(stale.doc, &stale.signals, event, now));
        }
    }
    if !queued.is_empty() {
        store.enqueue(queued).await?;
        webhooks.wake.notify_one();
    }
    Ok(())
}

/// An open incident with fields gone stale.
pub(crate) struct Stale {
    /// The incident.
    pub doc: wire::DocumentId,
    /// Its signals now.
    pub signals: incident_doc::signals::Signals,
    /// One `fieldStale` event per stale field, with whoever holds the field's owner role (if the field has one).
    pub events: Vec<(Event, Option<String>)>,
}

/// The open incidents with fields past their due time at `now` (only those bound to a chat channel when
/// `bound_only`). Documents are read from storage, off the async threads, not through their actors.
pub(crate) async fn stale_incidents(
    store: &Arc<dyn Store>,
    now: DateTime<Utc>,
    bound_only: bool,
) -> Result<Vec<Stale>, crate::store::StoreError> {
    let open: Vec<_> = store
        .list(&ListFilter::default())
        .await?
        .into_iter()
        .filter(|row| row.status != Some(Status::Closed))
        .filter(|row| !bound_only || row.channel.is_some())
        .collect();
    let mut out = Vec::new();
    for row in open {
        let doc = row.id;
        let Some(stored) = store.load(doc).await? else {
            continue;
        };
        let found = tokio::task::spawn_blocking(move || {
            let mut incident = stored.incident().ok()?;
            let signals = incident.signals();
            let events = stale_events(&incident, &signals, now);
            Some((signals, events))
        })
        .await
        .ok()
        .flatten();
        if let Some((signals, events)) = found
            && !events.is_empty()
        {
            out.push(Stale {
                doc,
                signals,
                events,
            });
        }
    }
    Ok(out)
}

/// The `fieldStale` events of an incident at `now`: one per field past its due time, with the holder of the
/// field's owner role (its assignee, or the commander for a role nobody else holds); and `reconsiderDue`, the
/// commander's, when the reconsider prompt is past due.
fn stale_events(
    incident: &Incident,
    signals: &incident_doc::signals::Signals,
    now: chrono::DateTime<Utc>,
) -> Vec<(Event, Option<String>)> {
    let mut view = incident.view();
    view.mark_stale(now);
    let commander = signals
        .roles
        .get(&incident_doc::schema::Role::Commander)
        .cloned();
    let reconsider = view
        .checkins
        .as_ref()
        .and_then(|c| c.reconsider_due_at)
        .filter(|due| *due < now)
        .map(|due_at| (Event::ReconsiderDue { due_at }, commander));
    view.fields
        .iter()
        .filter(|f| f.stale)
        .filter_map(|f| {
            let holder = f.def.owner.and_then(|role| {
                signals.roles.get(&role).cloned().or_else(|| {
                    role.defaults_to_commander()
                        .then(|| {
                            signals
                                .roles
                                .get(&incident_doc::schema::Role::Commander)
                                .cloned()
                        })
                        .flatten()
                })
            });
            Some((
                Event::FieldStale {
                    field: f.def.key.clone(),
                    label: f.def.label.clone(),
                    due_at: f.due_at?,
                },
                holder,
            ))
        })
        .chain(reconsider)
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use incident_doc::{Declaration, Editor, Operation, template};

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::webhooks::Format;
    use wire::DocumentId;

    #[test]
    fn the_deliverer_wakes_for_its_own_retries_between_polls() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 4, 0, 0).unwrap();
        assert_eq!(pause(None, now), POLL);
        assert_eq!(
            pause(Some(now + Duration::milliseconds(500)), now),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(pause(Some(now + Duration::seconds(30)), now), POLL);
        assert_eq!(
            pause(Some(now - Duration::seconds(1)), now),
            std::time::Duration::ZERO
        );
    }

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

    /// A Slack-style endpoint at `url`.
    fn chat(url: &str) -> Endpoint {
        Endpoint {
            name: "chat".into(),
            url: url.into(),
            secret: None,
            format: Format::Slack,
            events: None,
            drills: true,
            restricted: false,
        }
    }

    #[test]
    fn scrubbed_errors_keep_what_failed_and_lose_where_to() {
        let url =
            "https://hooks.slack.com/services/T0AB12345/B0CD67890/s3cr3tPathXYZ?token=q5ecretValue";
        let endpoint = chat(url);
        let echoed = format!(
            "HTTP 404 Not Found: no hook at /services/T0AB12345/B0CD67890/s3cr3tPathXYZ?token=q5ecretValue ({url})"
        );
        assert_eq!(
            scrub(&echoed, &endpoint),
            "HTTP 404 Not Found: no hook at https://hooks.slack.com/… (https://hooks.slack.com/…)"
        );
        for piece in [
            "redirected to /services/T0AB12345/B0CD67890/s3cr3tPathXYZ",
            "unknown hook B0CD67890/s3cr3tPathXYZ",
            "bad token q5ecretValue",
        ] {
            let scrubbed = scrub(piece, &endpoint);
            for secret in ["T0AB12345", "B0CD67890", "s3cr3tPathXYZ", "q5ecretValue"] {
                assert!(!scrubbed.contains(secret), "{scrubbed}");
            }
        }
        // Short words of the path stay: they are not credentials, and the error keeps its sense.
        assert_eq!(
            scrub("error sending request: connection refused", &endpoint),
            "error sending request: connection refused"
        );
        assert_eq!(
            scrub("HTTP 500: hook failed", &chat("http://127.0.0.1:8080/hook")),
            "HTTP 500: hook failed"
        );
    }

    #[tokio::test]
    async fn client_errors_name_no_url() {
        // A port nobody listens on: the connection is refused, and reqwest's error names the whole URL.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/services/T0AB12345/B0CD67890/s3cr3tPathXYZ");
        let error = reqwest::Client::new()
            .post(&url)
            .send()
            .await
            .expect_err("nobody listens");
        assert!(
            error_chain(&error).contains("s3cr3tPathXYZ"),
            "the raw error names the URL"
        );
        let line = scrub(&error_chain(&error.without_url()), &chat(&url));
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
        let signals = incident.signals();
        let due = |minutes| t0 + Duration::minutes(minutes);
        assert!(stale_events(&incident, &signals, due(14)).is_empty());
        let at_40: Vec<String> = stale_events(&incident, &signals, due(40))
            .iter()
            .map(|(e, holder)| match e {
                Event::FieldStale { field, due_at, .. } => {
                    format!("{field} {due_at} {}", holder.as_deref().unwrap_or("-"))
                }
                Event::ReconsiderDue { due_at } => {
                    format!("reconsider {due_at} {}", holder.as_deref().unwrap_or("-"))
                }
                other => panic!("{other:?}"),
            })
            .collect();
        // The detailed status is the Communications lead's; nobody holds it, so the commander does. The drill asks
        // its commander to reconsider every 15 minutes.
        assert_eq!(
            at_40,
            [
                "detailedStatus 2026-11-25 09:30:00 UTC alice",
                "reconsider 2026-11-25 09:15:00 UTC alice"
            ]
        );
        assert_eq!(
            stale_events(&incident, &signals, due(60)).len(),
            3,
            "the summary's turn"
        );

        let endpoint = Endpoint {
            name: "ops".into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
            format: Format::Json,
            events: Some(vec!["fieldStale".into()]),
            drills: true,
            restricted: false,
        };
        let webhooks = Webhooks::new(vec![endpoint], DeliverySettings::default()).expect("valid");
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path()).expect("store");
        let doc = DocumentId::random();
        // Two sweeps (or two nodes) find the same stale fields: each is queued once.
        for _ in 0..2 {
            let mut queued = Vec::new();
            for (event, _) in stale_events(&incident, &signals, due(60)) {
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
