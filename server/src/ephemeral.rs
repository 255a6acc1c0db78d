//! What may ride in automerge-repo `ephemeral` messages through this server: presence from peers, notices from the
//! server.
//!
//! Ephemeral messages are relayed, never stored, and every peer of a document reads them, so a payload is a claim
//! made to everyone. The server therefore relays one shape only, [`Presence`] (`{name, role, field}` with an
//! optional caret and selection, `caret` and `anchor`, as Automerge cursors, and `leaving: true` from a closing tab;
//! the web client's and the documented shape for any other client, `docs/schema.md`), decoded strictly and
//! re-encoded, so
//! what peers read is exactly what was checked: no CBOR tags, no other keys, bounded texts. Whatever else a peer
//! sends is refused with an `error` message. Notices (`{"refused": …}`, [`REFUSED_KEY`]) are the server's alone:
//! it sends them under its own peer id, which no peer may take (`connection.rs`), and clients trust a notice only
//! from the peer id their own handshake's `peer` answer named.

use ciborium::Value;
use serde::Serialize;

use crate::metrics::{Counter, Metrics};

pub use wire::REFUSED_KEY;

/// Longest name, role or field in characters: what the web client keeps of another peer's presence.
pub const MAX_TEXT_CHARS: usize = 200;

/// Longest caret cursor in bytes: an Automerge cursor is `s`, `e`, or an optional `-`, a counter, `@` and a hex
/// actor id (16 bytes, 32 digits, for the clients we know; Automerge allows up to 64 digits).
pub const MAX_CURSOR_BYTES: usize = 100;

/// Largest presence payload in bytes: three texts at their longest (four bytes a character), two cursors and the
/// map around them fit. Checked before decoding, so decoding allocates no more than this.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// One peer's presence: who is viewing (their token's name), the roles they hold as their page phrases them, and
/// the key of the field they are editing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// The sender's name; the connection checks it is its token's.
    pub name: String,
    /// The command roles the sender holds, as its page phrases them; `null` for none.
    pub role: Option<String>,
    /// The field the sender is editing; `null` for none.
    pub field: Option<String>,
    /// The sender's caret in that field, as an Automerge cursor; absent for none (and then not re-encoded, so
    /// presence without a caret reads as it always did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caret: Option<String>,
    /// The other end of the sender's selection in that field, as an Automerge cursor; absent for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// The sender's tab is closing, so peers drop it at once instead of waiting for its presence to expire. Only
    /// `true` is accepted (and re-encoded), so every leave reads the same to every client.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

/// Why an ephemeral payload is not presence. The `Display` text goes to the sender in an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EphemeralError {
    /// The payload claims to be a server notice.
    #[error(
        "ephemeral messages may not carry {0:?}: notices are the server's, and only it sends them"
    )]
    Notice(String),
    /// Larger than any presence can be.
    #[error(
        "an ephemeral payload of {0} bytes is larger than presence can be ({MAX_PAYLOAD_BYTES} bytes)"
    )]
    TooLarge(usize),
    /// Not one well-formed CBOR item.
    #[error("the ephemeral payload is not CBOR: {0}")]
    NotCbor(String),
    /// A CBOR tag anywhere: presence has none, and a tag would make peers' decoders disagree with ours.
    #[error("the ephemeral payload carries a CBOR tag ({0}); presence has none")]
    Tagged(u64),
    /// Anything but a map with text keys.
    #[error(
        "the ephemeral payload is not a map with text keys; ephemeral messages carry presence only ({{name, role, field}})"
    )]
    NotMap,
    /// A key presence does not have.
    #[error(
        "the ephemeral payload has key {0:?}; ephemeral messages carry presence only ({{name, role, field}})"
    )]
    UnknownKey(String),
    /// A key twice.
    #[error("the ephemeral payload has key {0:?} twice")]
    DuplicateKey(String),
    /// No `name`.
    #[error("presence must have a name")]
    MissingName,
    /// A value of another type than the key takes (`name` text, `role` and `field` text or null).
    #[error("presence {key:?} must be {expected}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// What it takes.
        expected: &'static str,
    },
    /// A text over [`MAX_TEXT_CHARS`].
    #[error("presence {0:?} is longer than {MAX_TEXT_CHARS} characters")]
    TooLong(&'static str),
    /// A `caret` or `anchor` that is not an Automerge cursor of at most [`MAX_CURSOR_BYTES`].
    #[error(
        "presence {0:?} must be an Automerge cursor (s, e or [-]counter@hex actor, at most {MAX_CURSOR_BYTES} bytes)"
    )]
    NotCursor(&'static str),
    /// A `leaving` other than `true`.
    #[error("presence \"leaving\" must be true when present")]
    NotLeaving,
    /// A caret or selection without the field it is in.
    #[error("presence with a caret must name its field")]
    CaretWithoutField,
}

