//! Prometheus metrics: a few counters, gauges and one latency histogram, rendered as Prometheus text at
//! `GET /metrics`. Hand-rolled on atomics: the set is small and fixed, and a metrics library would be the largest
//! dependency of the server for it.
//!
//! A scrape reads only what is here (`/metrics` needs no token): the document actors keep these figures up to
//! date, and no figure is computed by calling into an actor or reading a document.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use wire::DocumentId;

/// A value that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value, for gauges measured at scrape time.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// When the fields of each loaded incident fall due, kept by the document actors after every change. Staleness
/// depends on the clock, so no gauge can hold it: a scrape counts the due times already past.
#[derive(Debug, Default)]
pub struct DueTimes {
    /// Per document, what its actor last published. A std mutex: it is held only to replace an entry or to
    /// count, never across an `.await`.
    docs: Mutex<HashMap<DocumentId, Published>>,
}

/// One actor's due times.
#[derive(Debug)]
struct Published {
    /// The actor generation that published them, so an old actor's exit leaves its successor's in place.
    generation: u64,
    /// When each field with a cadence falls due.
    due: Vec<DateTime<Utc>>,
}

impl DueTimes {
    /// Records the due times of document `doc` as its actor (incarnation `generation`) sees them now.
    pub fn set(&self, doc: DocumentId, generation: u64, due: Vec<DateTime<Utc>>) {
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.insert(doc, Published { generation, due });
    }

    /// Forgets document `doc` as its actor unloads it, unless a newer actor already took over.
    pub fn remove(&self, doc: DocumentId, generation: u64) {
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        if docs.get(&doc).is_some_and(|p| p.generation == generation) {
            docs.remove(&doc);
        }
    }

    /// How many fields of loaded incidents are past their due time at `now`.
    pub fn stale(&self, now: DateTime<Utc>) -> usize {
        let docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.values()
            .flat_map(|p| &p.due)
            .filter(|due| **due < now)
            .count()
    }
}

