//! Encoding messages as CBOR maps.
//!
//! The writer is hand-rolled because the protocol needs only a handful of CBOR item kinds, and
//! writing them directly keeps encoding infallible and its bytes exact: definite lengths in their
//! shortest form, text keys, byte strings without a tag (the JS client encodes `Uint8Array` the
//! same way), and large whole numbers as float64 the way cbor-x encodes a JS `number`. The JS
//! client decodes all of it with its stock `cbor-x` decoder.

use std::collections::BTreeMap;

use super::{DocumentId, Message, PeerId, PeerMetadata, RemoteHeads};

/// CBOR major type 0: an unsigned integer.
const MAJOR_UNSIGNED: u8 = 0;
/// CBOR major type 2: a byte string.
const MAJOR_BYTES: u8 = 2;
/// CBOR major type 3: a UTF-8 text string.
const MAJOR_TEXT: u8 = 3;
/// CBOR major type 4: an array.
const MAJOR_ARRAY: u8 = 4;
/// CBOR major type 5: a map.
const MAJOR_MAP: u8 = 5;
/// The initial byte of a CBOR float64.
const FLOAT64: u8 = 0xfb;
/// JavaScript's `Number.MAX_SAFE_INTEGER`: every whole number up to it is exact as a float64.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// The CBOR encoding of `false`.
const FALSE: u8 = 0xf4;
/// The CBOR encoding of `true`.
const TRUE: u8 = 0xf5;

