//! The automerge-repo WebSocket wire protocol, as a sans-IO codec shared by the server, the browser client
//! (compiled to WebAssembly) and the test and load clients.
//!
//! The stock JS client (`@automerge/automerge-repo` with
//! `@automerge/automerge-repo-network-websocket`) talks to us in binary WebSocket frames, each
//! holding one CBOR map. This module turns such a frame into a typed [`Message`] with [`decode()`]
//! and back with [`Message::encode`]; it does no I/O, so the connection handler, the load generator
//! and the tests can all share it.
//!
//! Behind the `peer` feature, [`peer::Peer`] is the client's side of the protocol on top of the codec (handshake,
//! per-document Automerge sync state, `request` or `sync`), the one peer of the browser client, the load generator
//! and the tests.
//!
//! Decoding is deliberately tolerant of what the real JS client sends (the handshake metadata under
//! `peerMetadata` rather than the documented `metadata`, integers encoded as float64, `undefined`
//! for absent values, unknown keys) and strict about everything else: every rejection is a
//! [`WireError`] whose text can be sent back to the client as it is. Decoding never panics, never
//! recurses deeper than [`MAX_NESTING`] levels and never builds more than
//! [`MAX_VALUES_PER_MESSAGE`] values, whatever the input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod decode;
mod encode;
#[cfg(any(test, feature = "peer"))]
pub mod peer;
#[cfg(test)]
mod tests;

/// The only protocol version automerge-repo has defined; a `join` that does not offer it is refused.
pub const PROTOCOL_VERSION: &str = "1";

/// How deeply CBOR arrays, maps and tags may nest in one frame.
///
/// The deepest legitimate message (`remote-heads-changed`) nests four levels; the limit keeps a
/// hostile frame from exhausting the decoder's stack while leaving room for unknown extensions.
pub const MAX_NESTING: usize = 16;

/// How many CBOR values the fields of one message may hold in total.
///
/// Every value the decoder keeps costs memory out of proportion to its encoding (a one-byte CBOR
/// item becomes a Rust value of tens of bytes), so the count is capped; values under unknown keys
/// are skipped without being kept and do not count. Real messages hold a few dozen values at most.
pub const MAX_VALUES_PER_MESSAGE: usize = 4096;

/// The number of bytes in a document id.
const DOCUMENT_ID_LEN: usize = 16;

/// The longest base58 string that can encode a document id and its checksum (20 bytes).
///
/// Checking the length first keeps a hostile, very long id from costing quadratic decoding time.
const MAX_DOCUMENT_ID_CHARS: usize = 28;

/// The scheme prefix of an Automerge URL.
const URL_PREFIX: &str = "automerge:";

/// The id of an Automerge document: 16 random bytes, written as base58check.
///
/// The string form is what travels in messages and URLs, and what the JS client's `bs58check`
/// package produces: base58 of the bytes followed by the first four bytes of their double SHA-256,
/// with no version byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct DocumentId([u8; DOCUMENT_ID_LEN]);

impl DocumentId {
    /// A new random id, shaped as a version 4 UUID like the ids the JS `Repo.create()` makes.
    ///
    /// Behind the `random` feature: only the side that creates documents (the server, tests) needs a random
    /// source, and leaving `rand` out keeps the browser build free of a second randomness backend.
    #[cfg(any(test, feature = "random"))]
    pub fn random() -> Self {
        let mut bytes: [u8; DOCUMENT_ID_LEN] = rand::random();
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(bytes)
    }

