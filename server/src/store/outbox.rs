//! The durable queue of outgoing webhook deliveries (the *outbox*) as both backends store it.
//!
//! An event becomes one row per endpoint, written in the same transaction as the document change that caused
//! it ([`Store::append_with`](super::Store::append_with)): an event is queued exactly when its change is durable,
//! and only by the node that wrote the change, so nodes sharing a PostgreSQL database never queue it twice.
//! Rows are keyed by `(endpoint, event id)`, so queueing the same event again (the staleness sweep of two nodes)
//! adds nothing. A delivery is *claimed* before it is sent (its attempt counted and its next attempt pushed past a
//! lease), so two nodes never send the same row at once, and a node that dies mid-attempt leaves the row to be
//! retried once the lease runs out. The rows stay after delivery: they are the delivery log admins read.

use chrono::{DateTime, Utc};
use serde::Serialize;

use incident_doc::channel::Network;
use wire::DocumentId;

/// One event queued for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The endpoint's name in the configuration.
    pub endpoint: String,
    /// The event's id, the same for every endpoint; queueing an id already queued for the endpoint adds nothing.
    pub event_id: String,
    /// The event type (`incident.declared`, …), for the log.
    pub kind: String,
    /// The incident the event is about.
    pub doc: DocumentId,
    /// The event as JSON; endpoints that want another shape get it rendered at delivery.
    pub payload: String,
    /// Not sent before this moment (debounced events wait for the edits to settle).
    pub not_before: DateTime<Utc>,
    /// Debounces: a delivery with the same key on the same endpoint that has not been attempted yet takes this
    /// one's payload and `not_before` instead of a new row being queued.
    pub coalesce: Option<String>,
    /// Who sends it.
    pub sink: Sink,
}

/// Who sends a delivery. Each sender claims only its own rows: webhooks and mail from any node, a chat network's
/// lines only from the node that holds its bot connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sink {
    /// The webhook deliverer (`webhooks/delivery.rs`): the endpoint is a `[[webhooks]]` name.
    Webhook,
    /// The mailer: the endpoint is a mailing list.
    Mail,
    /// The IRC bot: the endpoint is a channel.
    Irc,
    /// The Slack bot: the endpoint is a channel id.
    Slack,
}

/// The sink of a network's bot.
impl From<Network> for Sink {
    fn from(network: Network) -> Sink {
        match network {
            Network::Irc => Sink::Irc,
            Network::Slack => Sink::Slack,
        }
    }
}

impl Sink {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Webhook => "webhook",
            Sink::Mail => "mail",
            Sink::Irc => "irc",
            Sink::Slack => "slack",
        }
    }
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The row id, to report the outcome against.
    pub id: i64,
    /// The endpoint's name.
    pub endpoint: String,
    /// The event id, sent as a header so receivers can drop a repeat.
    pub event_id: String,
    /// The event as JSON.
    pub payload: String,
    /// Attempts so far, this one included: the backoff grows with it.
    pub attempts: u32,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; it will be (re)tried.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed; nothing more is tried.
    Failed,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// Reads a stored name; `None` for values no version of commandpost writes.
    pub fn parse(name: &str) -> Option<DeliveryState> {
        match name {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt finished.
    pub at: DateTime<Utc>,
    /// The HTTP status the endpoint answered, if it answered.
    pub status: Option<u16>,
    /// Why it failed (connection refused, timeout, the status), for the log; `None` on success.
    pub error: Option<String>,
    /// What happens next.
    pub next: Next,
}

/// The fate of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: never sent again.
    Done,
    /// Failed this time: try again at this moment.
    RetryAt(DateTime<Utc>),
    /// Failed for the last time.
    GiveUp,
}

impl Attempt {
    /// The row's next attempt time: the retry's, else (delivered or given up) the attempt's own, never due again.
    pub fn next_attempt_at(&self) -> DateTime<Utc> {
        match self.next {
            Next::RetryAt(t) => t,
            Next::Done | Next::GiveUp => self.at,
        }
    }

    /// When the endpoint accepted the delivery, if it did.
    pub fn delivered_at(&self) -> Option<DateTime<Utc>> {
        matches!(self.next, Next::Done).then_some(self.at)
    }

    /// The state the row moves to.
    pub fn state(&self) -> DeliveryState {
        match self.next {
            Next::Done => DeliveryState::Delivered,
            Next::RetryAt(_) => DeliveryState::Pending,
            Next::GiveUp => DeliveryState::Failed,
        }
    }
}

