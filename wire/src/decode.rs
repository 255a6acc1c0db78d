//! Decoding frames into messages.
//!
//! Decoding runs in two steps. First ciborium's serde deserializer streams the frame into a small
//! tree of [`Node`]s that keeps only the values of the top-level keys the protocol knows: unknown
//! keys are skipped without allocating, nesting is capped by ciborium's recursion limit and the
//! number of kept values by a budget. Then, once the `type` is known (it may come anywhere in the
//! map), the fields that type needs are checked and converted, so that every error can name the
//! field and the message type.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};

use super::{
    DocumentId, MAX_NESTING, MAX_VALUES_PER_MESSAGE, Message, PeerId, PeerMetadata, RemoteHeads,
    WireError,
};

/// The top-level keys whose values are kept; all others are skipped unread.
const KNOWN_KEYS: [&str; 15] = [
    "type",
    "senderId",
    "targetId",
    "documentId",
    "data",
    "supportedProtocolVersions",
    "selectedProtocolVersion",
    "peerMetadata",
    "metadata",
    "sessionId",
    "count",
    "message",
    "add",
    "remove",
    "newHeads",
];

/// How much of an unknown `type` is echoed back in the error, so that a huge one is not.
const MAX_ECHOED_TYPE_CHARS: usize = 64;

/// 2^64 as a float: integral floats below it convert to `u64` exactly.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// What the JS client may encode as a float64 but must be a whole number.
const NON_NEGATIVE_INTEGER: &str = "a non-negative integer";

/// Decodes one frame; see [`super::decode()`].
pub(super) fn decode(frame: &[u8]) -> Result<Message, WireError> {
    if frame.is_empty() {
        return Err(WireError::NotCbor("the frame is empty".to_owned()));
    }
    let mut rest = frame;
    let parsed: Frame = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_NESTING)
        .map_err(|err| match err {
            ciborium::de::Error::Io(_) => {
                WireError::NotCbor("the frame ends in the middle of a value".to_owned())
            }
            ciborium::de::Error::Syntax(offset) => {
                WireError::NotCbor(format!("malformed item at byte {offset}"))
            }
            ciborium::de::Error::Semantic(_, reason) => WireError::NotCbor(reason),
            ciborium::de::Error::RecursionLimitExceeded => WireError::TooDeep,
        })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    let Frame::Map {
        entries,
        duplicate,
        over_budget,
    } = parsed
    else {
        return Err(WireError::NotAMap);
    };
    if over_budget {
        return Err(WireError::TooManyValues);
    }
    if let Some(key) = duplicate {
        return Err(WireError::DuplicateKey(key));
    }
    into_message(entries)
}

