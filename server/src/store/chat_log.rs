//! The channel log: every line said in a chat channel bound to an incident (who, what, when), as both backends
//! store it, beside the document and never in it, so a chatty channel (10 lines a second for hours) costs the live
//! document nothing. Lines carrying the network's own id (Slack's `ts`) are unique per incident and channel: a
//! repeated Slack event, or a second node hearing the same line, logs nothing twice. The index knows each open
//! incident's channel (`IncidentSummary::channel`, `Store::incident_by_channel`), so hearing a line needs no
//! document.

use chrono::{DateTime, Utc};
use incident_doc::channel::{Channel, Network};
use serde::Serialize;

use wire::DocumentId;

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChatLine {
    /// The incident whose channel it was said in.
    pub doc: DocumentId,
    /// The network.
    pub network: Network,
    /// The channel as the network names it (IRC name, Slack id).
    pub channel: String,
    /// The network's id of the line (Slack `ts`); a line with an id is logged once per incident and channel.
    pub line_id: Option<String>,
    /// Who said it, as the network shows them (IRC nick, Slack user id).
    pub speaker: String,
    /// The commandpost person the speaker maps to (`[[chat.people]]`), if any.
    pub person: Option<String>,
    /// What was said.
    pub text: String,
    /// When it was said (UTC).
    pub at: DateTime<Utc>,
}

/// A logged line, as the API and exports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatLine {
    /// Increasing with the order lines were logged in; `before` of the next page.
    pub id: i64,
    /// The network.
    pub network: Network,
    /// The channel as the network names it.
    pub channel: String,
    /// Who said it, as the network shows them.
    pub speaker: String,
    /// The commandpost person the speaker mapped to when the line was said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// What was said.
    pub text: String,
    /// When (UTC).
    pub at: DateTime<Utc>,
}

/// The index key of a bound channel: the network and the address the network uses, lowercased (IRC compares
/// channel names case-insensitively; Slack ids are uppercase by Slack's own rule), so `#Inc-1` finds `#inc-1`.
pub fn channel_key(network: Network, address: &str) -> String {
    format!("{}:{}", network.as_str(), address.to_lowercase())
}

/// The channel as the index column holds it (JSON), the same text in both backends.
pub(super) fn channel_column(channel: Option<&Channel>) -> (Option<String>, Option<String>) {
    match channel {
        Some(c) => (
            serde_json::to_string(c).ok(),
            Some(channel_key(c.network, c.address())),
        ),
        None => (None, None),
    }
}

/// Reads the channel column back; text that is no channel reads as none (the document stays the truth).
pub(super) fn channel_from_column(text: Option<String>) -> Option<Channel> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The channels of the index's column texts, each once (two incidents may name one channel, closed and open).
pub(super) fn distinct_channels(texts: Vec<Option<String>>) -> Vec<Channel> {
    let mut channels: Vec<Channel> = Vec::new();
    for channel in texts.into_iter().filter_map(channel_from_column) {
        let key = channel_key(channel.network, channel.address());
        if !channels
            .iter()
            .any(|c| channel_key(c.network, c.address()) == key)
        {
            channels.push(channel);
        }
    }
    channels
}

/// The `LIKE` pattern of every key of one network.
pub(super) fn network_pattern(network: Network) -> String {
    format!("{}:%", network.as_str())
}

#[cfg(test)]
pub(crate) mod cases {
    use chrono::{Duration, TimeZone, Utc};
    use incident_doc::channel::{Channel, Network};
    use incident_doc::schema::Status;

    use super::NewChatLine;
    use crate::store::Store;
    use crate::store::conformance::{doc_id, summary_of};
    use crate::store::outbox::{Attempt, NewDelivery, Next, Sink};

    fn line(doc: wire::DocumentId, n: i64, id: Option<&str>) -> NewChatLine {
        NewChatLine {
            doc,
            network: Network::Slack,
            channel: "C0123ABCD".into(),
            line_id: id.map(str::to_owned),
            speaker: "U024BE7LH".into(),
            person: (n % 2 == 0).then(|| "alice".to_owned()),
            text: format!("line {n} 'quoted' \"and\" \u{1F525}"),
            at: Utc
                .with_ymd_and_hms(2026, 11, 25, 4, 0, 0)
                .single()
                .expect("valid")
                + Duration::seconds(n),
        }
    }

