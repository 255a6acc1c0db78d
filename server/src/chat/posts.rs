//! What the server says in an incident's bound channel about the incident itself: the declaration, alerts as
//! they are recorded, handoffs proposed and accepted, status and severity changes, exit criteria met, closing, and
//! stale fields addressed to their owner. Each post is an outbox row (`Sink::Irc`/`Sink::Slack`, the endpoint the
//! channel's address, the payload `{"channel", "text"}`) queued in the same transaction as the change that caused
//! it, as webhook events are, so a post is durable exactly when its change is and queued only by the node that
//! wrote the change; the network's bot claims and sends it.

use chrono::{DateTime, Utc};
use incident_doc::channel::Channel;
use incident_doc::signals::{Event, Signals};
use serde_json::json;
use wire::DocumentId;

use crate::store::outbox::{NewDelivery, Sink};
use crate::webhooks::{random_hex, text};

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
pub fn stale_post(
    doc: DocumentId,
    signals: &Signals,
    event: &Event,
    holder: Option<&str>,
    now: DateTime<Utc>,
) -> Option<NewDelivery> {
    let channel = signals.channel.as_ref()?;
    let key = crate::webhooks::stale_key(event)?;
    let mut line = text(signals, event);
    if let Some(holder) = holder {
        let ask = match event {
            Event::FieldStale { .. } => "please update it",
            _ => "please answer it",
        };
        line = format!("{holder}: {line}; {ask}");
    }
    let mut delivery = post(doc, channel, event.name(), line, now);
    delivery.event_id = format!("chat_stale_{doc}_{key}");
    Some(delivery)
}

/// Starts the sweep that reminds bound channels of fields gone stale, addressed to the field's owner, every
/// `every`; it stops when `shutdown` is cancelled. Every node sweeps; the outbox keeps each reminder once.
pub fn spawn_stale_sweep(
    store: std::sync::Arc<dyn crate::store::Store>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            let now = Utc::now();
            let found = crate::webhooks::delivery::stale_incidents(&store, now, true).await;
            let queued: Vec<NewDelivery> = match found {
                Ok(stale) => stale
                    .iter()
                    .flat_map(|s| {
                        s.events.iter().filter_map(|(event, holder)| {
                            stale_post(s.doc, &s.signals, event, holder.as_deref(), now)
                        })
                    })
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "the chat staleness sweep failed");
                    continue;
                }
            };
            if !queued.is_empty()
                && let Err(e) = store.enqueue(queued).await
            {
                tracing::debug!(error = %e, "the chat staleness sweep could not queue its reminders");
            }
        }
    })
}

