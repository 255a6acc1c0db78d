//! Outgoing webhooks: the endpoints of the configuration file, the events they receive, the payloads and their
//! signature. [`delivery`] sends what is queued; the queue itself is the store's outbox (`store/outbox.rs`).
//!
//! Events come from the document actor, which compares [`Signals`] before and after each batch of changes
//! (however they arrived: HTTP or `/sync`) and queues the deliveries in the same transaction as the changes, and
//! from [`delivery`]'s staleness sweep. Only the node that wrote a change queues its events, so nodes sharing a
//! PostgreSQL database deliver each event once; sweep events have ids derived from what they report, so two nodes
//! queueing the same one store it once.

pub mod delivery;

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use incident_doc::signals::{Event, Signals};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::store::outbox::{NewDelivery, Sink};
use wire::DocumentId;

/// One receiver of webhooks, as configured under `[[webhooks]]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Endpoint {
    /// The endpoint's name: the key of its delivery log; keep it stable, deliveries are queued under it.
    pub name: String,
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// The HMAC-SHA256 key of the `Commandpost-Signature` header; no header without one.
    #[serde(default)]
    pub secret: Option<String>,
    /// The body: commandpost's JSON event, or `slack`'s `{"text": …}`.
    #[serde(default)]
    pub format: Format,
    /// The event types sent (`declared`, `statusChanged`, …); all of them when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Whether drills are sent too (marked as drills); `true` by default.
    #[serde(default = "yes")]
    pub drills: bool,
    /// Whether restricted incidents are sent too; `false` by default, since a receiver (a chat channel) is seen by
    /// people who are not the incident's members.
    #[serde(default)]
    pub restricted: bool,
}

fn yes() -> bool {
    true
}

/// Like the derived form, with the secret left out: configurations end up in logs and panics.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.shown_url())
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("format", &self.format)
            .field("events", &self.events)
            .field("drills", &self.drills)
            .field("restricted", &self.restricted)
            .finish()
    }
}

/// The body of a delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event as JSON (`docs/integrations.md`).
    #[default]
    Json,
    /// `{"text": "…"}`, which Slack's incoming webhooks and compatible chat tools (Mattermost, Rocket.Chat) post.
    Slack,
}

/// How deliveries are timed, under `[webhook-delivery]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeliverySettings {
    /// The first retry's delay in milliseconds; each further retry doubles it.
    pub retry_initial_ms: u64,
    /// The longest delay between retries, in seconds.
    pub retry_max_secs: u64,
    /// Attempts after which a delivery is given up (marked failed in the log).
    pub max_attempts: u32,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
    /// Summary edits are sent once the summary has been left alone this many seconds.
    pub summary_debounce_secs: u64,
    /// How often open incidents are checked for fields gone stale, in seconds.
    pub stale_check_secs: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry_initial_ms: 1000,
            retry_max_secs: 600,
            max_attempts: 20,
            timeout_secs: 10,
            summary_debounce_secs: 60,
            stale_check_secs: 60,
        }
    }
}

impl DeliverySettings {
    /// The delay before the retry that follows attempt number `attempts` (1-based): doubling from the initial
    /// delay up to the maximum.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let initial = Duration::from_millis(self.retry_initial_ms.max(1));
        let doubled = initial.saturating_mul(1 << attempts.saturating_sub(1).min(20));
        doubled.min(Duration::from_secs(self.retry_max_secs.max(1)))
    }
}

/// A webhook configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("webhook {name:?}: {reason}")]
pub struct WebhookError {
    /// The endpoint.
    name: String,
    /// What is wrong.
    reason: String,
}

/// The configured endpoints and settings, shared by the document actors, the deliverer and the admin routes.
#[derive(Debug, Default)]
pub struct Webhooks {
    /// The endpoints, in configuration order.
    pub endpoints: Vec<Endpoint>,
    /// Timing of deliveries.
    pub settings: DeliverySettings,
    /// Woken when deliveries were queued, so they go out at once instead of at the next poll.
    pub wake: Notify,
}

