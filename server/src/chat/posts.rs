//! What the server says in an incident's bound channel about the incident itself: the declaration, alerts as
//! they are recorded, handoffs proposed and accepted, status and severity changes, exit criteria met, closing, and
//! stale fields addressed to their owner. Each post is an outbox row (`Sink::Irc`/`Sink::Slack`, the endpoint the
//! channel's address, the payload `{"channel", "text"}`) queued in the same transaction as the change that caused
//! it, as webhook events are, so a post is durable exactly when its change is and queued only by the node that
//! wrote the change; the network's bot claims and sends it.

use chrono::{DateTime, Utc};
use incident_doc::channel::{Channel, Network};
use incident_doc::signals::{Event, Signals};
use serde_json::json;
use wire::DocumentId;

use crate::store::outbox::{NewDelivery, Sink};
use crate::webhooks::{random_hex, text};

/// The outbox sink of a network's bot.
pub fn sink(network: Network) -> Sink {
    match network {
        Network::Irc => Sink::Irc,
        Network::Slack => Sink::Slack,
    }
}

/// The posts of one batch of changes: its events said in the channel bound after it (the summary's edits are the
/// document's, not the channel's), and a greeting when the batch bound the channel.
pub fn posts(
    doc: DocumentId,
    before: Option<&Signals>,
    after: &Signals,
    events: &[Event],
    now: DateTime<Utc>,
) -> Vec<NewDelivery> {
    let Some(channel) = &after.channel else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let newly_bound = before.is_some_and(|b| b.channel.as_ref() != Some(channel));
    if newly_bound {
        let line = format!(
            "{}: this channel is now the incident's command post. Lines said here are logged with the incident; \
             say !help for the commands.",
            name(after)
        );
        out.push(post(doc, channel, "channelBound", line, now));
    }
    for event in events {
        if matches!(event, Event::SummaryChanged { .. }) {
            continue;
        }
        out.push(post(doc, channel, event.name(), text(after, event), now));
    }
    out
}

/// A stale field's reminder, addressed to whoever owns it (`holder`), queued by the sweep of every node under one
/// id per field and due time, so the outbox keeps it once.
pub fn stale(
    doc: DocumentId,
    signals: &Signals,
    event: &Event,
    holder: Option<&str>,
    now: DateTime<Utc>,
) -> Option<NewDelivery> {
    let channel = signals.channel.as_ref()?;
    let Event::FieldStale { field, due_at, .. } = event else {
        return None;
    };
    let mut line = text(signals, event);
    if let Some(holder) = holder {
        line = format!("{holder}: {line}; please update it");
    }
    let mut delivery = post(doc, channel, event.name(), line, now);
    delivery.event_id = format!("chat_stale_{doc}_{field}_{}", due_at.timestamp_millis());
    Some(delivery)
}

/// `[DRILL] #465 Checkout errors`, as the events' lines begin.
fn name(signals: &Signals) -> String {
    let full = text(signals, &Event::Closed);
    full.strip_suffix(": closed").unwrap_or(&full).to_owned()
}

fn post(
    doc: DocumentId,
    channel: &Channel,
    kind: &str,
    text: String,
    now: DateTime<Utc>,
) -> NewDelivery {
    let address = channel.address().to_owned();
    NewDelivery {
        payload: json!({"channel": address, "text": text}).to_string(),
        endpoint: address,
        event_id: format!("chat_{}", random_hex()),
        kind: kind.to_owned(),
        doc,
        not_before: now,
        coalesce: None,
        sink: sink(channel.network),
    }
}
