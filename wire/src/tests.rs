//! Tests of the wire codec: frames captured from the real JS client, round trips, every rejection,
//! and a seeded mutation run that checks the decoder never panics.

use std::collections::BTreeMap;

use ciborium::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Frames captured from `@automerge/automerge-repo` 2.5.6 with
/// `@automerge/automerge-repo-network-websocket` 2.5.6 (cbor-x 1.6.9), logged raw by a loopback
/// `ws` server. The client's peer id is `client-1`; the server's is `server`.
mod js {
    /// `join` from a repo without storage: `storageId` is CBOR `undefined`.
    pub const JOIN_NO_STORAGE: &str = "b900046474797065646a6f696e6873656e646572496468636c69656e742d316c706565724d65746164617461b900026973746f726167654964f76b6973457068656d6572616cf57819737570706f7274656450726f746f636f6c56657273696f6e73816131";
    /// `join` from a repo with storage.
    pub const JOIN_WITH_STORAGE: &str = "b900046474797065646a6f696e6873656e646572496468636c69656e742d316c706565724d65746164617461b900026973746f726167654964782463366564333861312d333034392d343862612d623961372d6137623138383461343732306b6973457068656d6572616cf47819737570706f7274656450726f746f636f6c56657273696f6e73816131";
    /// `sync` announcing a document the client just created.
    pub const SYNC: &str = "b9000564747970656473796e63687461726765744964667365727665726464617461582f4201f1d99edea9a76cbc5065e485ad0b7143a4f511a59ce2f97d316d5fdfa770800400010005010a07aa54000202846a646f63756d656e744964781c34516f4c6f41697179757075456e67657a674d6670556f78467034446873656e646572496468636c69656e742d31";
    /// `ephemeral` from `handle.broadcast({hello: "world", n: 1.5})`.
    pub const EPHEMERAL: &str = "b90007647479706569657068656d6572616c687461726765744964667365727665726a646f63756d656e744964781c34516f4c6f41697179757075456e67657a674d6670556f78467034446464617461581ab900026568656c6c6f65776f726c64616efb3ff800000000000065636f756e74016973657373696f6e49646b3732367a6a7934623469686873656e646572496468636c69656e742d31";
    /// `request` from `repo.find()` of a document the client does not have.
    pub const REQUEST: &str = "b9000564747970656772657175657374687461726765744964667365727665726a646f63756d656e744964781c344e4d4e6e6b4d684c386a5872644a396a616d53353850415664587564646174614a420000010000000202846873656e646572496468636c69656e742d31";
    /// `remote-subscription-change` from `repo.subscribeToRemotes()`: `remove` is `undefined`.
    pub const SUBSCRIPTION_CHANGE: &str = "b900056474797065781a72656d6f74652d737562736372697074696f6e2d6368616e6765687461726765744964667365727665726361646481782433373630646633372d613463362d346636362d396563642d3733323033396139353462356672656d6f7665f76873656e646572496468636c69656e742d31";
    /// `remote-heads-changed` encoded with the package's own `cbor.encode`; the timestamp is a
    /// float64 because cbor-x encodes numbers of 2^32 and more that way.
    pub const HEADS_CHANGED: &str = "b9000564747970657472656d6f74652d68656164732d6368616e6765646873656e646572496468636c69656e742d31687461726765744964667365727665726a646f63756d656e744964781c344e4d4e6e6b4d684c386a5872644a396a616d533538504156645875686e65774865616473b90001782433373630646633372d613463362d346636362d396563642d373332303339613935346235b9000265686561647381783132725a51514b3471566d6435526b687a713157613841683271756b3152536d574650316331746b4a69335556514c70584c6974696d657374616d70fb42799c82cc000000";
}

/// The bytes [`answer_join`] produces for the fixtures' peers, checked by hand against the JS
/// client: fed to a `WebSocketClientAdapter` it emits `peer-candidate` for `server` with
/// `{storageId: "server-storage", isEphemeral: false}`.
const PEER_REPLY: &str = "a5647479706564706565726873656e64657249646673657276657268746172676574496468636c69656e742d317773656c656374656450726f746f636f6c56657273696f6e61316c706565724d65746164617461a26973746f7261676549646e7365727665722d73746f726167656b6973457068656d6572616cf4";

fn unhex(hex: &str) -> Vec<u8> {
    hex::decode(hex).expect("test hex is valid")
}

fn id(s: &str) -> DocumentId {
    s.parse().expect("test document id is valid")
}

fn peer(s: &str) -> PeerId {
    PeerId::from(s)
}

fn decoded(hex: &str) -> Message {
    decode(&unhex(hex)).expect("fixture decodes")
}

/// Encodes an arbitrary CBOR value, for frames the encoder under test would never produce.
fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(entries.iter().map(|(k, v)| (text(k), v.clone())).collect())
}