    /// Wraps raw id bytes, for ids that were stored in binary form.
    pub fn from_bytes(bytes: [u8; DOCUMENT_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw id bytes, for storing the id in binary form.
    pub fn as_bytes(&self) -> &[u8; DOCUMENT_ID_LEN] {
        &self.0
    }

    /// The Automerge URL of the document, `automerge:<id>`, as the JS `Repo.find()` accepts it.
    pub fn url(&self) -> String {
        format!("{URL_PREFIX}{self}")
    }

    /// Reads the document id out of an Automerge URL.
    ///
    /// A URL may pin a version with a `#<heads>` suffix; the heads are ignored here because the
    /// server always serves the whole document.
    pub fn parse_url(url: &str) -> Result<Self, DocumentIdError> {
        let rest = url
            .strip_prefix(URL_PREFIX)
            .ok_or(DocumentIdError::NotAnAutomergeUrl)?;
        let id = rest.split_once('#').map_or(rest, |(id, _heads)| id);
        id.parse()
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = DocumentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DocumentIdError::Empty);
        }
        if s.len() > MAX_DOCUMENT_ID_CHARS {
            return Err(DocumentIdError::TooLong(s.len()));
        }
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|err| match err {
                bs58::decode::Error::InvalidCharacter { .. }
                | bs58::decode::Error::NonAsciiCharacter { .. } => DocumentIdError::NotBase58,
                _ => DocumentIdError::BadChecksum,
            })?;
        let bytes: [u8; DOCUMENT_ID_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DocumentIdError::WrongLength(bytes.len()))?;
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for DocumentId {
    type Error = DocumentIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DocumentId> for String {
    fn from(id: DocumentId) -> Self {
        id.to_string()
    }
}

/// Why a string is not a document id or an Automerge URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentIdError {
    /// The string is empty.
    #[error("the document id is empty")]
    Empty,
    /// The string is longer than any base58check encoding of 16 bytes.
    #[error("the document id is {0} characters long, more than a document id can be")]
    TooLong(usize),
    /// The string has a character outside the base58 alphabet.
    #[error("the document id is not base58")]
    NotBase58,
    /// The last four bytes are not the checksum of the others, or there are fewer than four.
    #[error("the document id's checksum does not match")]
    BadChecksum,
    /// The checksum matches but the payload is not 16 bytes.
    #[error("the document id holds {0} bytes instead of 16")]
    WrongLength(usize),
    /// The string does not start with `automerge:`.
    #[error("not an Automerge URL (expected automerge:<document id>)")]
    NotAnAutomergeUrl,
}

/// The id a peer announces for itself: an opaque string chosen by the peer.
///
/// It names a connection (the JS client picks a fresh one per tab), not a user; the server binds
/// it to the socket at `join` and rejects later messages that claim another sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(String);

impl PeerId {
    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for PeerId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for PeerId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// What a peer tells about its storage in the handshake.
///
/// A peer that names a storage id and is not ephemeral will come back with the same storage, so
/// its sync state is worth persisting; anything else is per connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The id of the peer's persistent storage (the JS client sends a UUID), if it has one.
    pub storage_id: Option<String>,
    /// Whether the peer expects never to reconnect with this storage. A missing flag decodes as
    /// `false`, which is how the JS `Repo` itself reads it.
    pub is_ephemeral: bool,
}

/// The heads a peer with a given storage id was last seen at, as gossiped in
/// `remote-heads-changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// The document heads, each a base58check-encoded change hash.
    pub heads: Vec<String>,
    /// When the heads were first observed, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// One message of the protocol; a binary WebSocket frame carries exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The client's opening message: who it is and which protocol versions it speaks.
    Join {
        /// The client's peer id, bound to the socket from now on.
        sender_id: PeerId,
        /// The protocol versions the client offers; it must include [`PROTOCOL_VERSION`].
        supported_protocol_versions: Vec<String>,
        /// The client's storage details, if it sent any.
        metadata: Option<PeerMetadata>,
    },
    /// The server's answer to `join`: the handshake succeeded.
    Peer {
        /// The server's peer id.
        sender_id: PeerId,
        /// The client's peer id, echoed from its `join`.
        target_id: PeerId,
        /// The version the server picked, always [`PROTOCOL_VERSION`].
        selected_protocol_version: String,
        /// The server's storage details.
        metadata: Option<PeerMetadata>,
    },
    /// "I do not have this document": sync it to me, or answer `doc-unavailable`.
    Request {
        /// The peer asking.
        sender_id: PeerId,
        /// The peer asked.
        target_id: PeerId,
        /// The document wanted.
        document_id: DocumentId,
        /// The sender's first Automerge sync message for the document; never empty.
        data: Vec<u8>,
    },
    /// One Automerge sync message about a document.
    Sync {
        /// The peer sending the sync message.
        sender_id: PeerId,
        /// The peer it is for.
        target_id: PeerId,
        /// The document it is about.
        document_id: DocumentId,
        /// An encoded `automerge::sync::Message`; never empty.
        data: Vec<u8>,
    },
    /// The answer to `request` when the document does not exist or may not be read; the two
    /// cases look the same so that document ids cannot be probed.
    DocUnavailable {
        /// The peer answering.
        sender_id: PeerId,
        /// The peer that asked.
        target_id: PeerId,
        /// The document asked for.
        document_id: DocumentId,
    },
    /// Application data about a document that is relayed but never stored, such as presence.
    Ephemeral {
        /// The peer that first sent the data.
        sender_id: PeerId,
        /// The peer this copy is for.
        target_id: PeerId,
        /// The document the data is about.
        document_id: DocumentId,
        /// A random id the sender picked at startup; with `count` it identifies duplicates.
        session_id: String,
        /// The sender's sequence number within the session, increasing.
        count: u64,
        /// The payload, in practice CBOR chosen by the application; never empty.
        data: Vec<u8>,
    },
    /// An advisory goodbye before the sender disconnects.
    Leave {
        /// The peer leaving.
        sender_id: PeerId,
    },
    /// A protocol error; the sender closes the connection after it.
    Error {
        /// A description for humans.
        message: String,
    },
    /// A change to the set of storage ids whose heads the sender wants to hear about.
    ///
    /// Part of the optional heads gossip, which the server does not take part in: it is decoded
    /// only so that the server can ignore it on purpose.
    RemoteSubscriptionChange {
        /// The peer changing its subscription.
        sender_id: PeerId,
        /// The peer asked to track the storage ids.
        target_id: PeerId,
        /// Storage ids to start tracking (empty when the sender left the list out).
        add: Vec<String>,
        /// Storage ids to stop tracking (empty when the sender left the list out).
        remove: Vec<String>,
    },
    /// News that peers with the given storage ids are at new heads of a document.
    ///
    /// Part of the optional heads gossip, decoded only so that the server can ignore it on purpose.
    RemoteHeadsChanged {
        /// The peer passing the news on.
        sender_id: PeerId,
        /// The peer told.
        target_id: PeerId,
        /// The document concerned.
        document_id: DocumentId,
        /// The new heads, by storage id.
        new_heads: BTreeMap<String, RemoteHeads>,
    },
}