/// Builds the message from the kept top-level fields, once the `type` says which fields count.
fn into_message(entries: Vec<(&'static str, Node)>) -> Result<Message, WireError> {
    let mut fields = Fields {
        entries,
        message_type: "",
    };
    let type_name = match fields.take("type") {
        None => return Err(WireError::MissingType),
        Some(Node::Text(name)) => name,
        Some(other) => return Err(WireError::TypeNotText(other.kind())),
    };
    type Build = fn(&mut Fields) -> Result<Message, WireError>;
    let (message_type, build): (&'static str, Build) = match type_name.as_str() {
        "join" => ("join", |f| {
            Ok(Message::Join {
                sender_id: f.peer_id("senderId")?,
                supported_protocol_versions: f.texts("supportedProtocolVersions")?,
                metadata: f.metadata()?,
            })
        }),
        "peer" => ("peer", |f| {
            Ok(Message::Peer {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                selected_protocol_version: f.text("selectedProtocolVersion")?,
                metadata: f.metadata()?,
            })
        }),
        "request" => ("request", |f| {
            Ok(Message::Request {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                document_id: f.document_id()?,
                data: f.data()?,
            })
        }),
        "sync" => ("sync", |f| {
            Ok(Message::Sync {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                document_id: f.document_id()?,
                data: f.data()?,
            })
        }),
        "doc-unavailable" => ("doc-unavailable", |f| {
            Ok(Message::DocUnavailable {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                document_id: f.document_id()?,
            })
        }),
        "ephemeral" => ("ephemeral", |f| {
            Ok(Message::Ephemeral {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                document_id: f.document_id()?,
                session_id: f.text("sessionId")?,
                count: f.unsigned("count")?,
                data: f.data()?,
            })
        }),
        "leave" => ("leave", |f| {
            Ok(Message::Leave {
                sender_id: f.peer_id("senderId")?,
            })
        }),
        "error" => ("error", |f| {
            Ok(Message::Error {
                message: f.text("message")?,
            })
        }),
        "remote-subscription-change" => ("remote-subscription-change", |f| {
            Ok(Message::RemoteSubscriptionChange {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                add: f.optional_texts("add")?,
                remove: f.optional_texts("remove")?,
            })
        }),
        "remote-heads-changed" => ("remote-heads-changed", |f| {
            Ok(Message::RemoteHeadsChanged {
                sender_id: f.peer_id("senderId")?,
                target_id: f.peer_id("targetId")?,
                document_id: f.document_id()?,
                new_heads: f.new_heads()?,
            })
        }),
        _ => {
            let mut echoed: String = type_name.chars().take(MAX_ECHOED_TYPE_CHARS).collect();
            if echoed.len() < type_name.len() {
                echoed.push('…');
            }
            return Err(WireError::UnknownType(echoed));
        }
    };
    fields.message_type = message_type;
    build(&mut fields)
}

/// A decoded CBOR value, reduced to the distinctions the protocol cares about.
enum Node {
    Text(String),
    Bytes(Vec<u8>),
    Unsigned(u64),
    Float(f64),
    Bool(bool),
    /// CBOR `null` or `undefined`; JS sends `undefined` for properties that are not set.
    Absent,
    Array(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// A value no field may hold (a negative or big integer, a tagged value), already skipped and
    /// kept only as the description used in errors.
    Other(&'static str),
}

impl Node {
    /// How the value is described in errors.
    fn kind(&self) -> &'static str {
        match self {
            Node::Text(_) => "a text string",
            Node::Bytes(_) => "a byte string",
            Node::Unsigned(_) => "an unsigned integer",
            Node::Float(_) => "a float",
            Node::Bool(_) => "a boolean",
            Node::Absent => "null or undefined",
            Node::Array(_) => "an array",
            Node::Map(_) => "a map",
            Node::Other(kind) => kind,
        }
    }
}

/// The top-level value of a frame.
enum Frame {
    /// Anything but a map; already skipped.
    NotAMap,
    /// A map, with the values of its known keys.
    Map {
        entries: Vec<(&'static str, Node)>,
        /// The first known key seen twice, if any.
        duplicate: Option<&'static str>,
        /// Whether the known keys held more than [`MAX_VALUES_PER_MESSAGE`] values.
        over_budget: bool,
    },
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FrameVisitor)
    }
}

/// Reads the top-level value, keeping the known keys of a map and skipping everything else.
struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CBOR map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let budget = Budget::new();
        let mut entries: Vec<(&'static str, Node)> = Vec::new();
        let mut duplicate = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Some(key) if entries.iter().any(|(seen, _)| *seen == key) => {
                    map.next_value::<IgnoredAny>()?;
                    duplicate = duplicate.or(Some(key));
                }
                Some(key) => entries.push((key, map.next_value_seed(NodeSeed(&budget))?)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Frame::Map {
            entries,
            duplicate,
            over_budget: budget.exhausted(),
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_none<E: de::Error>(self) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Frame, E> {
        Ok(Frame::NotAMap)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Frame, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Frame::NotAMap)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, tagged: A) -> Result<Frame, A::Error> {
        IgnoredAny.visit_enum(tagged)?;
        Ok(Frame::NotAMap)
    }
}

/// Reads a top-level key: `Some` with the protocol's spelling if it is a known text key.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(KNOWN_KEYS.into_iter().find(|known| *known == key))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(None)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, tagged: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_enum(tagged)?;
        Ok(None)
    }
}

/// How many more values the decoder may keep for the current frame.
struct Budget {
    left: Cell<usize>,
    refused: Cell<bool>,
}

impl Budget {
    fn new() -> Self {
        Self {
            left: Cell::new(MAX_VALUES_PER_MESSAGE),
            refused: Cell::new(false),
        }
    }

    /// Takes one value from the budget; false (and remembered) once it is spent.
    fn spend(&self) -> bool {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.refused.set(true);
                false
            }
        }
    }

    /// Whether some value was refused for lack of budget.
    fn exhausted(&self) -> bool {
        self.refused.get()
    }
}