impl Webhooks {
    /// Checks the endpoints (names unique and non-empty, URLs http(s), event names known).
    pub fn new(
        endpoints: Vec<Endpoint>,
        settings: DeliverySettings,
    ) -> Result<Webhooks, WebhookError> {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let error = |reason: String| WebhookError {
                name: endpoint.name.clone(),
                reason,
            };
            if endpoint.name.trim().is_empty() || endpoint.name.len() > 100 {
                return Err(error("a name of 1 to 100 characters is needed".into()));
            }
            if endpoints[..i].iter().any(|e| e.name == endpoint.name) {
                return Err(error("two endpoints have this name".into()));
            }
            let url = reqwest::Url::parse(&endpoint.url).map_err(|e| error(format!("url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(error("the url must be http:// or https://".into()));
            }
            for event in endpoint.events.iter().flatten() {
                if !Event::NAMES.contains(&event.as_str()) {
                    return Err(error(format!(
                        "unknown event {event:?} (expected one of {})",
                        Event::NAMES.join(", ")
                    )));
                }
            }
        }
        Ok(Webhooks {
            endpoints,
            settings,
            wake: Notify::new(),
        })
    }

    /// Whether any endpoint is configured: without one, actors skip the snapshots altogether.
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Whether some endpoint wants events of type `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.endpoints.iter().any(|e| e.accepts(name))
    }

    /// The endpoint called `name`.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The deliveries of `events` of incident `doc` (as `signals` describe it now) to every endpoint that wants
    /// them. Change events get fresh ids; a summary edit is debounced by coalescing with the incident's summary
    /// delivery that has not gone out yet.
    pub fn deliveries(
        &self,
        doc: DocumentId,
        signals: &Signals,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Vec<NewDelivery> {
        let mut out = Vec::new();
        // Receivers hear of alerts from Alertmanager itself; the incident's channel hears them from us.
        for event in events
            .iter()
            .filter(|e| !matches!(e, Event::AlertRecorded { .. }))
        {
            let id = format!("evt_{}", random_hex());
            let (not_before, coalesce) = match event {
                Event::SummaryChanged { .. } => (
                    now + Duration::from_secs(self.settings.summary_debounce_secs),
                    Some(format!("{doc} summaryChanged")),
                ),
                _ => (now, None),
            };
            out.extend(self.queue(doc, signals, event, &id, now, not_before, coalesce));
        }
        out
    }

    /// The deliveries of a field gone stale. The id names the field and its due time, so every node's sweep
    /// queues the same event, which the outbox stores once.
    pub fn stale(
        &self,
        doc: DocumentId,
        signals: &Signals,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Vec<NewDelivery> {
        let Some(key) = stale_key(event) else {
            return Vec::new();
        };
        let id = format!("stale_{doc}_{key}");
        self.queue(doc, signals, event, &id, now, now, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        doc: DocumentId,
        signals: &Signals,
        event: &Event,
        id: &str,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
        coalesce: Option<String>,
    ) -> Vec<NewDelivery> {
        let payload = payload(doc, signals, event, id, now).to_string();
        self.endpoints
            .iter()
            .filter(|e| {
                e.accepts(event.name())
                    && (e.drills || !signals.headline.drill)
                    && (e.restricted || !signals.restricted)
            })
            .map(|e| NewDelivery {
                endpoint: e.name.clone(),
                event_id: id.to_owned(),
                kind: event.name().to_owned(),
                doc,
                payload: payload.clone(),
                not_before,
                coalesce: coalesce.clone(),
                sink: Sink::Webhook,
            })
            .collect()
    }
}

impl Endpoint {
    /// The URL as admins and logs see it: scheme, host and port (two receivers on one host differ by port), not the
    /// path, query or user info, since chat tools put their credentials there.
    pub fn shown_url(&self) -> String {
        reqwest::Url::parse(&self.url)
            .map(|u| {
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "{}://{}{port}/…",
                    u.scheme(),
                    u.host_str().unwrap_or_default()
                )
            })
            .unwrap_or_default()
    }

    fn accepts(&self, name: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == name))
    }

    /// The request body for a queued event (`payload`, the JSON event): the event itself, or its `text` for
    /// Slack-compatible endpoints, escaped there (see [`slack_escape`]): the JSON event keeps the raw text, since
    /// its receivers decide where it lands.
    pub fn body(&self, payload: &str) -> String {
        match self.format {
            Format::Json => payload.to_owned(),
            Format::Slack => {
                let text = serde_json::from_str::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(slack_escape))
                    .unwrap_or_default();
                json!({ "text": text }).to_string()
            }
        }
    }
}

/// Text a chat tool shows as written. The line is all user text (titles, summaries, names), so nothing in it may
/// be markup: Slack's formatting rules escape `&`, `<` and `>` (`&amp;`, `&lt;`, `&gt;`), which leaves no
/// `<!channel>`, `<!here>`, `<@U…>` mention and no `<https://evil|label>` link that shows another address than it
/// opens. Mattermost and Rocket.Chat, which take the same body, mention on a bare `@channel`, `@all` or `@name`:
/// an invisible word joiner after an `@` that starts a word keeps those from notifying anyone.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => {
                out.push('@');
                let starts_word = previous.is_none_or(|p| !p.is_alphanumeric());
                if starts_word && chars.peek().is_some_and(|n| n.is_alphanumeric()) {
                    out.push('\u{2060}');
                }
            }
            c => out.push(c),
        }
        previous = Some(c);
    }
    out
}