/// The fields of a valid `sync` message, to be spoiled one at a time.
fn sync_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("type", text("sync")),
        ("senderId", text("client-1")),
        ("targetId", text("server")),
        ("documentId", text("4NMNnkMhL8jXrdJ9jamS58PAVdXu")),
        ("data", Value::Bytes(vec![0x42, 0, 0, 0])),
    ]
}

/// The fields of a valid `ephemeral` message.
fn ephemeral_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("type", text("ephemeral")),
        ("senderId", text("client-1")),
        ("targetId", text("server")),
        ("documentId", text("4NMNnkMhL8jXrdJ9jamS58PAVdXu")),
        ("sessionId", text("726zjy4b4ih")),
        ("count", Value::Integer(1.into())),
        ("data", Value::Bytes(vec![0xa0])),
    ]
}

fn with(mut fields: Vec<(&'static str, Value)>, key: &'static str, value: Value) -> Vec<u8> {
    match fields.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => fields.push((key, value)),
    }
    cbor(&map(&fields))
}

fn without(fields: Vec<(&'static str, Value)>, key: &str) -> Vec<u8> {
    let fields: Vec<_> = fields.into_iter().filter(|(k, _)| *k != key).collect();
    cbor(&map(&fields))
}

fn every_variant() -> Vec<Message> {
    let doc = id("4NMNnkMhL8jXrdJ9jamS58PAVdXu");
    vec![
        Message::Join {
            sender_id: peer("client-1"),
            supported_protocol_versions: vec!["1".to_owned(), "2".to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: Some("c6ed38a1-3049-48ba-b9a7-a7b1884a4720".to_owned()),
                is_ephemeral: false,
            }),
        },
        Message::Join {
            sender_id: peer("client-2"),
            supported_protocol_versions: Vec::new(),
            metadata: None,
        },
        Message::Peer {
            sender_id: peer("server"),
            target_id: peer("client-1"),
            selected_protocol_version: PROTOCOL_VERSION.to_owned(),
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        },
        Message::Peer {
            sender_id: peer("server"),
            target_id: peer("client-1"),
            selected_protocol_version: PROTOCOL_VERSION.to_owned(),
            metadata: None,
        },
        Message::Request {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            document_id: doc,
            data: vec![0x42, 0, 0, 1, 0, 0, 0, 2, 2, 0x84],
        },
        Message::Sync {
            sender_id: peer("server"),
            target_id: peer("client-1"),
            document_id: DocumentId::random(),
            data: (0..=255).collect(),
        },
        Message::DocUnavailable {
            sender_id: peer("server"),
            target_id: peer("client-1"),
            document_id: doc,
        },
        Message::Ephemeral {
            sender_id: peer("client-1"),
            target_id: peer("client-2"),
            document_id: doc,
            session_id: "726zjy4b4ih".to_owned(),
            count: u64::MAX,
            data: vec![0xa0],
        },
        Message::Leave {
            sender_id: peer("client-1"),
        },
        Message::error("unsupported protocol version"),
        Message::RemoteSubscriptionChange {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            add: vec!["storage-a".to_owned(), "storage-b".to_owned()],
            remove: Vec::new(),
        },
        Message::RemoteHeadsChanged {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            document_id: doc,
            new_heads: BTreeMap::from([
                (
                    "storage-a".to_owned(),
                    RemoteHeads {
                        heads: vec!["head-1".to_owned(), "head-2".to_owned()],
                        timestamp: 1_760_000_000_000,
                    },
                ),
                (
                    "storage-b".to_owned(),
                    RemoteHeads {
                        heads: Vec::new(),
                        timestamp: 0,
                    },
                ),
            ]),
        },
    ]
}

#[test]
fn wire_document_id_matches_the_js_bs58check_package() {
    // Pairs computed with bs58check 3.0.1, the version @automerge/automerge-repo 2.5.6 uses.
    let vectors: [([u8; 16], &str); 4] = [
        ([0; 16], "11111111111111114Ki9Gx"),
        ([0xff; 16], "4ZrjxJnU1LA5xSyrWMNuXTozYEvA"),
        (
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            "1Bhh3pU9gLXZiNDL6PEa1Gs9fh",
        ),
        (
            [
                0xf1, 0xc2, 0x9c, 0x84, 0x74, 0xc8, 0x4a, 0xde, 0xb8, 0x00, 0xbe, 0x47, 0x62, 0x7d,
                0x33, 0xbf,
            ],
            "4NMNnkMhL8jXrdJ9jamS58PAVdXu",
        ),
    ];
    for (bytes, string) in vectors {
        let document_id = DocumentId::from_bytes(bytes);
        assert_eq!(document_id.to_string(), string);
        assert_eq!(id(string), document_id);
        assert_eq!(id(string).as_bytes(), &bytes);
    }
}

