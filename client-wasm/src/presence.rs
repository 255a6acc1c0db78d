//! [`Presence`]: who else has the incident open, their role, the field they are editing and their caret in it.
//!
//! Presence travels in automerge-repo `ephemeral` messages, relayed by the server and never stored. The payload is
//! a CBOR map `{name, role, field, caret?, anchor?, leaving?}` (CBOR because the JS `DocHandle.broadcast` encodes its
//! payloads that way, so a stock JS client can read ours and send its own).
//!
//! Within a second or two, both ways: a tab that hears a peer it did not know answers with its own presence at once
//! (at most once per [`ANSWER_MIN_MS`]), so a newcomer learns who is there without waiting for their heartbeats; a
//! closing tab says `leaving: true` and drops off every list at once. Peers that fall silent expire, so a tab that
//! crashed or lost its network leaves the list on its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wire::PeerId;

/// A peer silent for longer than this has left (it re-announces every [`HEARTBEAT_MS`]).
const EXPIRY_MS: f64 = 30_000.0;
/// How often an open tab repeats its presence, so that it does not expire.
pub const HEARTBEAT_MS: f64 = 10_000.0;
/// The least time between two answers to newcomers: a war room joining at once (a page reloaded everywhere) costs
/// each tab one message a second, well inside the server's ephemeral rate (20 a second).
pub const ANSWER_MIN_MS: f64 = 1_000.0;
/// Longest name, role or field kept from another peer: presence is shown, not stored, but a hostile peer should not
/// be able to fill the page.
const MAX_TEXT: usize = 200;
/// Longest caret cursor kept, as the server allows (`server/src/ephemeral.rs`): an Automerge cursor is a counter,
/// `@` and a hex actor id.
const MAX_CURSOR: usize = 100;

/// What one tab says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInfo {
    /// Who is viewing (their token name).
    pub name: String,
    /// The command roles they hold, as the page phrases them, if any.
    #[serde(default)]
    pub role: Option<String>,
    /// The key of the field they are editing, if any.
    #[serde(default)]
    pub field: Option<String>,
    /// Their caret in that text field, as a `LiveIncident::cursor`, so it follows the text as anyone types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caret: Option<String>,
    /// The other end of their selection there (a cursor too), when they have selected text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// The tab is closing: peers drop it at once rather than after [`EXPIRY_MS`] of silence. Sent only as `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

impl PresenceInfo {
    /// Clips every text to [`MAX_TEXT`] characters, and drops a cursor longer than any cursor is.
    fn clipped(self) -> PresenceInfo {
        let clip = |s: String| s.chars().take(MAX_TEXT).collect::<String>();
        let cursor = |c: Option<String>| c.filter(|c| c.len() <= MAX_CURSOR);
        PresenceInfo {
            name: clip(self.name),
            role: self.role.map(clip),
            field: self.field.map(clip),
            caret: cursor(self.caret),
            anchor: cursor(self.anchor),
            leaving: self.leaving,
        }
    }
}

/// Another peer as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerPresence {
    /// The peer (one per tab).
    pub peer: String,
    /// What it said about itself.
    #[serde(flatten)]
    pub info: PresenceInfo,
    /// When we last heard from it (milliseconds since the epoch).
    pub seen_ms: f64,
}

/// Our own presence and what we heard from others.
#[derive(Debug)]
pub struct Presence {
    /// Identifies our ephemeral messages; the server drops repeats of a session's counts.
    session_id: String,
    /// Sequence number of our last ephemeral message.
    count: u64,
    /// What we say about ourselves, once the page set it.
    mine: Option<PresenceInfo>,
    /// When we last sent it; `None` forces a send at the next chance (new connection, new value).
    last_sent_ms: Option<f64>,
    /// A peer we did not know spoke: send ours as soon as [`ANSWER_MIN_MS`] allows, so it learns of us.
    answer_due: bool,
    /// When we last answered a newcomer.
    answered_ms: Option<f64>,
    /// Other peers by id, with when we last heard from them.
    peers: BTreeMap<PeerId, (PresenceInfo, f64)>,
}