impl Message {
    /// An `error` message, the last thing sent before closing a connection for a protocol
    /// violation; `message` is shown to the client's developers, so make it explain the problem.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }

    /// The value of the `type` field, for logs and metrics.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Peer { .. } => "peer",
            Self::Request { .. } => "request",
            Self::Sync { .. } => "sync",
            Self::DocUnavailable { .. } => "doc-unavailable",
            Self::Ephemeral { .. } => "ephemeral",
            Self::Leave { .. } => "leave",
            Self::Error { .. } => "error",
            Self::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Self::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }

    /// The peer the message claims to come from, so that the server can check it against the peer
    /// bound to the socket; `error` carries none.
    pub fn sender_id(&self) -> Option<&PeerId> {
        match self {
            Self::Join { sender_id, .. }
            | Self::Peer { sender_id, .. }
            | Self::Request { sender_id, .. }
            | Self::Sync { sender_id, .. }
            | Self::DocUnavailable { sender_id, .. }
            | Self::Ephemeral { sender_id, .. }
            | Self::Leave { sender_id }
            | Self::RemoteSubscriptionChange { sender_id, .. }
            | Self::RemoteHeadsChanged { sender_id, .. } => Some(sender_id),
            Self::Error { .. } => None,
        }
    }
}

/// The server's answer to a client's `join`, as the protocol prescribes it.
///
/// `Ok` holds the `peer` message that completes the handshake. `Err` holds the `error` message to
/// send, before closing, when the client does not offer [`PROTOCOL_VERSION`].
pub fn answer_join(
    server_id: &PeerId,
    server_metadata: &PeerMetadata,
    client_id: &PeerId,
    supported_protocol_versions: &[String],
) -> Result<Message, Message> {
    if supported_protocol_versions
        .iter()
        .any(|version| version == PROTOCOL_VERSION)
    {
        Ok(Message::Peer {
            sender_id: server_id.clone(),
            target_id: client_id.clone(),
            selected_protocol_version: PROTOCOL_VERSION.to_owned(),
            metadata: Some(server_metadata.clone()),
        })
    } else {
        Err(Message::error(format!(
            "unsupported protocol version: this server speaks automerge-repo protocol version \
             {PROTOCOL_VERSION:?}, the join offered {supported_protocol_versions:?}"
        )))
    }
}