/// The JSON event: `{id, type, occurredAt, incident: {id, url, number, title, status, severity, drill}, data,
/// text}`, where `data` holds the event's own fields and `text` is one human line (the Slack message).
pub fn payload(
    doc: DocumentId,
    signals: &Signals,
    event: &Event,
    id: &str,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let h = &signals.headline;
    let mut data = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
    if let Some(map) = data.as_object_mut() {
        map.remove("type");
    }
    json!({
        "id": id,
        "type": event.name(),
        "occurredAt": now,
        "incident": {
            "id": doc.to_string(),
            "url": doc.url(),
            "number": h.number,
            "title": h.title,
            "status": h.status,
            "severity": h.severity,
            "drill": h.drill,
        },
        "data": data,
        "text": text(signals, event),
    })
}

/// What names a sweep's event once per incident: the field (or the reconsider prompt) and its due time, so every
/// node's sweep queues the same event, which the outbox stores once.
pub fn stale_key(event: &Event) -> Option<String> {
    match event {
        Event::FieldStale { field, due_at, .. } => {
            Some(format!("{field}_{}", due_at.timestamp_millis()))
        }
        Event::ReconsiderDue { due_at } => {
            Some(format!("reconsider_{}", due_at.timestamp_millis()))
        }
        _ => None,
    }
}

/// One line for people: `[DRILL] #465 Checkout errors: 2026-11-25: status active → mitigated`.
pub fn text(signals: &Signals, event: &Event) -> String {
    let h = &signals.headline;
    let mut name = String::new();
    if h.drill {
        name.push_str("[DRILL] ");
    }
    if let Some(n) = h.number {
        name.push_str(&format!("#{n} "));
    }
    name.push_str(&h.title);
    let none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    let what = match event {
        Event::Declared => format!(
            "declared ({})",
            h.severity.as_deref().unwrap_or("no severity")
        ),
        Event::StatusChanged { from, to } => format!("status {} → {to}", none(from)),
        Event::SeverityChanged { from, to } => format!("severity {} → {}", none(from), none(to)),
        Event::SummaryChanged { summary } => format!("summary: {}", summary.trim()),
        Event::HandoffProposed { role, to, from } => format!(
            "{} handoff proposed from {} to {to}",
            role.label(),
            none(from)
        ),
        Event::HandoffAccepted { role, to, .. } => format!("{to} is now the {}", role.label()),
        Event::FieldStale { label, due_at, .. } => format!(
            "{label} is stale (due {})",
            incident_doc::export::format_time(*due_at)
        ),
        Event::ReconsiderDue { due_at } => format!(
            "time for the commander's check-in: reconsider the options, is the current approach still right? (due {})",
            incident_doc::export::format_time(*due_at)
        ),
        Event::ExitCriteriaMet => "all exit criteria are met".to_owned(),
        Event::AlertRecorded { text, .. } => format!("alert: {}", text.trim()),
        Event::UncoordinatedChange {
            by,
            target,
            what,
            operations,
            commander,
        } => {
            // Named, so that the chat highlights them: freelancing is seen at once.
            let mut leads: Vec<&str> = [operations, commander]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            leads.dedup();
            let to = if leads.is_empty() {
                "nobody in command".to_owned()
            } else {
                leads.join(", ")
            };
            format!(
                "uncoordinated change by {by} on {target}: {what} ({to}: {by} is not in Operations)"
            )
        }
        Event::HelpFlag { person, state } => {
            let commander = signals
                .roles
                .get(&incident_doc::schema::Role::Commander)
                .map(|c| format!(" (Incident Commander: {c})"))
                .unwrap_or_default();
            match state {
                Some(state) => format!("help flag: {}{commander}", state.describe(person)),
                None => format!("help flag: {person}'s flag was cleared"),
            }
        }
        Event::Closed => "closed".to_owned(),
    };
    format!("{name}: {what}")
}