/// One row of an endpoint's delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// The row id.
    pub id: i64,
    /// The event id.
    pub event_id: String,
    /// The event type.
    pub kind: String,
    /// The incident.
    #[schema(value_type = String)]
    pub incident: DocumentId,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it is (re)tried next, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was last tried.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's last HTTP status.
    pub last_status: Option<u16>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One delivery about an incident with what it carried: the mail thread of an incident is read from these (its
/// messages' ids and recipients live in the payload), so the thread needs no table of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Where it goes (for mail, `mail`).
    pub endpoint: String,
    /// What it carries, as queued.
    pub payload: String,
    /// Its log row.
    pub record: DeliveryRecord,
}

/// Longest error text kept in the log, so an endpoint answering with a huge page does not bloat the table.
pub const MAX_ERROR_CHARS: usize = 500;

/// Cuts an error message to [`MAX_ERROR_CHARS`].
pub fn clip_error(message: &str) -> String {
    message.chars().take(MAX_ERROR_CHARS).collect()
}

/// Backend-independent cases, run by both backends' conformance suites.
#[cfg(test)]
pub(crate) mod cases {
    use chrono::{Duration, TimeZone, Utc};

    use super::{Attempt, DeliveryState, NewDelivery, Next, Sink};
    use crate::store::Store;
    use crate::store::conformance::doc_id;

    fn event(endpoint: &str, id: &str, minutes: i64) -> NewDelivery {
        NewDelivery {
            endpoint: endpoint.into(),
            event_id: id.into(),
            kind: "incident.statusChanged".into(),
            doc: doc_id("doc-1"),
            payload: format!("{{\"id\":\"{id}\"}}"),
            not_before: Utc
                .with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
                .single()
                .expect("a valid time")
                + Duration::minutes(minutes),
            coalesce: None,
            sink: Sink::Webhook,
        }
    }

    /// Deliveries queued with a chunk are claimed once when due, retried as told, and logged.
    pub(crate) async fn outbox_claims_retries_and_logs(store: &dyn Store) {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
            .single()
            .expect("a valid time");
        store
            .append_with(
                doc_id("doc-1"),
                vec![1, 2, 3],
                None,
                vec![
                    event("a", "e1", 0),
                    event("b", "e1", 0),
                    event("a", "e2", 5),
                ],
            )
            .await
            .expect("append with deliveries");
        // The same event again adds nothing.
        store
            .enqueue(vec![event("a", "e1", 0)])
            .await
            .expect("enqueue");
        let lease = t0 + Duration::seconds(30);
        let claimed = store
            .claim_deliveries(Sink::Webhook, t0, lease, 10)
            .await
            .expect("claim");
        let mut ids: Vec<_> = claimed
            .iter()
            .map(|d| (d.endpoint.as_str(), d.event_id.as_str(), d.attempts))
            .collect();
        ids.sort();
        assert_eq!(ids, [("a", "e1", 1), ("b", "e1", 1)], "e2 is not due yet");
        // Claimed rows are leased: nobody else gets them meanwhile.
        assert!(
            store
                .claim_deliveries(Sink::Webhook, t0, lease, 10)
                .await
                .expect("the store answers")
                .is_empty()
        );
        for d in &claimed {
            let next = if d.endpoint == "a" {
                Next::Done
            } else {
                Next::RetryAt(t0 + Duration::seconds(2))
            };
            let outcome = Attempt {
                at: t0,
                status: Some(if d.endpoint == "a" { 204 } else { 503 }),
                error: (d.endpoint == "b").then(|| "503 Service Unavailable".to_owned()),
                next,
            };
            store.finish_delivery(d.id, &outcome).await.expect("finish");
        }
        let retry = store
            .claim_deliveries(Sink::Webhook, t0 + Duration::seconds(3), lease, 10)
            .await
            .expect("the store answers");
        assert_eq!(retry.len(), 1);
        assert_eq!((retry[0].endpoint.as_str(), retry[0].attempts), ("b", 2));
        let gave_up = Attempt {
            at: t0,
            status: None,
            error: Some("connection refused".into()),
            next: Next::GiveUp,
        };
        store
            .finish_delivery(retry[0].id, &gave_up)
            .await
            .expect("the store answers");

        let log = store.deliveries("a", 10).await.expect("log");
        assert_eq!(log.len(), 2, "newest first: {log:?}");
        assert_eq!(log[0].event_id, "e2");
        assert_eq!(log[0].state, DeliveryState::Pending);
        assert_eq!(log[1].state, DeliveryState::Delivered);
        assert_eq!(log[1].last_status, Some(204));
        assert!(log[1].delivered_at.is_some());
        let log = store.deliveries("b", 10).await.expect("the store answers");
        assert_eq!(log[0].state, DeliveryState::Failed);
        assert_eq!(log[0].attempts, 2);
        assert_eq!(log[0].last_error.as_deref(), Some("connection refused"));
        assert!(
            store
                .deliveries("nobody", 10)
                .await
                .expect("the store answers")
                .is_empty()
        );
    }