/// The key of the server's refusal notice, `{"refused": reason}`: an `ephemeral` payload the server sends under its
/// own peer id when it reverted one of the receiver's changes, so that any automerge-repo client can say why.
pub const REFUSED_KEY: &str = "refused";

/// The text under `key` in a CBOR map, such as an `ephemeral` payload (the reason in a [`REFUSED_KEY`] notice);
/// `None` when the payload is not a CBOR map or holds no text there.
///
/// Lenient on purpose: a client reads what it understands of a payload and ignores the rest; refusing what peers
/// may send is the server's business.
pub fn map_text(payload: &[u8], key: &str) -> Option<String> {
    let ciborium::Value::Map(entries) = ciborium::from_reader(payload).ok()? else {
        return None;
    };
    entries.into_iter().find_map(|entry| match entry {
        (ciborium::Value::Text(k), ciborium::Value::Text(text)) if k == key => Some(text),
        _ => None,
    })
}

/// Decodes one binary WebSocket frame into a [`Message`].
///
/// The error says what is wrong in words fit to send back to the client in an `error` message.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    decode::decode(frame)
}

/// Why a frame is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not well-formed CBOR, or stop in the middle of a value.
    #[error("not valid CBOR: {0}")]
    NotCbor(String),
    /// The frame is well-formed CBOR but its top-level value is not a map.
    #[error("not a CBOR map")]
    NotAMap,
    /// More bytes follow the CBOR map; a frame carries exactly one message.
    #[error("{0} trailing bytes after the CBOR map")]
    TrailingBytes(usize),
    /// Arrays, maps or tags nest deeper than [`MAX_NESTING`].
    #[error("the message nests deeper than {MAX_NESTING} levels")]
    TooDeep,
    /// The fields hold more than [`MAX_VALUES_PER_MESSAGE`] values.
    #[error("the message holds more than {MAX_VALUES_PER_MESSAGE} values")]
    TooManyValues,
    /// A key appears twice, so the message has no single meaning.
    #[error("duplicate key {0}")]
    DuplicateKey(&'static str),
    /// The map has no `type` field.
    #[error("missing field type")]
    MissingType,
    /// The `type` field is not a text string.
    #[error("field type must be a text string, not {0}")]
    TypeNotText(&'static str),
    /// The `type` field names no message of the protocol (shown truncated).
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A field the message type requires is absent, `null` or `undefined`.
    #[error("missing field {field} in {message_type} message")]
    MissingField {
        /// The field's key (a dotted path inside nested maps).
        field: &'static str,
        /// The message's `type`.
        message_type: &'static str,
    },
    /// A field has the wrong CBOR type, or a number that is not a whole non-negative one.
    #[error("field {field} in {message_type} message must be {expected}, not {found}")]
    WrongType {
        /// The field's key (a dotted path inside nested maps).
        field: &'static str,
        /// The message's `type`.
        message_type: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// What it held.
        found: &'static str,
    },
    /// An entry of an array or map field has the wrong CBOR type.
    #[error("every entry of {field} in {message_type} message must be {expected}, not {found}")]
    WrongEntryType {
        /// The field's key (a dotted path inside nested maps).
        field: &'static str,
        /// The message's `type`.
        message_type: &'static str,
        /// What every entry must be.
        expected: &'static str,
        /// What one entry was.
        found: &'static str,
    },
    /// A `data` field is a zero-length byte string, which the JS client also refuses to send.
    #[error("data must not be empty in {0} message")]
    EmptyData(&'static str),
    /// A `documentId` field is not a valid document id.
    #[error("invalid document id in {message_type} message: {source}")]
    InvalidDocumentId {
        /// The message's `type`.
        message_type: &'static str,
        /// What is wrong with the id.
        source: DocumentIdError,
    },
}