/// `[DRILL] #465 Checkout errors`, as the events' lines begin.
pub fn name(signals: &Signals) -> String {
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
        sink: Sink::from(channel.network),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use incident_doc::channel::Network;
    use incident_doc::{Declaration, Editor, Incident, Operation, template};

    use super::*;

    /// The moment the tests' incidents are declared at.
    fn t0() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
            .single()
            .expect("valid")
    }

    /// Incident #465 `name` of the built-in incident template, declared by alice at [`t0`].
    fn declared(name: &str) -> Incident {
        let template = template::builtin()
            .into_iter()
            .find(|t| t.id == "incident")
            .expect("built in");
        let declaration = Declaration {
            name: name.into(),
            number: Some(465),
        };
        Incident::create(&template, &declaration, &Editor::new("alice", t0()), None)
            .expect("create")
    }

    #[test]
    fn events_and_stale_reminders_go_to_the_bound_channel_only() {
        let t0 = t0();
        let mut incident = declared("Checkout <!channel> errors");
        let doc = DocumentId::random();
        let unbound = incident.signals();
        let stale = Event::FieldStale {
            field: "summary".into(),
            label: "Summary".into(),
            due_at: t0,
        };
        assert!(posts(doc, None, &unbound, &[Event::Declared], t0).is_empty());
        assert!(stale_post(doc, &unbound, &stale, Some("bob"), t0).is_none());

        let bind = Operation::BindChannel {
            network: Network::Irc,
            name: "#inc-465".into(),
            id: None,
        };
        incident
            .apply(&bind, &Editor::new("alice", t0))
            .expect("bind");
        let bound = incident.signals();
        let summary = Event::SummaryChanged {
            summary: "x".into(),
        };
        let out = posts(doc, Some(&unbound), &bound, &[Event::Closed, summary], t0);
        let texts: Vec<String> = out
            .iter()
            .map(|d| {
                assert_eq!((d.sink, d.endpoint.as_str()), (Sink::Irc, "#inc-465"));
                let payload: serde_json::Value = serde_json::from_str(&d.payload).expect("JSON");
                assert_eq!(payload["channel"], "#inc-465");
                payload["text"].as_str().expect("text").to_owned()
            })
            .collect();
        // The greeting, then the events (not the summary's edits); the text is raw, escaped by each network's bot.
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].starts_with("#465 Checkout <!channel> errors"),
            "{texts:?}"
        );
        assert!(texts[0].contains("is now the incident's command post"));
        assert!(texts[1].ends_with(": closed"));

        let reminder = stale_post(doc, &bound, &stale, Some("bob"), t0).expect("a reminder");
        let again = stale_post(doc, &bound, &stale, Some("bob"), t0).expect("a reminder");
        // The same id on every sweep and node: the outbox keeps it once.
        assert_eq!(reminder.event_id, again.event_id);
        assert!(
            reminder.payload.contains("bob: #465"),
            "{}",
            reminder.payload
        );
        assert!(reminder.payload.contains("please update it"));

        // The check-ins: a help flag names the commander; an overdue prompt is addressed to them, once per due time.
        let help = Event::HelpFlag {
            person: "bob".into(),
            state: Some(incident_doc::checkins::HelpState::Help),
        };
        let out = posts(doc, Some(&bound), &bound, &[help], t0);
        assert_eq!(out.len(), 1);
        assert!(
            out[0]
                .payload
                .contains("help flag: bob needs help (Incident Commander: alice)"),
            "{}",
            out[0].payload
        );
        let due = Event::ReconsiderDue { due_at: t0 };
        let prompt = stale_post(doc, &bound, &due, Some("alice"), t0).expect("a reminder");
        let again = stale_post(doc, &bound, &due, Some("alice"), t0).expect("a reminder");
        assert_eq!(prompt.event_id, again.event_id);
        assert_ne!(prompt.event_id, reminder.event_id);
        assert!(
            prompt.payload.contains("alice: #465")
                && prompt.payload.contains("reconsider the options")
                && prompt.payload.contains("please answer it"),
            "{}",
            prompt.payload
        );
    }

    #[test]
    fn an_uncoordinated_change_is_posted_naming_the_operations_lead_and_the_commander() {
        let t0 = t0();
        let alice = Editor::new("alice", t0);
        let mut incident = declared("Checkout errors");
        let setup = [
            Operation::BindChannel {
                network: Network::Irc,
                name: "#inc-465".into(),
                id: None,
            },
            Operation::AssignRole {
                role: incident_doc::schema::Role::Operations,
                person: Some("dave".into()),
            },
        ];
        for op in &setup {
            incident.apply(op, &alice).expect("setup");
        }
        let before = incident.signals();
        let change = Operation::LogChange {
            what: "restarted the primary".into(),
            target: "db-1".into(),
            at: None,
        };
        incident
            .apply(&change, &Editor::new("mallory", t0))
            .expect("log");
        let after = incident.signals();
        let events = incident_doc::signals::events(&before, &after);
        let out = posts(DocumentId::random(), Some(&before), &after, &events, t0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, "uncoordinatedChange");
        assert!(
            out[0].payload.contains(
                "uncoordinated change by mallory on db-1: restarted the primary (dave, alice:"
            ),
            "{}",
            out[0].payload
        );
    }
}