    /// Each sender claims only its own rows: a chat bot never takes a webhook's delivery, nor the reverse.
    pub(crate) async fn outbox_claims_by_sink(store: &dyn Store) {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
            .single()
            .expect("a valid time");
        let lease = t0 + Duration::minutes(10);
        let mail = NewDelivery {
            sink: Sink::Mail,
            ..event("oncall@example.com", "u1", 0)
        };
        store
            .enqueue(vec![event("hook", "e1", 0), mail])
            .await
            .expect("the store answers");
        let claim = |sink| store.claim_deliveries(sink, t0, lease, 10);
        assert!(claim(Sink::Irc).await.expect("claim").is_empty());
        let webhook = claim(Sink::Webhook).await.expect("claim");
        assert_eq!(webhook.len(), 1);
        assert_eq!(webhook[0].endpoint, "hook");
        let mail = claim(Sink::Mail).await.expect("claim");
        assert_eq!(mail.len(), 1);
        assert_eq!(mail[0].endpoint, "oncall@example.com");
        assert!(claim(Sink::Mail).await.expect("claim").is_empty());
    }

    /// An incident's deliveries of one sink come back in queueing order with their payloads and states, and no
    /// other incident's or sink's.
    pub(crate) async fn outbox_lists_an_incidents_deliveries_by_sink(store: &dyn Store) {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
            .single()
            .expect("a valid time");
        let mail = |id: &str, doc: &str| NewDelivery {
            sink: Sink::Mail,
            doc: doc_id(doc),
            endpoint: "mail".into(),
            ..event("mail", id, 0)
        };
        store
            .enqueue(vec![
                mail("m1", "doc-1"),
                event("hook", "e1", 0),
                mail("other", "doc-2"),
                mail("m2", "doc-1"),
            ])
            .await
            .expect("the store answers");
        let claimed = store
            .claim_deliveries(Sink::Mail, t0, t0 + Duration::minutes(1), 1)
            .await
            .expect("claim");
        let attempt = Attempt {
            at: t0,
            status: Some(550),
            error: Some("550 no such list".into()),
            next: Next::GiveUp,
        };
        store
            .finish_delivery(claimed[0].id, &attempt)
            .await
            .expect("finish");
        let thread = store
            .deliveries_of(doc_id("doc-1"), Sink::Mail)
            .await
            .expect("the store answers");
        let ids: Vec<&str> = thread.iter().map(|c| c.record.event_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"]);
        assert_eq!(thread[0].payload, "{\"id\":\"m1\"}");
        assert_eq!(thread[0].endpoint, "mail");
        assert_eq!(thread[0].record.state, DeliveryState::Failed);
        assert_eq!(thread[0].record.last_status, Some(550));
        assert_eq!(thread[1].record.state, DeliveryState::Pending);
        let none = store
            .deliveries_of(doc_id("doc-1"), Sink::Slack)
            .await
            .expect("the store answers");
        assert!(none.is_empty());
    }

    /// A coalescing delivery replaces the payload of one not yet attempted, and never one already attempted.
    pub(crate) async fn outbox_coalesces_unattempted_deliveries(store: &dyn Store) {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
            .single()
            .expect("a valid time");
        let summary = |id: &str, minutes: i64| NewDelivery {
            coalesce: Some("doc-1 summary".into()),
            ..event("a", id, minutes)
        };
        store
            .enqueue(vec![summary("s1", 1)])
            .await
            .expect("the store answers");
        store
            .enqueue(vec![summary("s2", 2)])
            .await
            .expect("the store answers");
        assert!(
            store
                .claim_deliveries(Sink::Webhook, t0 + Duration::seconds(90), t0, 10)
                .await
                .expect("the store answers")
                .is_empty(),
            "the second edit pushed the delivery back"
        );
        let claimed = store
            .claim_deliveries(
                Sink::Webhook,
                t0 + Duration::minutes(2),
                t0 + Duration::minutes(3),
                10,
            )
            .await
            .expect("the store answers");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].payload, "{\"id\":\"s2\"}");
        // Attempted (in flight): a later edit queues a delivery of its own.
        store
            .enqueue(vec![summary("s3", 3)])
            .await
            .expect("the store answers");
        let log = store.deliveries("a", 10).await.expect("the store answers");
        assert_eq!(log.len(), 2, "{log:?}");
    }
}