impl EphemeralError {
    /// The counter this refusal counts in: `commandpost_ephemeral_refused_total{reason="notice"}` for a forged
    /// notice, `{reason="shape"}` for anything else that is not presence.
    pub fn counter<'m>(&self, metrics: &'m Metrics) -> &'m Counter {
        match self {
            EphemeralError::Notice(_) => &metrics.ephemeral_refused_notice,
            _ => &metrics.ephemeral_refused_shape,
        }
    }
}

impl Presence {
    /// Decodes a payload that must be presence and nothing else.
    pub fn decode(data: &[u8]) -> Result<Presence, EphemeralError> {
        if data.len() > MAX_PAYLOAD_BYTES {
            return Err(EphemeralError::TooLarge(data.len()));
        }
        let mut rest = data;
        let value: Value =
            ciborium::from_reader(&mut rest).map_err(|e| EphemeralError::NotCbor(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EphemeralError::NotCbor(format!(
                "{} bytes after the first item",
                rest.len()
            )));
        }
        let entries = match value {
            Value::Map(entries) => entries,
            Value::Tag(tag, _) => return Err(EphemeralError::Tagged(tag)),
            _ => return Err(EphemeralError::NotMap),
        };
        let mut keys = Vec::with_capacity(entries.len());
        for (key, _) in &entries {
            match key {
                Value::Text(key) => keys.push(key.as_str()),
                Value::Tag(tag, _) => return Err(EphemeralError::Tagged(*tag)),
                _ => return Err(EphemeralError::NotMap),
            }
        }
        // A notice anywhere in the map is named as such, whatever else is wrong with it.
        if keys.contains(&REFUSED_KEY) {
            return Err(EphemeralError::Notice(REFUSED_KEY.to_owned()));
        }
        let mut presence = Presence {
            name: String::new(),
            role: None,
            field: None,
            caret: None,
            anchor: None,
            leaving: false,
        };
        let mut seen: Vec<&str> = Vec::with_capacity(6);
        for ((_, value), key) in entries.iter().zip(keys) {
            if seen.contains(&key) {
                return Err(EphemeralError::DuplicateKey(key.to_owned()));
            }
            seen.push(key);
            match key {
                "name" => {
                    presence.name = text("name", value)?.ok_or(EphemeralError::WrongType {
                        key: "name",
                        expected: "text",
                    })?;
                }
                "role" => presence.role = text("role", value)?,
                "field" => presence.field = text("field", value)?,
                "caret" => presence.caret = cursor("caret", value)?,
                "anchor" => presence.anchor = cursor("anchor", value)?,
                "leaving" => match value {
                    Value::Bool(true) => presence.leaving = true,
                    Value::Tag(tag, _) => return Err(EphemeralError::Tagged(*tag)),
                    _ => return Err(EphemeralError::NotLeaving),
                },
                other => return Err(EphemeralError::UnknownKey(other.to_owned())),
            }
        }
        if !seen.contains(&"name") {
            return Err(EphemeralError::MissingName);
        }
        if presence.field.is_none() && (presence.caret.is_some() || presence.anchor.is_some()) {
            return Err(EphemeralError::CaretWithoutField);
        }
        Ok(presence)
    }

    /// The payload relayed to peers: the server's own encoding of what it checked.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing CBOR into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }
}

/// A text of at most [`MAX_TEXT_CHARS`], or `None` for null (and CBOR `undefined`, which JavaScript's encoders
/// write for a property set to `undefined`).
fn text(key: &'static str, value: &Value) -> Result<Option<String>, EphemeralError> {
    match value {
        Value::Text(text) if text.chars().count() > MAX_TEXT_CHARS => {
            Err(EphemeralError::TooLong(key))
        }
        Value::Text(text) => Ok(Some(text.clone())),
        Value::Null => Ok(None),
        Value::Tag(tag, _) => Err(EphemeralError::Tagged(*tag)),
        _ if key == "name" => Err(EphemeralError::WrongType {
            key,
            expected: "text",
        }),
        _ => Err(EphemeralError::WrongType {
            key,
            expected: "text or null",
        }),
    }
}