/// The `Commandpost-Signature` value: `sha256=` and the hex HMAC-SHA256, keyed with the endpoint's secret, of
/// the timestamp (Unix seconds, as sent in `Commandpost-Timestamp`), a dot, and the body.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// 16 random bytes in hex: event ids nobody can guess or collide with.
pub(crate) fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently with Python's hmac module.
        assert_eq!(
            signature("Jefe", 1_764_000_000, r#"{"type":"closed"}"#),
            "sha256=e83454bc4919c28c22529a504ca70ee80b5f4799b126b9dbad486efa46838c15"
        );
        assert_ne!(
            signature("Jefe", 1_764_000_001, r#"{"type":"closed"}"#),
            signature("Jefe", 1_764_000_000, r#"{"type":"closed"}"#)
        );
    }

    #[test]
    fn slack_text_carries_no_markup_from_user_text() {
        assert_eq!(
            slack_escape("<!channel> & <@U024BE7LH> <https://evil.example|status page>"),
            "&lt;!channel&gt; &amp; &lt;@\u{2060}U024BE7LH&gt; &lt;https://evil.example|status page&gt;"
        );
        // Already escaped text is escaped again: it shows as typed, never as the character it names.
        assert_eq!(slack_escape("&lt;!here&gt;"), "&amp;lt;!here&amp;gt;");
        assert_eq!(
            slack_escape("@channel, ping @all; mail ops@example.com"),
            "@\u{2060}channel, ping @\u{2060}all; mail ops@example.com"
        );
        assert_eq!(
            slack_escape("Checkout errors: status active → mitigated"),
            "Checkout errors: status active → mitigated"
        );
    }

    #[test]
    fn slack_bodies_are_escaped_and_json_events_raw() {
        let endpoint = |format| Endpoint {
            name: "chat".into(),
            url: "https://hooks.example/services/T0/B0/secret".into(),
            secret: None,
            format,
            events: None,
            drills: true,
            restricted: false,
        };
        let payload =
            json!({"id": "evt_1", "text": "#1 <!channel> down: declared (SEV1)"}).to_string();
        let slack: serde_json::Value =
            serde_json::from_str(&endpoint(Format::Slack).body(&payload)).expect("JSON");
        assert_eq!(
            slack,
            json!({"text": "#1 &lt;!channel&gt; down: declared (SEV1)"})
        );
        assert_eq!(endpoint(Format::Json).body(&payload), payload);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let settings = DeliverySettings {
            retry_initial_ms: 500,
            retry_max_secs: 3,
            ..DeliverySettings::default()
        };
        let delays: Vec<u128> = (1..=5).map(|a| settings.backoff(a).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let endpoint = |name: &str, url: &str, events: Option<Vec<String>>| Endpoint {
            name: name.into(),
            url: url.into(),
            secret: None,
            format: Format::Json,
            events,
            drills: true,
            restricted: false,
        };
        let bad = [
            vec![endpoint("a", "ftp://x", None)],
            vec![endpoint("a", "not a url", None)],
            vec![endpoint("", "http://x", None)],
            vec![
                endpoint("a", "http://x", None),
                endpoint("a", "http://y", None),
            ],
            vec![endpoint("a", "http://x", Some(vec!["explode".into()]))],
        ];
        for endpoints in bad {
            assert!(Webhooks::new(endpoints, DeliverySettings::default()).is_err());
        }
        let good = Webhooks::new(
            vec![endpoint("a", "https://x/hook", Some(vec!["closed".into()]))],
            DeliverySettings::default(),
        )
        .expect("valid");
        assert!(good.wants("closed") && !good.wants("declared"));
    }
}