    /// Lines are logged in order, paged newest first, once per network id; channels are found by their key among
    /// open incidents only.
    pub(crate) async fn chat_log_pages_and_dedupes(store: &dyn Store) {
        let doc = doc_id("chat");
        let other = doc_id("other chat");
        let mut batch: Vec<NewChatLine> = (0..25).map(|n| line(doc, n, None)).collect();
        batch.push(line(doc, 100, Some("1531420618.000200")));
        batch.push(line(doc, 101, Some("1531420618.000200")));
        batch.push(line(other, 102, Some("1531420618.000200")));
        assert_eq!(store.append_chat(batch).await.expect("append"), 27);
        // The same Slack event again, from a retry or another node: nothing new.
        let again = vec![line(doc, 100, Some("1531420618.000200"))];
        assert_eq!(store.append_chat(again).await.expect("append"), 0);

        let page = store.chat_log(doc, None, 10).await.expect("page");
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].text, line(doc, 100, None).text);
        assert!(page.windows(2).all(|w| w[0].id > w[1].id));
        let next = store
            .chat_log(doc, Some(page[9].id), 100)
            .await
            .expect("page");
        assert_eq!(next.len(), 16);
        assert_eq!(next[15].text, line(doc, 0, None).text);
        assert_eq!(next[15].person, Some("alice".into()));
        assert_eq!(next[14].person, None);
        assert_eq!(next[15].at, line(doc, 0, None).at);
        assert_eq!(
            store.chat_log(other, None, 10).await.expect("page").len(),
            1
        );

        let by_id = store
            .chat_line(doc, Network::Slack, "C0123ABCD", "1531420618.000200")
            .await
            .expect("lookup")
            .expect("logged");
        assert_eq!(by_id.text, line(doc, 100, None).text);
        assert_eq!(
            store
                .chat_line(doc, Network::Irc, "C0123ABCD", "1531420618.000200")
                .await
                .expect("lookup"),
            None
        );

        // The index finds an open incident by its channel, case-insensitively, and lists each network's channels.
        let mut bound = summary_of("chat", Status::Active, 1);
        bound.id = doc;
        bound.channel = Some(Channel::new(Network::Irc, "#Inc-1-DB", None).expect("valid"));
        store
            .append(doc, b"x".to_vec(), Some(bound.clone()))
            .await
            .expect("append");
        let found = store
            .incident_by_channel(Network::Irc, "#inc-1-db")
            .await
            .expect("lookup");
        assert_eq!(found.map(|s| s.id), Some(doc));
        assert_eq!(
            store
                .incident_by_channel(Network::Slack, "#inc-1-db")
                .await
                .expect("lookup"),
            None
        );
        assert_eq!(
            store.bound_channels(Network::Irc).await.expect("channels"),
            vec![bound.channel.clone().expect("bound")]
        );
        assert!(
            store
                .bound_channels(Network::Slack)
                .await
                .expect("channels")
                .is_empty()
        );
        let mut closed = bound.clone();
        closed.status = Some(Status::Closed);
        store
            .append(doc, b"y".to_vec(), Some(closed))
            .await
            .expect("append");
        assert_eq!(
            store
                .incident_by_channel(Network::Irc, "#inc-1-db")
                .await
                .expect("lookup"),
            None
        );
        assert!(
            store
                .bound_channels(Network::Irc)
                .await
                .expect("channels")
                .is_empty()
        );

        // A closed incident's channel is still to be in while its closing post is pending, so the bot says it.
        let closing = NewDelivery {
            endpoint: "#inc-1-db".into(),
            event_id: "closed-1".into(),
            kind: "closed".into(),
            doc,
            payload: r##"{"channel":"#inc-1-db","text":"closed"}"##.into(),
            not_before: Utc::now(),
            coalesce: None,
            sink: Sink::Irc,
        };
        store.enqueue(vec![closing]).await.expect("enqueue");
        assert_eq!(
            store.bound_channels(Network::Irc).await.expect("channels"),
            vec![bound.channel.clone().expect("bound")]
        );
        let now = Utc::now();
        let claimed = store
            .claim_deliveries(Sink::Irc, now, now + Duration::minutes(1), 10)
            .await
            .expect("claim");
        let said = Attempt {
            at: now,
            status: None,
            error: None,
            next: Next::Done,
        };
        store
            .finish_delivery(claimed[0].id, &said)
            .await
            .expect("finish");
        assert!(
            store
                .bound_channels(Network::Irc)
                .await
                .expect("channels")
                .is_empty()
        );

        // Deleting the incident deletes its log.
        assert!(store.delete(doc).await.expect("delete"));
        assert!(
            store
                .chat_log(doc, None, 10)
                .await
                .expect("page")
                .is_empty()
        );
        assert_eq!(
            store.chat_log(other, None, 10).await.expect("page").len(),
            1
        );
    }
}