/// Reads any value into a [`Node`], charging the budget; once the budget is spent it skips values
/// instead and the frame is rejected.
#[derive(Clone, Copy)]
struct NodeSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        if self.0.spend() {
            deserializer.deserialize_any(self)
        } else {
            IgnoredAny::deserialize(deserializer)?;
            Ok(Node::Other("a value over the budget"))
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any CBOR value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Node, E> {
        Ok(u64::try_from(value).map_or(Node::Other("a negative integer"), Node::Unsigned))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Other("a big integer"))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Node, E> {
        Ok(Node::Unsigned(value))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Other("a big integer"))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Node, E> {
        Ok(Node::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Node, E> {
        Ok(Node::Text(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Node, E> {
        Ok(Node::Text(value))
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes(value.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, value: Vec<u8>) -> Result<Node, E> {
        Ok(Node::Bytes(value))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Absent)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Absent)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        // The declared length is not trusted for preallocation: it costs nothing to lie about.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(self)? {
            entries.push((key, map.next_value_seed(self)?));
        }
        Ok(Node::Map(entries))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, tagged: A) -> Result<Node, A::Error> {
        IgnoredAny.visit_enum(tagged)?;
        Ok(Node::Other("a tagged value"))
    }
}

/// The kept top-level fields of a message whose type is known, taken out one by one.
struct Fields {
    entries: Vec<(&'static str, Node)>,
    message_type: &'static str,
}

impl Fields {
    /// Removes a field; `null` and `undefined` count as absent.
    fn take(&mut self, key: &str) -> Option<Node> {
        let index = self.entries.iter().position(|(name, _)| *name == key)?;
        match self.entries.swap_remove(index).1 {
            Node::Absent => None,
            node => Some(node),
        }
    }

    fn required(&mut self, field: &'static str) -> Result<Node, WireError> {
        self.take(field).ok_or(WireError::MissingField {
            field,
            message_type: self.message_type,
        })
    }

    fn wrong_type(&self, field: &'static str, expected: &'static str, found: &Node) -> WireError {
        WireError::WrongType {
            field,
            message_type: self.message_type,
            expected,
            found: found.kind(),
        }
    }

    fn wrong_entry(&self, field: &'static str, expected: &'static str, found: &Node) -> WireError {
        WireError::WrongEntryType {
            field,
            message_type: self.message_type,
            expected,
            found: found.kind(),
        }
    }

    fn text(&mut self, field: &'static str) -> Result<String, WireError> {
        let node = self.required(field)?;
        self.as_text(field, node)
    }

    fn peer_id(&mut self, field: &'static str) -> Result<PeerId, WireError> {
        self.text(field).map(PeerId)
    }

    fn document_id(&mut self) -> Result<DocumentId, WireError> {
        self.text("documentId")?
            .parse()
            .map_err(|source| WireError::InvalidDocumentId {
                message_type: self.message_type,
                source,
            })
    }

    fn data(&mut self) -> Result<Vec<u8>, WireError> {
        match self.required("data")? {
            Node::Bytes(data) if data.is_empty() => Err(WireError::EmptyData(self.message_type)),
            Node::Bytes(data) => Ok(data),
            other => Err(self.wrong_type("data", "a byte string", &other)),
        }
    }

    fn unsigned(&mut self, field: &'static str) -> Result<u64, WireError> {
        let node = self.required(field)?;
        self.as_unsigned(field, node)
    }

    fn texts(&mut self, field: &'static str) -> Result<Vec<String>, WireError> {
        let node = self.required(field)?;
        self.as_texts(field, node)
    }

    /// A list that the JS client may leave `undefined`; absent reads as empty.
    fn optional_texts(&mut self, field: &'static str) -> Result<Vec<String>, WireError> {
        match self.take(field) {
            None => Ok(Vec::new()),
            Some(node) => self.as_texts(field, node),
        }
    }

    /// The handshake metadata, under `peerMetadata` (what the JS client sends) or `metadata`
    /// (what the protocol description says); `peerMetadata` wins if both are there.
    fn metadata(&mut self) -> Result<Option<PeerMetadata>, WireError> {
        let (field, storage_id_field, is_ephemeral_field, node) =
            match (self.take("peerMetadata"), self.take("metadata")) {
                (Some(node), _) => (
                    "peerMetadata",
                    "peerMetadata.storageId",
                    "peerMetadata.isEphemeral",
                    node,
                ),
                (None, Some(node)) => (
                    "metadata",
                    "metadata.storageId",
                    "metadata.isEphemeral",
                    node,
                ),
                (None, None) => return Ok(None),
            };
        let Node::Map(entries) = node else {
            return Err(self.wrong_type(field, "a map", &node));
        };
        let mut storage_id: Option<Option<String>> = None;
        let mut is_ephemeral: Option<bool> = None;
        for (key, value) in entries {
            let Node::Text(key) = key else { continue };
            match key.as_str() {
                "storageId" if storage_id.is_some() => {
                    return Err(WireError::DuplicateKey(storage_id_field));
                }
                "storageId" => {
                    storage_id = Some(match value {
                        Node::Absent => None,
                        value => Some(self.as_text(storage_id_field, value)?),
                    });
                }
                "isEphemeral" if is_ephemeral.is_some() => {
                    return Err(WireError::DuplicateKey(is_ephemeral_field));
                }
                "isEphemeral" => {
                    is_ephemeral = Some(match value {
                        Node::Bool(flag) => flag,
                        Node::Absent => false,
                        other => {
                            return Err(self.wrong_type(is_ephemeral_field, "a boolean", &other));
                        }
                    });
                }
                _ => {}
            }
        }
        Ok(Some(PeerMetadata {
            storage_id: storage_id.flatten(),
            is_ephemeral: is_ephemeral.unwrap_or(false),
        }))
    }

    fn new_heads(&mut self) -> Result<BTreeMap<String, RemoteHeads>, WireError> {
        const FIELD: &str = "newHeads";
        const HEADS: &str = "newHeads.*.heads";
        const TIMESTAMP: &str = "newHeads.*.timestamp";
        let node = self.required(FIELD)?;
        let Node::Map(entries) = node else {
            return Err(self.wrong_type(FIELD, "a map", &node));
        };
        let mut new_heads = BTreeMap::new();
        for (storage_id, value) in entries {
            let Node::Text(storage_id) = storage_id else {
                return Err(self.wrong_entry(FIELD, "keyed by a text string", &storage_id));
            };
            let Node::Map(value) = value else {
                return Err(self.wrong_entry(FIELD, "a map", &value));
            };
            let mut heads = None;
            let mut timestamp = None;
            for (key, value) in value {
                let Node::Text(key) = key else { continue };
                match key.as_str() {
                    "heads" if heads.is_some() => return Err(WireError::DuplicateKey(HEADS)),
                    "heads" => heads = Some(self.as_texts(HEADS, value)?),
                    "timestamp" if timestamp.is_some() => {
                        return Err(WireError::DuplicateKey(TIMESTAMP));
                    }
                    "timestamp" => timestamp = Some(self.as_unsigned(TIMESTAMP, value)?),
                    _ => {}
                }
            }
            let missing = |field| WireError::MissingField {
                field,
                message_type: self.message_type,
            };
            let remote = RemoteHeads {
                heads: heads.ok_or_else(|| missing(HEADS))?,
                timestamp: timestamp.ok_or_else(|| missing(TIMESTAMP))?,
            };
            if new_heads.insert(storage_id, remote).is_some() {
                return Err(WireError::DuplicateKey("newHeads.*"));
            }
        }
        Ok(new_heads)
    }

    fn as_text(&self, field: &'static str, node: Node) -> Result<String, WireError> {
        match node {
            Node::Text(text) => Ok(text),
            other => Err(self.wrong_type(field, "a text string", &other)),
        }
    }

    /// A whole non-negative number, which the JS client encodes as a float64 when it is 2^32 or
    /// more (timestamps always are).
    fn as_unsigned(&self, field: &'static str, node: Node) -> Result<u64, WireError> {
        match node {
            Node::Unsigned(n) => Ok(n),
            Node::Float(x) if x >= 0.0 && x.fract() == 0.0 && x < TWO_POW_64 => {
                // The guard makes the conversion exact.
                Ok(x as u64)
            }
            Node::Float(_) => Err(WireError::WrongType {
                field,
                message_type: self.message_type,
                expected: NON_NEGATIVE_INTEGER,
                found: "a float that is not a whole non-negative number",
            }),
            other => Err(self.wrong_type(field, NON_NEGATIVE_INTEGER, &other)),
        }
    }

    fn as_texts(&self, field: &'static str, node: Node) -> Result<Vec<String>, WireError> {
        let Node::Array(items) = node else {
            return Err(self.wrong_type(field, "an array of text strings", &node));
        };
        items
            .into_iter()
            .map(|item| match item {
                Node::Text(text) => Ok(text),
                other => Err(self.wrong_entry(field, "a text string", &other)),
            })
            .collect()
    }
}