impl Presence {
    /// Presence for a tab whose ephemeral session is `session_id`.
    pub fn new(session_id: String) -> Presence {
        Presence {
            session_id,
            count: 0,
            mine: None,
            last_sent_ms: None,
            answer_due: false,
            answered_ms: None,
            peers: BTreeMap::new(),
        }
    }

    /// Sets what we say about ourselves; it goes out at the next [`Presence::due`].
    pub fn set(&mut self, info: PresenceInfo) {
        self.mine = Some(info.clipped());
        self.last_sent_ms = None;
    }

    /// The next ephemeral message to send, if ours is new, a newcomer is owed an answer or its heartbeat is due:
    /// `(session, count, payload)`.
    pub fn due(&mut self, now_ms: f64) -> Option<(String, u64, Vec<u8>)> {
        let heartbeat = self
            .last_sent_ms
            .is_none_or(|sent| now_ms - sent >= HEARTBEAT_MS);
        let answer = self.answer_due
            && self
                .answered_ms
                .is_none_or(|answered| now_ms - answered >= ANSWER_MIN_MS);
        if !heartbeat && !answer {
            return None;
        }
        let message = self.message(self.mine.clone()?)?;
        if self.answer_due {
            self.answer_due = false;
            self.answered_ms = Some(now_ms);
        }
        self.last_sent_ms = Some(now_ms);
        Some(message)
    }

    /// The message that tells peers this tab is closing, now, if we ever said we were here. Our presence goes out
    /// again at the next [`Presence::due`], should the tab come back (a page restored from the back-forward cache).
    pub fn leave(&mut self) -> Option<(String, u64, Vec<u8>)> {
        let leaving = PresenceInfo {
            leaving: true,
            ..self.mine.clone()?
        };
        self.last_sent_ms = None;
        self.message(leaving)
    }

    /// Numbers and encodes one payload of ours.
    fn message(&mut self, info: PresenceInfo) -> Option<(String, u64, Vec<u8>)> {
        let mut payload = Vec::new();
        ciborium::into_writer(&info, &mut payload).ok()?;
        self.count += 1;
        Some((self.session_id.clone(), self.count, payload))
    }

    /// A new connection: everyone must hear from us again, and what we knew of others is stale.
    pub fn reset(&mut self) {
        self.last_sent_ms = None;
        self.answer_due = false;
        self.peers.clear();
    }

    /// Records another peer's payload; returns whether what the page shows changed. A peer we did not know is owed
    /// our presence (see [`Presence::due`]); a peer leaving goes at once. Payloads that are not presence (another
    /// application's ephemeral data) are ignored.
    pub fn heard(&mut self, peer: PeerId, payload: &[u8], now_ms: f64) -> bool {
        let Ok(info) = ciborium::from_reader::<PresenceInfo, _>(payload) else {
            return false;
        };
        if info.leaving {
            return self.peers.remove(&peer).is_some();
        }
        let info = info.clipped();
        let known = self.peers.get(&peer);
        self.answer_due |= known.is_none();
        let changed = known.is_none_or(|(old, _)| *old != info);
        self.peers.insert(peer, (info, now_ms));
        changed
    }

    /// Drops peers silent for too long; returns whether any left.
    pub fn expire(&mut self, now_ms: f64) -> bool {
        let before = self.peers.len();
        self.peers.retain(|_, (_, seen)| now_ms - *seen < EXPIRY_MS);
        self.peers.len() != before
    }

