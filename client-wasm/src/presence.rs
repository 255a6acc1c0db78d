//! [`Presence`]: who else has the incident open, their role, the field they are editing and their caret in it.
//!
//! Presence travels in automerge-repo `ephemeral` messages, relayed by the server and never stored. The payload is
//! a CBOR map `{name, role, field, caret?, anchor?}` (CBOR because the JS `DocHandle.broadcast` encodes its payloads that way, so a
//! stock JS client can read ours and send its own). Peers that fall silent expire, so a tab that crashed or lost
//! its network leaves the list on its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wire::PeerId;

/// A peer silent for longer than this has left (it re-announces every [`HEARTBEAT_MS`]).
const EXPIRY_MS: f64 = 30_000.0;
/// How often an open tab repeats its presence, so newcomers learn of it and it does not expire.
pub const HEARTBEAT_MS: f64 = 10_000.0;
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
            peers: BTreeMap::new(),
        }
    }

    /// Sets what we say about ourselves; it goes out at the next [`Presence::due`].
    pub fn set(&mut self, info: PresenceInfo) {
        self.mine = Some(info.clipped());
        self.last_sent_ms = None;
    }

    /// The next ephemeral message to send, if ours is new or its heartbeat is due: `(session, count, payload)`.
    pub fn due(&mut self, now_ms: f64) -> Option<(String, u64, Vec<u8>)> {
        let mine = self.mine.as_ref()?;
        if self
            .last_sent_ms
            .is_some_and(|sent| now_ms - sent < HEARTBEAT_MS)
        {
            return None;
        }
        let mut payload = Vec::new();
        ciborium::into_writer(mine, &mut payload).ok()?;
        self.count += 1;
        self.last_sent_ms = Some(now_ms);
        Some((self.session_id.clone(), self.count, payload))
    }

    /// A new connection: everyone must hear from us again, and what we knew of others is stale.
    pub fn reset(&mut self) {
        self.last_sent_ms = None;
        self.peers.clear();
    }

    /// Records another peer's payload; returns whether what the page shows changed. Payloads that are not
    /// presence (another application's ephemeral data) are ignored.
    pub fn heard(&mut self, peer: PeerId, payload: &[u8], now_ms: f64) -> bool {
        let Ok(info) = ciborium::from_reader::<PresenceInfo, _>(payload) else {
            return false;
        };
        let info = info.clipped();
        let changed = self.peers.get(&peer).is_none_or(|(old, _)| *old != info);
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