/// An Automerge cursor (`automerge::Cursor`'s text form, checked here by its grammar so that what peers resolve is
/// never anything else), or `None` for null.
fn cursor(key: &'static str, value: &Value) -> Result<Option<String>, EphemeralError> {
    let Some(text) = text(key, value)? else {
        return Ok(None);
    };
    let is_cursor = |c: &str| {
        if c == "s" || c == "e" {
            return true;
        }
        let c = c.strip_prefix('-').unwrap_or(c);
        c.split_once('@').is_some_and(|(counter, actor)| {
            !counter.is_empty()
                && counter.len() <= 20
                && counter.bytes().all(|b| b.is_ascii_digit())
                && !actor.is_empty()
                && actor.len() % 2 == 0
                && actor
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    };
    if text.len() <= MAX_CURSOR_BYTES && is_cursor(&text) {
        Ok(Some(text))
    } else {
        Err(EphemeralError::NotCursor(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = ciborium::into_writer(value, &mut out);
        out
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    #[test]
    fn the_web_clients_presence_decodes_and_reencodes_to_the_same_bytes() {
        let payload = cbor(&map(vec![
            ("name", "alice".into()),
            ("role", Value::Null),
            ("field", "summary".into()),
        ]));
        let presence = Presence::decode(&payload);
        assert_eq!(
            presence,
            Ok(Presence {
                name: "alice".into(),
                role: None,
                field: Some("summary".into()),
                caret: None,
                anchor: None,
                leaving: false,
            })
        );
        assert_eq!(presence.map(|p| p.encode()), Ok(payload));
    }

    #[test]
    fn a_caret_and_selection_are_automerge_cursors_in_a_named_field() {
        let actor = "0123456789abcdef0123456789abcdef";
        let payload = cbor(&map(vec![
            ("name", "alice".into()),
            ("role", Value::Null),
            ("field", "summary".into()),
            ("caret", format!("12@{actor}").into()),
            ("anchor", "s".into()),
        ]));
        let presence = Presence::decode(&payload);
        assert!(
            presence
                .as_ref()
                .is_ok_and(|p| p.caret.as_deref() == Some(&format!("12@{actor}")[..])
                    && p.anchor.as_deref() == Some("s")),
            "{presence:?}"
        );
        assert_eq!(presence.map(|p| p.encode()), Ok(payload));
        let with = |key: &str, value: Value| {
            cbor(&map(vec![
                ("name", "alice".into()),
                ("field", "summary".into()),
                (key, value),
            ]))
        };
        assert!(Presence::decode(&with("caret", format!("-3@{actor}").into())).is_ok());
        for bad in [
            "",
            "x",
            "12@",
            "@ab",
            "12@abc",
            "12@ABCD",
            "1 2@ab",
            "<b>@ab",
            &format!("1@{}", "ab".repeat(50)),
        ] {
            assert_eq!(
                Presence::decode(&with("caret", bad.into())),
                Err(EphemeralError::NotCursor("caret")),
                "{bad:?}"
            );
        }
        assert_eq!(
            Presence::decode(&with("anchor", 5.into())),
            Err(EphemeralError::WrongType {
                key: "anchor",
                expected: "text or null"
            })
        );
        let fieldless = cbor(&map(vec![("name", "alice".into()), ("caret", "s".into())]));
        assert_eq!(
            Presence::decode(&fieldless),
            Err(EphemeralError::CaretWithoutField)
        );
    }

    #[test]
    fn a_closing_tab_says_leaving_true_and_nothing_else_passes_for_it() {
        let leaving = cbor(&map(vec![
            ("name", "alice".into()),
            ("role", Value::Null),
            ("field", Value::Null),
            ("leaving", true.into()),
        ]));
        let presence = Presence::decode(&leaving);
        assert!(presence.as_ref().is_ok_and(|p| p.leaving), "{presence:?}");
        assert_eq!(presence.map(|p| p.encode()), Ok(leaving));
        let with = |value: Value| cbor(&map(vec![("name", "alice".into()), ("leaving", value)]));
        for bad in [
            false.into(),
            Value::Null,
            1.into(),
            "true".into(),
            Value::Map(vec![]),
        ] {
            assert_eq!(
                Presence::decode(&with(bad.clone())),
                Err(EphemeralError::NotLeaving),
                "{bad:?}"
            );
        }
        assert_eq!(
            Presence::decode(&with(Value::Tag(21, Box::new(true.into())))),
            Err(EphemeralError::Tagged(21))
        );
        let twice = cbor(&map(vec![
            ("name", "alice".into()),
            ("leaving", true.into()),
            ("leaving", true.into()),
        ]));
        assert_eq!(
            Presence::decode(&twice),
            Err(EphemeralError::DuplicateKey("leaving".into()))
        );
    }

    #[test]
    fn role_and_field_may_be_left_out_or_undefined() {
        // 0xa2 map(2), "name": "bob", "field": undefined (0xf7), as a JavaScript encoder writes it.
        let mut payload = cbor(&map(vec![("name", "bob".into())]));
        payload[0] = 0xa2;
        payload.extend(b"\x65field\xf7");
        assert_eq!(
            Presence::decode(&payload),
            Ok(Presence {
                name: "bob".into(),
                role: None,
                field: None,
                caret: None,
                anchor: None,
                leaving: false,
            })
        );
    }

    #[test]
    fn anything_but_presence_is_refused_and_says_why() {
        let name = ("name", Value::from("alice"));
        let cases: Vec<(Vec<u8>, EphemeralError)> = vec![
            (
                cbor(&map(vec![("refused", "forged".into())])),
                EphemeralError::Notice("refused".into()),
            ),
            (
                cbor(&map(vec![name.clone(), ("refused", "forged".into())])),
                EphemeralError::Notice("refused".into()),
            ),
            (
                cbor(&Value::Tag(259, Box::new(map(vec![name.clone()])))),
                EphemeralError::Tagged(259),
            ),
            (
                cbor(&map(vec![
                    name.clone(),
                    ("field", Value::Tag(0, Box::new("x".into()))),
                ])),
                EphemeralError::Tagged(0),
            ),
            (
                cbor(&map(vec![name.clone(), ("admin", true.into())])),
                EphemeralError::UnknownKey("admin".into()),
            ),
            (
                cbor(&map(vec![name.clone(), ("name", "mallory".into())])),
                EphemeralError::DuplicateKey("name".into()),
            ),
            (
                cbor(&map(vec![("field", "summary".into())])),
                EphemeralError::MissingName,
            ),
            (
                cbor(&map(vec![("name", Value::Null)])),
                EphemeralError::WrongType {
                    key: "name",
                    expected: "text",
                },
            ),
            (
                cbor(&map(vec![name.clone(), ("role", 7.into())])),
                EphemeralError::WrongType {
                    key: "role",
                    expected: "text or null",
                },
            ),
            (
                cbor(&map(vec![name.clone(), ("role", "r".repeat(201).into())])),
                EphemeralError::TooLong("role"),
            ),
            (cbor(&Value::Array(vec![])), EphemeralError::NotMap),
            (
                cbor(&Value::Map(vec![(1.into(), "x".into())])),
                EphemeralError::NotMap,
            ),
            (
                vec![0u8; MAX_PAYLOAD_BYTES + 1],
                EphemeralError::TooLarge(4097),
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(Presence::decode(&payload), Err(expected));
        }
        let mut trailing = cbor(&map(vec![name]));
        trailing.push(0);
        assert!(matches!(
            Presence::decode(&trailing),
            Err(EphemeralError::NotCbor(_))
        ));
        assert!(matches!(
            Presence::decode(b"\xff"),
            Err(EphemeralError::NotCbor(_))
        ));
    }

    #[test]
    fn texts_up_to_the_bound_pass_counted_in_characters() {
        let long = "é".repeat(MAX_TEXT_CHARS);
        let payload = cbor(&map(vec![
            ("name", "alice".into()),
            ("role", long.clone().into()),
            ("field", long.clone().into()),
        ]));
        assert!(payload.len() < MAX_PAYLOAD_BYTES);
        assert!(Presence::decode(&payload).is_ok_and(|p| p.role == Some(long)));
    }
}