    /// The other peers, sorted by name then peer id.
    pub fn peers(&self) -> Vec<PeerPresence> {
        let mut list: Vec<PeerPresence> = self
            .peers
            .iter()
            .map(|(peer, (info, seen))| PeerPresence {
                peer: peer.to_string(),
                info: info.clone(),
                seen_ms: *seen,
            })
            .collect();
        list.sort_by(|a, b| a.info.name.cmp(&b.info.name).then(a.peer.cmp(&b.peer)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_800_000_000_000.0;

    fn present(name: &str) -> PresenceInfo {
        PresenceInfo {
            name: name.into(),
            role: None,
            field: None,
            caret: None,
            anchor: None,
            leaving: false,
        }
    }

    fn payload(info: &PresenceInfo) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(info, &mut out).expect("encode");
        out
    }

    /// Alice, present and just announced at `T0`.
    fn alice() -> Presence {
        let mut presence = Presence::new("alice-session".into());
        presence.set(present("alice"));
        assert!(presence.due(T0).is_some(), "the first announcement");
        presence
    }

    #[test]
    fn a_newcomer_is_answered_at_once_and_a_known_peer_is_not() {
        let mut presence = alice();
        assert!(presence.due(T0 + 2_000.0).is_none(), "no heartbeat due yet");
        assert!(presence.heard(
            PeerId::from("bob-tab"),
            &payload(&present("bob")),
            T0 + 2_000.0
        ));
        assert!(
            presence.due(T0 + 2_000.0).is_some(),
            "bob joined: he hears alice now, not at her next heartbeat"
        );
        // Bob's own heartbeat, or his answer to someone else, is no reason to speak again.
        presence.heard(
            PeerId::from("bob-tab"),
            &payload(&present("bob")),
            T0 + 2_500.0,
        );
        assert!(presence.due(T0 + 3_500.0).is_none());
    }

    #[test]
    fn answers_to_a_crowd_joining_at_once_are_rate_limited() {
        let mut presence = alice();
        presence.heard(
            PeerId::from("bob-tab"),
            &payload(&present("bob")),
            T0 + 2_000.0,
        );
        assert!(presence.due(T0 + 2_000.0).is_some());
        presence.heard(
            PeerId::from("carol-tab"),
            &payload(&present("carol")),
            T0 + 2_100.0,
        );
        assert!(
            presence.due(T0 + 2_100.0).is_none(),
            "within a second of the last answer"
        );
        assert!(
            presence.due(T0 + 3_000.0).is_some(),
            "carol is answered a second after bob"
        );
        assert!(presence.due(T0 + 3_100.0).is_none(), "and only once");
    }

    #[test]
    fn a_leaving_peer_drops_off_at_once_and_our_leave_says_so() {
        let mut presence = alice();
        let bob = PeerId::from("bob-tab");
        presence.heard(bob.clone(), &payload(&present("bob")), T0 + 1_000.0);
        assert_eq!(presence.peers().len(), 1);
        let leaving = PresenceInfo {
            leaving: true,
            ..present("bob")
        };
        assert!(presence.heard(bob.clone(), &payload(&leaving), T0 + 1_500.0));
        assert!(presence.peers().is_empty(), "gone before any expiry");
        assert!(
            !presence.heard(bob, &payload(&leaving), T0 + 1_600.0),
            "twice changes nothing"
        );

        let (_, _, message) = presence.leave().expect("alice was here");
        let said: PresenceInfo = ciborium::from_reader(message.as_slice()).expect("decode");
        assert_eq!(
            said,
            PresenceInfo {
                leaving: true,
                ..present("alice")
            }
        );
        assert!(
            presence.due(T0 + 1_700.0).is_some(),
            "a tab that comes back says it is here again"
        );
        assert!(
            Presence::new("s".into()).leave().is_none(),
            "nothing to retract"
        );
    }

    #[test]
    fn presence_without_leaving_encodes_as_before() {
        let bytes = payload(&present("alice"));
        let value: ciborium::Value = ciborium::from_reader(bytes.as_slice()).expect("decode");
        let keys: Vec<String> = value
            .as_map()
            .expect("a map")
            .iter()
            .filter_map(|(k, _)| k.as_text().map(str::to_owned))
            .collect();
        assert_eq!(keys, ["name", "role", "field"]);
    }
}