#[test]
fn wire_document_id_rejects_what_is_not_an_id() {
    let cases = [
        ("", DocumentIdError::Empty),
        (
            "4ZrjxJnU1LA5xSyrWMNuXTozYEvAx",
            DocumentIdError::TooLong(29),
        ),
        ("0NMNnkMhL8jXrdJ9jamS58PAVdXu", DocumentIdError::NotBase58),
        ("4NMNé", DocumentIdError::NotBase58),
        ("4NMNnkMhL8jXrdJ9jamS58PAVdXv", DocumentIdError::BadChecksum),
        ("4NM", DocumentIdError::BadChecksum),
        // bs58check of 15 and 17 bytes: valid checksums, wrong lengths.
        (
            "13RdG935ESipHd59rhqRsXc4J",
            DocumentIdError::WrongLength(15),
        ),
        (
            "1pEbmSWqJdBuPadRGm8tDbhpVsi",
            DocumentIdError::WrongLength(17),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(input.parse::<DocumentId>(), Err(expected), "{input:?}");
    }
}

#[test]
fn wire_random_document_ids_are_uuid_v4_and_round_trip() {
    let a = DocumentId::random();
    let b = DocumentId::random();
    assert_ne!(a, b);
    for document_id in [a, b] {
        assert_eq!(document_id.as_bytes()[6] >> 4, 4, "UUID version 4");
        assert_eq!(document_id.as_bytes()[8] >> 6, 0b10, "RFC 4122 variant");
        assert!(document_id.to_string().len() <= MAX_DOCUMENT_ID_CHARS);
        assert_eq!(id(&document_id.to_string()), document_id);
    }
}

#[test]
fn wire_document_urls() {
    let document_id = id("4NMNnkMhL8jXrdJ9jamS58PAVdXu");
    assert_eq!(document_id.url(), "automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu");
    assert_eq!(DocumentId::parse_url(&document_id.url()), Ok(document_id));
    assert_eq!(
        DocumentId::parse_url("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu#2rZQQK4q|3xYz"),
        Ok(document_id)
    );
    assert_eq!(
        DocumentId::parse_url("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu#"),
        Ok(document_id)
    );
    assert_eq!(
        DocumentId::parse_url("4NMNnkMhL8jXrdJ9jamS58PAVdXu"),
        Err(DocumentIdError::NotAnAutomergeUrl)
    );
    assert_eq!(
        DocumentId::parse_url("automerge:"),
        Err(DocumentIdError::Empty)
    );
    assert_eq!(
        DocumentId::parse_url("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXv#x"),
        Err(DocumentIdError::BadChecksum)
    );
}

#[test]
fn wire_document_id_serializes_as_its_string() {
    let document_id = id("4NMNnkMhL8jXrdJ9jamS58PAVdXu");
    let json = serde_json::to_string(&document_id).expect("serializes");
    assert_eq!(json, "\"4NMNnkMhL8jXrdJ9jamS58PAVdXu\"");
    assert_eq!(
        serde_json::from_str::<DocumentId>(&json).expect("deserializes"),
        document_id
    );
    assert!(serde_json::from_str::<DocumentId>("\"4NMNnkMhL8jXrdJ9jamS58PAVdXv\"").is_err());
}

#[test]
fn wire_decodes_real_js_join_frames() {
    assert_eq!(
        decoded(js::JOIN_NO_STORAGE),
        Message::Join {
            sender_id: peer("client-1"),
            supported_protocol_versions: vec!["1".to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        }
    );
    assert_eq!(
        decoded(js::JOIN_WITH_STORAGE),
        Message::Join {
            sender_id: peer("client-1"),
            supported_protocol_versions: vec!["1".to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: Some("c6ed38a1-3049-48ba-b9a7-a7b1884a4720".to_owned()),
                is_ephemeral: false,
            }),
        }
    );
}

#[test]
fn wire_decodes_real_js_request_sync_and_ephemeral_frames() {
    assert_eq!(
        decoded(js::REQUEST),
        Message::Request {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            document_id: id("4NMNnkMhL8jXrdJ9jamS58PAVdXu"),
            data: unhex("42000001000000020284"),
        }
    );
    assert_eq!(
        decoded(js::SYNC),
        Message::Sync {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            document_id: id("4QoLoAiqyupuEngezgMfpUoxFp4D"),
            data: unhex(
                "4201f1d99edea9a76cbc5065e485ad0b7143a4f511a59ce2f97d316d5fdfa770800400010005010a07aa5400020284"
            ),
        }
    );
    assert_eq!(
        decoded(js::EPHEMERAL),
        Message::Ephemeral {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            document_id: id("4QoLoAiqyupuEngezgMfpUoxFp4D"),
            session_id: "726zjy4b4ih".to_owned(),
            count: 1,
            data: unhex("b900026568656c6c6f65776f726c64616efb3ff8000000000000"),
        }
    );
}

#[test]
fn wire_decodes_heads_gossip_so_it_can_be_ignored() {
    assert_eq!(
        decoded(js::SUBSCRIPTION_CHANGE),
        Message::RemoteSubscriptionChange {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            add: vec!["3760df37-a4c6-4f66-9ecd-732039a954b5".to_owned()],
            remove: Vec::new(),
        }
    );
    assert_eq!(
        decoded(js::HEADS_CHANGED),
        Message::RemoteHeadsChanged {
            sender_id: peer("client-1"),
            target_id: peer("server"),
            document_id: id("4NMNnkMhL8jXrdJ9jamS58PAVdXu"),
            new_heads: BTreeMap::from([(
                "3760df37-a4c6-4f66-9ecd-732039a954b5".to_owned(),
                RemoteHeads {
                    heads: vec!["2rZQQK4qVmd5Rkhzq1Wa8Ah2quk1RSmWFP1c1tkJi3UVQLpXL".to_owned()],
                    timestamp: 1_760_000_000_000,
                },
            )]),
        }
    );
}

#[test]
fn wire_every_variant_round_trips() {
    for message in every_variant() {
        assert_eq!(
            decode(&message.encode()),
            Ok(message.clone()),
            "{message:?}"
        );
    }
}

#[test]
fn wire_peer_reply_is_what_the_js_client_accepted() {
    let reply = answer_join(
        &peer("server"),
        &PeerMetadata {
            storage_id: Some("server-storage".to_owned()),
            is_ephemeral: false,
        },
        &peer("client-1"),
        &["1".to_owned()],
    )
    .expect("version 1 is offered");
    assert_eq!(hex::encode(reply.encode()), PEER_REPLY);
}

#[test]
fn wire_answer_join_needs_version_1() {
    let metadata = PeerMetadata::default();
    let reply = answer_join(
        &peer("server"),
        &metadata,
        &peer("client-1"),
        &["2".to_owned(), "1".to_owned()],
    );
    assert_eq!(
        reply,
        Ok(Message::Peer {
            sender_id: peer("server"),
            target_id: peer("client-1"),
            selected_protocol_version: "1".to_owned(),
            metadata: Some(metadata.clone()),
        })
    );
    let Err(Message::Error { message }) = answer_join(
        &peer("server"),
        &metadata,
        &peer("client-1"),
        &["2".to_owned()],
    ) else {
        panic!("a join without version 1 must be refused with an error message");
    };
    assert!(
        message.contains("unsupported protocol version"),
        "{message}"
    );
}

#[test]
fn wire_sender_id_and_message_type() {
    for message in every_variant() {
        match &message {
            Message::Error { .. } => assert_eq!(message.sender_id(), None),
            _ => assert!(message.sender_id().is_some()),
        }
        let Ok(Value::Map(entries)) = ciborium::from_reader::<Value, _>(&message.encode()[..])
        else {
            panic!("encodes a map");
        };
        assert_eq!(entries[0], (text("type"), text(message.message_type())));
    }
}

#[test]
fn wire_accepts_documented_metadata_key_and_emits_peer_metadata() {
    let frame = cbor(&map(&[
        ("type", text("join")),
        ("senderId", text("client-1")),
        ("supportedProtocolVersions", Value::Array(vec![text("1")])),
        ("metadata", map(&[("storageId", text("s1"))])),
    ]));
    let message = decode(&frame).expect("decodes");
    assert_eq!(
        message,
        Message::Join {
            sender_id: peer("client-1"),
            supported_protocol_versions: vec!["1".to_owned()],
            // A missing isEphemeral reads as false, as the JS Repo reads it.
            metadata: Some(PeerMetadata {
                storage_id: Some("s1".to_owned()),
                is_ephemeral: false,
            }),
        }
    );
    let Ok(Value::Map(entries)) = ciborium::from_reader::<Value, _>(&message.encode()[..]) else {
        panic!("encodes a map");
    };
    let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
    assert!(keys.contains(&text("peerMetadata")));
    assert!(!keys.contains(&text("metadata")));

    // When both keys are present, peerMetadata (what the JS client reads) wins.
    let both = cbor(&map(&[
        ("type", text("peer")),
        ("senderId", text("server")),
        ("targetId", text("client-1")),
        ("selectedProtocolVersion", text("1")),
        ("metadata", map(&[("isEphemeral", Value::Bool(false))])),
        ("peerMetadata", map(&[("isEphemeral", Value::Bool(true))])),
    ]));
    let Ok(Message::Peer {
        metadata: Some(metadata),
        ..
    }) = decode(&both)
    else {
        panic!("decodes a peer message with metadata");
    };
    assert!(metadata.is_ephemeral);
}

#[test]
fn wire_accepts_integers_sent_as_floats() {
    let frame = with(ephemeral_fields(), "count", Value::Float(8_589_934_592.0));
    let Ok(Message::Ephemeral { count, .. }) = decode(&frame) else {
        panic!("a float64 count decodes");
    };
    assert_eq!(count, 1 << 33);
    let frame = with(ephemeral_fields(), "count", Value::Float(3.0));
    assert!(matches!(
        decode(&frame),
        Ok(Message::Ephemeral { count: 3, .. })
    ));

    for bad in [1.5, -1.0, f64::NAN, f64::INFINITY, 1.0e20] {
        assert_eq!(
            decode(&with(ephemeral_fields(), "count", Value::Float(bad))),
            Err(WireError::WrongType {
                field: "count",
                message_type: "ephemeral",
                expected: "a non-negative integer",
                found: "a float that is not a whole non-negative number",
            }),
            "{bad}"
        );
    }
    assert_eq!(
        decode(&with(
            ephemeral_fields(),
            "count",
            Value::Integer((-1).into())
        )),
        Err(WireError::WrongType {
            field: "count",
            message_type: "ephemeral",
            expected: "a non-negative integer",
            found: "a negative integer",
        })
    );
}

#[test]
fn wire_encodes_large_numbers_as_js_numbers() {
    // cbor-x decodes any 64-bit CBOR integer as a BigInt, so counts and timestamps from 2^32 up to
    // Number.MAX_SAFE_INTEGER go out as float64, as cbor-x itself encodes them.
    let cases: [(u64, &str); 5] = [
        (1, "01"),
        (u64::from(u32::MAX), "1affffffff"),
        (1 << 32, "fb41f0000000000000"),
        ((1 << 53) - 1, "fb433fffffffffffff"),
        (1 << 53, "1b0020000000000000"),
    ];
    for (count, expected) in cases {
        let message = Message::Ephemeral {
            sender_id: peer("c"),
            target_id: peer("s"),
            document_id: id("4NMNnkMhL8jXrdJ9jamS58PAVdXu"),
            session_id: "x".to_owned(),
            count,
            data: vec![1],
        };
        let encoded = hex::encode(message.encode());
        assert!(
            encoded.contains(&format!("65636f756e74{expected}")),
            "{count}: {encoded}"
        );
        assert_eq!(decode(&message.encode()), Ok(message));
    }
    let message = Message::RemoteHeadsChanged {
        sender_id: peer("c"),
        target_id: peer("s"),
        document_id: id("4NMNnkMhL8jXrdJ9jamS58PAVdXu"),
        new_heads: BTreeMap::from([(
            "storage-a".to_owned(),
            RemoteHeads {
                heads: Vec::new(),
                timestamp: 1_760_000_000_000,
            },
        )]),
    };
    // The same bytes the JS package's encoder produced for this timestamp (see HEADS_CHANGED).
    assert!(hex::encode(message.encode()).ends_with("74696d657374616d70fb42799c82cc000000"));
}

#[test]
fn wire_skips_unknown_keys() {
    let mut fields = sync_fields();
    fields.push((
        "futureField",
        map(&[("nested", Value::Array(vec![text("x"); 10_000]))]),
    ));
    fields.push(("timestamp", Value::Float(1.5)));
    let mut value = map(&fields);
    if let Value::Map(entries) = &mut value {
        entries.push((Value::Integer(7.into()), Value::Null));
        entries.push((Value::Array(vec![text("type")]), text("join")));
    }
    assert!(matches!(decode(&cbor(&value)), Ok(Message::Sync { .. })));
    // Fields that belong to other message types are ignored too, whatever they hold.
    assert!(matches!(
        decode(&with(sync_fields(), "count", text("not a number"))),
        Ok(Message::Sync { .. })
    ));
}

#[test]
fn wire_rejects_frames_that_are_not_one_cbor_map() {
    let cases: [(Vec<u8>, WireError); 7] = [
        (
            Vec::new(),
            WireError::NotCbor("the frame is empty".to_owned()),
        ),
        (
            unhex("1c"),
            WireError::NotCbor("malformed item at byte 0".to_owned()),
        ),
        (
            b"{\"type\":\"join\"}".to_vec(),
            WireError::NotCbor("the frame ends in the middle of a value".to_owned()),
        ),
        (cbor(&Value::Array(vec![text("sync")])), WireError::NotAMap),
        (cbor(&text("sync")), WireError::NotAMap),
        (
            cbor(&Value::Tag(55799, Box::new(map(&[])))),
            WireError::NotAMap,
        ),
        (
            [unhex(js::REQUEST), vec![0x00, 0x01]].concat(),
            WireError::TrailingBytes(2),
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(decode(&frame), Err(expected), "{}", hex::encode(&frame));
    }
    let request = unhex(js::REQUEST);
    for cut in 1..request.len() {
        assert_eq!(
            decode(&request[..cut]),
            Err(WireError::NotCbor(
                "the frame ends in the middle of a value".to_owned()
            )),
            "cut at {cut}"
        );
    }
    assert_eq!(WireError::NotAMap.to_string(), "not a CBOR map");
}

#[test]
fn wire_rejects_bad_type_fields() {
    assert_eq!(
        decode(&without(sync_fields(), "type")),
        Err(WireError::MissingType)
    );
    assert_eq!(
        decode(&with(sync_fields(), "type", Value::Integer(1.into()))),
        Err(WireError::TypeNotText("an unsigned integer"))
    );
    let unknown = decode(&with(sync_fields(), "type", text("foo")));
    assert_eq!(unknown, Err(WireError::UnknownType("foo".to_owned())));
    assert_eq!(
        unknown.expect_err("unknown").to_string(),
        "unknown message type \"foo\""
    );
    let long = "x".repeat(10_000);
    let Err(WireError::UnknownType(echoed)) = decode(&with(sync_fields(), "type", text(&long)))
    else {
        panic!("an unknown type is rejected");
    };
    assert_eq!(echoed.chars().count(), 65);
}

#[test]
fn wire_rejects_missing_fields() {
    for field in ["senderId", "targetId", "documentId", "data"] {
        let err = decode(&without(sync_fields(), field)).expect_err("a field is missing");
        assert_eq!(
            err,
            WireError::MissingField {
                field,
                message_type: "sync"
            }
        );
        assert_eq!(
            err.to_string(),
            format!("missing field {field} in sync message")
        );
        // JS sends undefined for unset properties; that is missing too.
        let undefined = with(sync_fields(), field, Value::Null);
        assert_eq!(decode(&undefined), Err(err));
    }
    for field in ["sessionId", "count"] {
        assert_eq!(
            decode(&without(ephemeral_fields(), field)),
            Err(WireError::MissingField {
                field,
                message_type: "ephemeral"
            })
        );
    }
    let join = cbor(&map(&[("type", text("join")), ("senderId", text("c"))]));
    assert_eq!(
        decode(&join),
        Err(WireError::MissingField {
            field: "supportedProtocolVersions",
            message_type: "join"
        })
    );
    assert_eq!(
        decode(&cbor(&map(&[("type", text("error"))]))),
        Err(WireError::MissingField {
            field: "message",
            message_type: "error"
        })
    );
}

#[test]
fn wire_rejects_wrong_typed_fields() {
    let wrong = |field, expected, found| WireError::WrongType {
        field,
        message_type: "sync",
        expected,
        found,
    };
    let cases = [
        (
            "senderId",
            Value::Integer(5.into()),
            wrong("senderId", "a text string", "an unsigned integer"),
        ),
        (
            "targetId",
            Value::Bytes(b"server".to_vec()),
            wrong("targetId", "a text string", "a byte string"),
        ),
        (
            "documentId",
            Value::Bytes(vec![0; 16]),
            wrong("documentId", "a text string", "a byte string"),
        ),
        (
            "data",
            text("QgAAAA=="),
            wrong("data", "a byte string", "a text string"),
        ),
        (
            "data",
            Value::Array(vec![Value::Integer(0x42.into())]),
            wrong("data", "a byte string", "an array"),
        ),
        (
            "data",
            Value::Tag(64, Box::new(Value::Bytes(vec![0x42]))),
            wrong("data", "a byte string", "a tagged value"),
        ),
        (
            "data",
            Value::Bool(true),
            wrong("data", "a byte string", "a boolean"),
        ),
    ];
    for (field, value, expected) in cases {
        assert_eq!(decode(&with(sync_fields(), field, value)), Err(expected));
    }
    assert_eq!(
        wrong("senderId", "a text string", "an unsigned integer").to_string(),
        "field senderId in sync message must be a text string, not an unsigned integer"
    );

    let join = |versions: Value, metadata: Value| {
        cbor(&map(&[
            ("type", text("join")),
            ("senderId", text("c")),
            ("supportedProtocolVersions", versions),
            ("peerMetadata", metadata),
        ]))
    };
    let ok_versions = Value::Array(vec![text("1")]);
    let ok_metadata = map(&[("isEphemeral", Value::Bool(true))]);
    assert_eq!(
        decode(&join(text("1"), ok_metadata.clone())),
        Err(WireError::WrongType {
            field: "supportedProtocolVersions",
            message_type: "join",
            expected: "an array of text strings",
            found: "a text string",
        })
    );
    let err = decode(&join(
        Value::Array(vec![Value::Integer(1.into())]),
        ok_metadata.clone(),
    ))
    .expect_err("a version must be text");
    assert_eq!(
        err.to_string(),
        "every entry of supportedProtocolVersions in join message must be a text string, not an \
         unsigned integer"
    );
    assert_eq!(
        decode(&join(ok_versions.clone(), text("metadata"))),
        Err(WireError::WrongType {
            field: "peerMetadata",
            message_type: "join",
            expected: "a map",
            found: "a text string",
        })
    );
    assert_eq!(
        decode(&join(
            ok_versions.clone(),
            map(&[("storageId", Value::Integer(1.into()))])
        )),
        Err(WireError::WrongType {
            field: "peerMetadata.storageId",
            message_type: "join",
            expected: "a text string",
            found: "an unsigned integer",
        })
    );
    assert_eq!(
        decode(&join(ok_versions, map(&[("isEphemeral", text("yes"))]))),
        Err(WireError::WrongType {
            field: "peerMetadata.isEphemeral",
            message_type: "join",
            expected: "a boolean",
            found: "a text string",
        })
    );
}

#[test]
fn wire_rejects_bad_remote_heads() {
    let heads_changed = |new_heads: Value| {
        cbor(&map(&[
            ("type", text("remote-heads-changed")),
            ("senderId", text("c")),
            ("targetId", text("s")),
            ("documentId", text("4NMNnkMhL8jXrdJ9jamS58PAVdXu")),
            ("newHeads", new_heads),
        ]))
    };
    assert_eq!(
        decode(&heads_changed(map(&[(
            "storage-a",
            map(&[("heads", Value::Array(Vec::new()))])
        )]))),
        Err(WireError::MissingField {
            field: "newHeads.*.timestamp",
            message_type: "remote-heads-changed",
        })
    );
    assert_eq!(
        decode(&heads_changed(map(&[(
            "storage-a",
            Value::Array(Vec::new())
        )]))),
        Err(WireError::WrongEntryType {
            field: "newHeads",
            message_type: "remote-heads-changed",
            expected: "a map",
            found: "an array",
        })
    );
    assert_eq!(
        decode(&heads_changed(Value::Map(vec![(
            Value::Integer(1.into()),
            map(&[])
        )]))),
        Err(WireError::WrongEntryType {
            field: "newHeads",
            message_type: "remote-heads-changed",
            expected: "keyed by a text string",
            found: "an unsigned integer",
        })
    );
}

#[test]
fn wire_rejects_empty_data() {
    for fields in [sync_fields(), ephemeral_fields()] {
        let message_type = match &fields[0].1 {
            Value::Text(t) if t == "sync" => "sync",
            _ => "ephemeral",
        };
        let err = decode(&with(fields, "data", Value::Bytes(Vec::new()))).expect_err("empty data");
        assert_eq!(err, WireError::EmptyData(message_type));
        assert_eq!(
            err.to_string(),
            format!("data must not be empty in {message_type} message")
        );
    }
}

#[test]
fn wire_rejects_bad_document_ids() {
    let cases = [
        ("", DocumentIdError::Empty),
        ("not-an-id", DocumentIdError::NotBase58),
        ("4NMNnkMhL8jXrdJ9jamS58PAVdXv", DocumentIdError::BadChecksum),
        (
            "13RdG935ESipHd59rhqRsXc4J",
            DocumentIdError::WrongLength(15),
        ),
    ];
    for (document_id, source) in cases {
        let err = decode(&with(sync_fields(), "documentId", text(document_id)))
            .expect_err("a bad document id is rejected");
        assert_eq!(
            err,
            WireError::InvalidDocumentId {
                message_type: "sync",
                source
            }
        );
        assert!(
            err.to_string()
                .starts_with("invalid document id in sync message: ")
        );
    }
    // A huge id is refused by its length, before any base58 arithmetic.
    let huge = "z".repeat(1 << 20);
    assert_eq!(
        decode(&with(sync_fields(), "documentId", text(&huge))),
        Err(WireError::InvalidDocumentId {
            message_type: "sync",
            source: DocumentIdError::TooLong(1 << 20),
        })
    );
}

#[test]
fn wire_rejects_duplicate_keys() {
    let mut frame = map(&sync_fields());
    if let Value::Map(entries) = &mut frame {
        entries.push((text("senderId"), text("someone-else")));
    }
    assert_eq!(
        decode(&cbor(&frame)),
        Err(WireError::DuplicateKey("senderId"))
    );
    let join = cbor(&Value::Map(vec![
        (text("type"), text("join")),
        (text("senderId"), text("c")),
        (
            text("supportedProtocolVersions"),
            Value::Array(vec![text("1")]),
        ),
        (
            text("peerMetadata"),
            Value::Map(vec![
                (text("isEphemeral"), Value::Bool(true)),
                (text("isEphemeral"), Value::Bool(false)),
            ]),
        ),
    ]));
    assert_eq!(
        decode(&join),
        Err(WireError::DuplicateKey("peerMetadata.isEphemeral"))
    );
}

#[test]
fn wire_survives_absurd_nesting_and_sizes() {
    // Deep nesting, under a known key and under an unknown one: refused, not a stack overflow.
    for key in ["data", "somethingElse"] {
        // A two-entry map: "type": "sync", then the key and 100,000 one-element arrays.
        let mut frame = unhex("a264747970656473796e63");
        frame.push(0x60 + u8::try_from(key.len()).expect("short key"));
        frame.extend(key.as_bytes());
        frame.extend(std::iter::repeat_n(0x81, 100_000));
        frame.push(0x00);
        assert_eq!(decode(&frame), Err(WireError::TooDeep), "{key}");
    }
    // Indefinite-length arrays nest the same way.
    let mut frame = unhex("a1616b");
    frame.extend(std::iter::repeat_n(0x9f, 100_000));
    assert_eq!(decode(&frame), Err(WireError::TooDeep));

    // Lengths that promise far more than the frame holds: no allocation up front, just an error.
    let truncated = WireError::NotCbor("the frame ends in the middle of a value".to_owned());
    for header in [
        "5bffffffffffffffff",
        "7b7fffffffffffffff",
        "9b00000000ffffffff",
        "bb00000000ffffffff",
    ] {
        let mut frame = unhex("a16464617461");
        frame.extend(unhex(header));
        frame.extend([0; 8]);
        assert_eq!(decode(&frame), Err(truncated.clone()), "{header}");
    }

    // Many small values under a known key would cost far more memory than the frame: capped.
    // The budget counts every kept value: the type, the sender, the array and its entries.
    let versions = |count| Value::Array(vec![text("1"); count]);
    let frame = cbor(&map(&[
        ("type", text("join")),
        ("senderId", text("c")),
        (
            "supportedProtocolVersions",
            versions(MAX_VALUES_PER_MESSAGE - 3),
        ),
    ]));
    assert!(matches!(decode(&frame), Ok(Message::Join { .. })));
    let frame = cbor(&map(&[
        ("type", text("join")),
        ("senderId", text("c")),
        (
            "supportedProtocolVersions",
            versions(MAX_VALUES_PER_MESSAGE - 2),
        ),
    ]));
    assert_eq!(decode(&frame), Err(WireError::TooManyValues));
    // The same under an unknown key is skipped without being kept.
    let frame = with(
        sync_fields(),
        "padding",
        Value::Array(vec![text(""); 4 * MAX_VALUES_PER_MESSAGE]),
    );
    assert!(matches!(decode(&frame), Ok(Message::Sync { .. })));
}

#[test]
fn wire_decoding_mutated_frames_never_panics() {
    // A small, seeded property test: flip, insert and remove bytes of real frames and check that
    // decoding returns rather than panics, and that whatever decodes re-encodes to itself.
    let seeds: Vec<Vec<u8>> = [
        js::JOIN_NO_STORAGE,
        js::JOIN_WITH_STORAGE,
        js::SYNC,
        js::EPHEMERAL,
        js::REQUEST,
        js::SUBSCRIPTION_CHANGE,
        js::HEADS_CHANGED,
    ]
    .into_iter()
    .map(unhex)
    .chain(every_variant().iter().map(Message::encode))
    .collect();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut decoded_ok = 0;
    for _ in 0..20_000 {
        let mut frame = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..frame.len());
            match rng.random_range(0..3) {
                0 => frame[at] ^= 1 << rng.random_range(0..8),
                1 => frame.insert(at, rng.random()),
                _ => {
                    frame.remove(at);
                }
            }
            if frame.is_empty() {
                break;
            }
        }
        if let Ok(message) = decode(&frame) {
            decoded_ok += 1;
            assert_eq!(decode(&message.encode()), Ok(message));
        }
    }
    assert!(decoded_ok > 0, "some mutations keep the frame valid");
}

#[test]
fn map_text_reads_a_text_key_and_nothing_else() {
    let notice = cbor(&map(&[
        ("n", Value::Integer(1.into())),
        (REFUSED_KEY, text("only the commander assigns roles")),
    ]));
    assert_eq!(
        map_text(&notice, REFUSED_KEY).as_deref(),
        Some("only the commander assigns roles")
    );
    assert_eq!(map_text(&notice, "n"), None, "not text");
    assert_eq!(map_text(&notice, "absent"), None);
    assert_eq!(
        map_text(&cbor(&text("refused")), REFUSED_KEY),
        None,
        "not a map"
    );
    assert_eq!(map_text(b"\xff", REFUSED_KEY), None, "not CBOR");
}