/// Upper bounds of the latency buckets, in seconds: from a cached fsync to a struggling disk.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; rendering accumulates).
    buckets: [AtomicU64; BUCKETS.len()],
    /// Observations above the last bucket.
    overflow: AtomicU64,
    /// Sum of observations in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            total += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {total}");
        }
        total += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// Every metric of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open `/sync` WebSocket connections.
    pub connections: Gauge,
    /// Documents in memory.
    pub documents_loaded: Gauge,
    /// (connection, document) sync sessions.
    pub peers: Gauge,
    /// Automerge changes made durable.
    pub changes_applied: Counter,
    /// Protocol violations answered with an `error` message.
    pub protocol_errors: Counter,
    /// Connections cut off because they stopped reading.
    pub slow_disconnects: Counter,
    /// Changes over `/sync` that broke a command rule and were reverted.
    pub rule_violations: Counter,
    /// When the fields of loaded incidents fall due; a scrape counts the stale ones.
    pub due: DueTimes,
    /// Webhook deliveries the endpoints accepted.
    pub webhooks_delivered: Counter,
    /// Status update emails the SMTP server accepted.
    pub mail_sent: Counter,
    /// Email attempts that failed and will be tried again (a relay down, a 4xx answer).
    pub mail_retried: Counter,
    /// Emails given up: a permanent refusal (5xx) or the last attempt failed.
    pub mail_failed: Counter,
    /// Webhook attempts that failed (each is retried until the delivery is given up).
    pub webhook_attempts_failed: Counter,
    /// Webhook deliveries given up after their last attempt.
    pub webhooks_given_up: Counter,
    /// Posts Slack accepted (`chat.postMessage` answered `ok`).
    pub slack_posts_delivered: Counter,
    /// Slack posts that failed (an `ok: false` error, a 429, no answer) and are retried or given up.
    pub slack_posts_failed: Counter,
    /// Requests to `/api/slack/…` refused: a bad or missing signature, or a timestamp outside the replay window.
    pub slack_requests_refused: Counter,
    /// Latency of durable appends.
    pub storage_append: Histogram,
    /// `/sync` frames over the frame limit (the connection is closed).
    pub rejected_frames: Counter,
    /// `/sync` connections closed for silence (no frame, no pong within the idle timeout).
    pub rejected_idle: Counter,
    /// Sync messages refused because their changes would take a document past its size limit, and HTTP edits
    /// refused on a document at the limit.
    pub rejected_documents: Counter,
    /// `/sync` upgrades refused because the token had its maximum of connections open.
    pub rejected_connections: Counter,
    /// HTTP requests refused for a body over the limit.
    pub rejected_bodies: Counter,
    /// Audit log entries that could not be written (`crate::audit`): actions went unrecorded.
    pub audit_failures: Counter,
    /// Change-carrying sync messages that had to wait for the connection's edit bucket.
    pub edits_throttled: Counter,
    /// `/sync` connections closed because their token was revoked.
    pub revoked_disconnects: Counter,
    /// Requests carrying the session cookie refused because they came from another site's page.
    pub rejected_cross_origin: Counter,
    /// Single sign-ins that opened a session.
    pub sso_sign_ins: Counter,
    /// Single sign-ins refused (any reason: state, ID token, no access, …).
    pub sso_refusals: Counter,
    /// `/sync` connections closed because their person may no longer see a restricted incident they synced.
    pub access_disconnects: Counter,
    /// `/sync` connections closed for sending ephemeral messages faster than their bucket allows.
    pub rejected_ephemeral: Counter,
    /// Ephemeral payloads refused for posing as a server notice (`{"refused": …}`).
    pub ephemeral_refused_notice: Counter,
    /// Ephemeral payloads refused for not being presence (tags, other keys, wrong types, texts too long).
    pub ephemeral_refused_shape: Counter,
    /// Presence refused for naming someone other than the connection's token.
    pub ephemeral_refused_name: Counter,
    /// Heavy reads (history, exports, updates, the JSON view) computing now.
    pub heavy_reads: Gauge,
    /// Heavy reads refused because every place was taken (`max-heavy-reads`).
    pub rejected_reads: Counter,
    /// Scheduled backups written.
    pub backups_written: Counter,
    /// Scheduled backups that failed.
    pub backups_failed: Counter,
    /// When the last scheduled backup was written, in seconds since the Unix epoch; 0 before the first.
    pub backup_last_success: Gauge,
    /// The size of the last scheduled backup in bytes.
    pub backup_bytes: Gauge,
    /// Closed incidents the retention policy deletes now (in a dry run: would delete).
    pub retention_due: Gauge,
    /// Closed incidents the retention policy deleted.
    pub retention_deleted: Counter,
    /// 1 while this node's IRC bot is connected and registered (at most one node of a cluster), else 0.
    pub irc_connected: Gauge,
    /// Lines said in bound IRC channels that the bot handed to the chat core.
    pub irc_lines_heard: Counter,
    /// Lines the IRC bot said (posts and answers).
    pub irc_lines_said: Counter,
    /// IRC connections that ended and were retried.
    pub irc_reconnects: Counter,
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_gauges(&mut out);
        self.render_counters(&mut out);
        self.render_refusals(&mut out);
        self.storage_append.render(
            &mut out,
            "commandpost_storage_append_seconds",
            "Latency of durable appends to storage.",
        );
        out
    }

    /// The gauges, one line each.
    fn render_gauges(&self, out: &mut String) {
        let gauges = [
            (
                "commandpost_connections",
                "Open /sync WebSocket connections.",
                self.connections.get(),
            ),
            (
                "commandpost_documents_loaded",
                "Incident documents in memory.",
                self.documents_loaded.get(),
            ),
            (
                "commandpost_sync_peers",
                "Connection-document sync sessions.",
                self.peers.get(),
            ),
            (
                "commandpost_irc_connected",
                "1 while this node's IRC bot is connected and registered, else 0.",
                self.irc_connected.get(),
            ),
            (
                "commandpost_heavy_reads",
                "Heavy reads (history, exports, status updates, the JSON view) computing now.",
                self.heavy_reads.get(),
            ),
            (
                "commandpost_backup_last_success_timestamp_seconds",
                "When the last scheduled backup was written (Unix time); 0 before the first.",
                self.backup_last_success.get(),
            ),
            (
                "commandpost_backup_size_bytes",
                "The size of the last scheduled backup.",
                self.backup_bytes.get(),
            ),
            (
                "commandpost_retention_due",
                "Closed incidents past the retention policy's age (deleted at once unless it is a dry run).",
                self.retention_due.get(),
            ),
            (
                "commandpost_stale_fields",
                "Fields of loaded incidents past their due time (the template's cadence).",
                i64::try_from(self.due.stale(Utc::now())).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }

    /// The unlabelled counters, one line each.
    fn render_counters(&self, out: &mut String) {
        let counters = [
            (
                "commandpost_changes_applied_total",
                "Automerge changes made durable.",
                &self.changes_applied,
            ),
            (
                "commandpost_protocol_errors_total",
                "Sync protocol violations.",
                &self.protocol_errors,
            ),
            (
                "commandpost_audit_failures_total",
                "Audit log entries that could not be written (the actions happened unrecorded).",
                &self.audit_failures,
            ),
            (
                "commandpost_slow_disconnects_total",
                "Peers cut off for not reading.",
                &self.slow_disconnects,
            ),
            (
                "commandpost_rule_violations_total",
                "Synced changes that broke a command rule and were reverted.",
                &self.rule_violations,
            ),
            (
                "commandpost_edits_throttled_total",
                "Change-carrying sync messages delayed by the per-connection edit rate.",
                &self.edits_throttled,
            ),
            (
                "commandpost_revoked_disconnects_total",
                "Sync connections closed because their token was revoked.",
                &self.revoked_disconnects,
            ),
            (
                "commandpost_cross_origin_rejections_total",
                "Requests with the session cookie refused for coming from another site's page.",
                &self.rejected_cross_origin,
            ),
            (
                "commandpost_sso_sign_ins_total",
                "Single sign-ins that opened a session.",
                &self.sso_sign_ins,
            ),
            (
                "commandpost_sso_refusals_total",
                "Single sign-ins refused (state, ID token, claims, no access).",
                &self.sso_refusals,
            ),
            (
                "commandpost_access_disconnects_total",
                "Sync connections closed because their person may no longer see a restricted incident.",
                &self.access_disconnects,
            ),
            (
                "commandpost_webhooks_delivered_total",
                "Webhook deliveries accepted by their endpoint.",
                &self.webhooks_delivered,
            ),
            (
                "commandpost_webhook_attempts_failed_total",
                "Webhook attempts that failed and are retried or given up.",
                &self.webhook_attempts_failed,
            ),
            (
                "commandpost_mail_sent_total",
                "Status update emails accepted by the SMTP server.",
                &self.mail_sent,
            ),
            (
                "commandpost_mail_retried_total",
                "Status update email attempts that failed and are tried again.",
                &self.mail_retried,
            ),
            (
                "commandpost_mail_failed_total",
                "Status update emails given up (refused for good, or out of attempts).",
                &self.mail_failed,
            ),
            (
                "commandpost_irc_lines_heard_total",
                "Lines said in bound IRC channels that the bot handed to the chat core.",
                &self.irc_lines_heard,
            ),
            (
                "commandpost_irc_lines_said_total",
                "Lines the IRC bot said (posts and answers).",
                &self.irc_lines_said,
            ),
            (
                "commandpost_irc_reconnects_total",
                "IRC connections that ended and were retried.",
                &self.irc_reconnects,
            ),
            (
                "commandpost_backups_written_total",
                "Scheduled backups written.",
                &self.backups_written,
            ),
            (
                "commandpost_backups_failed_total",
                "Scheduled backups that failed.",
                &self.backups_failed,
            ),
            (
                "commandpost_webhooks_given_up_total",
                "Webhook deliveries given up after their last attempt.",
                &self.webhooks_given_up,
            ),
            (
                "commandpost_slack_posts_delivered_total",
                "Posts to Slack channels that chat.postMessage accepted.",
                &self.slack_posts_delivered,
            ),
            (
                "commandpost_slack_posts_failed_total",
                "Posts to Slack channels that failed (retried with backoff, or given up).",
                &self.slack_posts_failed,
            ),
            (
                "commandpost_slack_requests_refused_total",
                "Requests to /api/slack refused for their signature or timestamp.",
                &self.slack_requests_refused,
            ),
            (
                "commandpost_retention_deleted_total",
                "Closed incidents deleted by the retention policy.",
                &self.retention_deleted,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
    }

    /// The two counters labelled by why something was refused: a configured limit, a bad ephemeral payload.
    fn render_refusals(&self, out: &mut String) {
        let limits = [
            ("frame", &self.rejected_frames),
            ("idle", &self.rejected_idle),
            ("document", &self.rejected_documents),
            ("connections", &self.rejected_connections),
            ("body", &self.rejected_bodies),
            ("ephemeral", &self.rejected_ephemeral),
            ("heavy_reads", &self.rejected_reads),
        ];
        let name = "commandpost_limit_rejections_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests, frames and connections refused by a configured limit.\n# TYPE {name} counter"
        );
        for (limit, counter) in limits {
            let _ = writeln!(out, "{name}{{limit=\"{limit}\"}} {}", counter.get());
        }
        let name = "commandpost_ephemeral_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Ephemeral payloads refused (and their connections closed): server notices forged by a peer, payloads that are not presence, presence naming someone else.\n# TYPE {name} counter"
        );
        for (reason, counter) in [
            ("notice", &self.ephemeral_refused_notice),
            ("shape", &self.ephemeral_refused_shape),
            ("name", &self.ephemeral_refused_name),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", counter.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use incident_doc::{Declaration, Editor, Incident, Operation, template};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Config;
    use crate::document::Registry;
    use crate::store::sqlite::SqliteStore;
    use wire::PeerId;

    /// The actors keep the due times current: a scrape finds the fields of a day-old incident stale, and one fewer
    /// as soon as an edit of one of them is answered.
    #[tokio::test]
    async fn document_actors_publish_their_due_times_as_they_change() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let metrics = Arc::new(Metrics::default());
        let webhooks = Arc::new(Config::default().webhooks().expect("no webhooks"));
        let registry = Registry::new(
            store,
            metrics.clone(),
            PeerId::from("server".to_owned()),
            Config::default().doc_config(webhooks),
            CancellationToken::new(),
        );
        let template = template::builtin().into_iter().next().expect("a template");
        let declared = Utc::now() - chrono::Duration::days(1);
        let declaration = Declaration {
            name: "Yesterday's".into(),
            number: None,
        };
        let incident = Incident::create(
            &template,
            &declaration,
            &Editor::new("alice", declared),
            None,
        )
        .expect("declare");
        let handle = registry
            .create(DocumentId::random(), incident)
            .await
            .expect("create");
        // The actor publishes as it starts; a snapshot is answered only once it runs.
        handle.snapshot().await.expect("the actor runs");
        assert_eq!(metrics.due.stale(Utc::now()), 2, "summary, detailed status");
        let edit = Operation::SetText {
            field: "summary".into(),
            text: "Under control.".into(),
        };
        handle
            .apply(vec![edit], Editor::new("alice", Utc::now()))
            .await
            .expect("edit");
        assert_eq!(metrics.due.stale(Utc::now()), 1);
    }

    #[test]
    fn stale_fields_are_counted_from_the_due_times_of_the_current_actors() {
        let due = DueTimes::default();
        let now = Utc::now();
        let (a, b) = (DocumentId::random(), DocumentId::random());
        let hour = chrono::Duration::hours(1);
        due.set(a, 1, vec![now - hour, now + hour]);
        due.set(b, 1, vec![now - hour, now - hour]);
        assert_eq!(due.stale(now), 3);
        // A newer actor of `a` took over before the old one's exit: the old one removes nothing.
        due.set(a, 2, vec![now + hour]);
        due.remove(a, 1);
        assert_eq!(due.stale(now), 2);
        due.remove(b, 1);
        assert_eq!(due.stale(now), 0);
        assert_eq!(due.stale(now + hour * 2), 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