/// One value of a message map, borrowed from the message being encoded.
enum Item<'a> {
    Text(&'a str),
    DocumentId(&'a DocumentId),
    Bytes(&'a [u8]),
    /// A count or a timestamp, which JS reads as a `number`.
    Number(u64),
    Texts(&'a [String]),
    Metadata(&'a PeerMetadata),
    NewHeads(&'a BTreeMap<String, RemoteHeads>),
}

impl Message {
    /// Encodes the message as the payload of one binary WebSocket frame.
    ///
    /// `type` comes first, then the sender and the target, then the other fields in the order of the protocol's
    /// description; the handshake metadata goes under `peerMetadata`, the key the JS client reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = vec![("type", Item::Text(self.message_type()))];
        entries.extend(
            self.sender_id()
                .map(|id| ("senderId", Item::Text(id.as_str()))),
        );
        entries.extend(
            self.target_id()
                .map(|id| ("targetId", Item::Text(id.as_str()))),
        );
        entries.extend(self.body());
        encode_map(&entries)
    }

    /// The peer the message is for; `join`, `leave` and `error` are for whoever reads them.
    fn target_id(&self) -> Option<&PeerId> {
        match self {
            Self::Peer { target_id, .. }
            | Self::Request { target_id, .. }
            | Self::Sync { target_id, .. }
            | Self::DocUnavailable { target_id, .. }
            | Self::Ephemeral { target_id, .. }
            | Self::RemoteSubscriptionChange { target_id, .. }
            | Self::RemoteHeadsChanged { target_id, .. } => Some(target_id),
            Self::Join { .. } | Self::Leave { .. } | Self::Error { .. } => None,
        }
    }

    /// The fields after the addressing, in the protocol's order.
    fn body(&self) -> Vec<(&'static str, Item<'_>)> {
        match self {
            Self::Join {
                supported_protocol_versions,
                metadata,
                ..
            } => {
                let versions = (
                    "supportedProtocolVersions",
                    Item::Texts(supported_protocol_versions),
                );
                let metadata = metadata
                    .as_ref()
                    .map(|m| ("peerMetadata", Item::Metadata(m)));
                std::iter::once(versions).chain(metadata).collect()
            }
            Self::Peer {
                selected_protocol_version,
                metadata,
                ..
            } => {
                let version = (
                    "selectedProtocolVersion",
                    Item::Text(selected_protocol_version),
                );
                let metadata = metadata
                    .as_ref()
                    .map(|m| ("peerMetadata", Item::Metadata(m)));
                std::iter::once(version).chain(metadata).collect()
            }
            Self::Request {
                document_id, data, ..
            }
            | Self::Sync {
                document_id, data, ..
            } => vec![
                ("documentId", Item::DocumentId(document_id)),
                ("data", Item::Bytes(data)),
            ],
            Self::DocUnavailable { document_id, .. } => {
                vec![("documentId", Item::DocumentId(document_id))]
            }
            Self::Ephemeral {
                document_id,
                session_id,
                count,
                data,
                ..
            } => vec![
                ("documentId", Item::DocumentId(document_id)),
                ("sessionId", Item::Text(session_id)),
                ("count", Item::Number(*count)),
                ("data", Item::Bytes(data)),
            ],
            Self::Leave { .. } => Vec::new(),
            Self::Error { message } => vec![("message", Item::Text(message))],
            Self::RemoteSubscriptionChange { add, remove, .. } => {
                vec![("add", Item::Texts(add)), ("remove", Item::Texts(remove))]
            }
            Self::RemoteHeadsChanged {
                document_id,
                new_heads,
                ..
            } => vec![
                ("documentId", Item::DocumentId(document_id)),
                ("newHeads", Item::NewHeads(new_heads)),
            ],
        }
    }
}

/// Encodes a map with text keys; the header's length is the number of entries by construction.
fn encode_map(entries: &[(&str, Item<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(&mut out, MAJOR_MAP, entries.len());
    for (key, item) in entries {
        write_text(&mut out, key);
        write_item(&mut out, item);
    }
    out
}

fn write_item(out: &mut Vec<u8>, item: &Item<'_>) {
    match item {
        Item::Text(text) => write_text(out, text),
        Item::DocumentId(id) => write_text(out, &id.to_string()),
        Item::Bytes(bytes) => {
            write_head(out, MAJOR_BYTES, bytes.len());
            out.extend_from_slice(bytes);
        }
        Item::Number(n) => write_number(out, *n),
        Item::Texts(texts) => write_texts(out, texts),
        Item::Metadata(metadata) => {
            let entries = usize::from(metadata.storage_id.is_some()) + 1;
            write_head(out, MAJOR_MAP, entries);
            if let Some(storage_id) = &metadata.storage_id {
                write_text(out, "storageId");
                write_text(out, storage_id);
            }
            write_text(out, "isEphemeral");
            out.push(if metadata.is_ephemeral { TRUE } else { FALSE });
        }
        Item::NewHeads(new_heads) => {
            write_head(out, MAJOR_MAP, new_heads.len());
            for (storage_id, remote) in *new_heads {
                write_text(out, storage_id);
                write_head(out, MAJOR_MAP, 2);
                write_text(out, "heads");
                write_texts(out, &remote.heads);
                write_text(out, "timestamp");
                write_number(out, remote.timestamp);
            }
        }
    }
}

fn write_text(out: &mut Vec<u8>, text: &str) {
    write_head(out, MAJOR_TEXT, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn write_texts(out: &mut Vec<u8>, texts: &[String]) {
    write_head(out, MAJOR_ARRAY, texts.len());
    for text in texts {
        write_text(out, text);
    }
}

/// Writes a whole number the way cbor-x writes a JS `number`, so that the JS client reads it as a
/// `number`: cbor-x decodes every 64-bit CBOR integer as a `BigInt`, which does not mix with
/// numbers in arithmetic. Up to 2^32 - 1 the number is a CBOR integer, up to
/// `Number.MAX_SAFE_INTEGER` an exact float64; only beyond that, where no JS `number` is exact, is
/// it a 64-bit integer.
fn write_number(out: &mut Vec<u8>, n: u64) {
    if n > u64::from(u32::MAX) && n <= MAX_SAFE_INTEGER {
        out.push(FLOAT64);
        // Exact: the number is below 2^53.
        out.extend_from_slice(&(n as f64).to_be_bytes());
    } else {
        write_head_u64(out, MAJOR_UNSIGNED, n);
    }
}

fn write_head(out: &mut Vec<u8>, major: u8, len: usize) {
    // A usize always fits in a u64 on the platforms Rust supports.
    write_head_u64(out, major, len as u64);
}

/// Writes a CBOR item head: the major type and its argument in the shortest form.
fn write_head_u64(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    if n < 24 {
        out.push(major | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[major | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(major | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(major | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}
