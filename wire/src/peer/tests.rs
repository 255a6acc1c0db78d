//! Tests of [`Peer`] against a server made of the codec and an Automerge replica, without sockets.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc};

use super::*;
use crate::answer_join;

const DOC: DocumentId = DocumentId([7; 16]);

fn me() -> PeerId {
    PeerId::from("client-1")
}

fn server() -> PeerId {
    PeerId::from("server")
}

/// A peer that sent `join` and got the server's `peer` answer.
fn joined() -> Peer {
    let mut peer = Peer::new(me());
    let join = crate::decode(&peer.join()).expect("join decodes");
    let Message::Join {
        sender_id,
        supported_protocol_versions,
        ..
    } = join
    else {
        panic!("the first frame is join, not {join:?}");
    };
    let answer = answer_join(
        &server(),
        &PeerMetadata::default(),
        &sender_id,
        &supported_protocol_versions,
    )
    .expect("the server accepts the join");
    assert!(matches!(peer.receive(&answer.encode()), Ok(Event::Joined)));
    peer
}

/// A document with one change.
fn replica(summary: &str) -> AutoCommit {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "summary", summary).expect("put");
    doc.commit();
    doc
}

/// The server's side: one replica and its sync state toward the peer. Answers every frame the peer sends;
/// returns the server's frames.
fn serve(doc: &mut AutoCommit, state: &mut sync::State, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for frame in frames {
        let (Message::Request { data, .. } | Message::Sync { data, .. }) =
            crate::decode(&frame).expect("the peer's frame decodes")
        else {
            panic!("the peer sent something other than request or sync");
        };
        let message = sync::Message::decode(&data).expect("a sync message");
        doc.sync()
            .receive_sync_message(state, message)
            .expect("applies");
        while let Some(answer) = doc.sync().generate_sync_message(state) {
            out.push(
                Message::Sync {
                    sender_id: server(),
                    target_id: me(),
                    document_id: DOC,
                    data: answer.encode(),
                }
                .encode(),
            );
        }
    }
    out
}

/// Every frame the peer has for the server about [`DOC`] now.
fn outgoing(peer: &mut Peer, doc: &mut AutoCommit) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| peer.sync(DOC, doc)).collect()
}

#[test]
fn the_handshake_joins_as_an_ephemeral_peer_and_learns_the_servers_id() {
    let mut peer = Peer::new(me());
    assert_eq!(
        crate::decode(&peer.join()).ok(),
        Some(Message::Join {
            sender_id: me(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        })
    );
    assert_eq!(peer.server(), None);
    // Nothing about documents goes out before the server answered, and the sync state does not advance.
    let mut doc = replica("before the handshake");
    assert_eq!(peer.sync(DOC, &mut doc), None);
    assert_eq!(peer.ephemeral(DOC, "s", 1, vec![1]), None);
    let joined = joined();
    assert_eq!(joined.server(), Some(&server()));
    assert_eq!(joined.me(), &me());
}

#[test]
fn a_peer_answer_for_someone_else_or_another_version_is_refused() {
    for (target, version) in [("client-2", PROTOCOL_VERSION), ("client-1", "2")] {
        let mut peer = Peer::new(me());
        peer.join();
        let answer = Message::Peer {
            sender_id: server(),
            target_id: PeerId::from(target),
            selected_protocol_version: version.to_owned(),
            metadata: None,
        };
        let refused = peer.receive(&answer.encode());
        assert!(
            matches!(refused, Err(PeerError::Handshake { .. })),
            "{refused:?}"
        );
        assert_eq!(peer.server(), None);
    }
}

#[test]
fn an_empty_replica_requests_then_syncs_until_both_hold_the_same() {
    let mut theirs = replica("on the server");
    let mut server_state = sync::State::new();
    let mut peer = joined();
    let mut ours = AutoCommit::new();

    let first = outgoing(&mut peer, &mut ours);
    assert!(matches!(
        crate::decode(&first[0]),
        Ok(Message::Request {
            document_id: DOC,
            ..
        })
    ));
    let mut frames = serve(&mut theirs, &mut server_state, first);
    let mut changed = None;
    while !frames.is_empty() {
        let mut replies = Vec::new();
        for frame in frames {
            let Ok(Event::Sync { document, message }) = peer.receive(&frame) else {
                panic!("the server sends sync messages");
            };
            if let Some(heads) = peer.apply(document, &mut ours, message).expect("applies") {
                changed = Some(heads);
            }
            for reply in outgoing(&mut peer, &mut ours) {
                assert!(matches!(
                    crate::decode(&reply),
                    Ok(Message::Sync {
                        document_id: DOC,
                        ..
                    })
                ));
                replies.push(reply);
            }
        }
        frames = serve(&mut theirs, &mut server_state, replies);
    }
    assert_eq!(ours.get_heads(), theirs.get_heads());
    assert_eq!(peer.their_heads(DOC), Some(theirs.get_heads().as_slice()));
    assert_eq!(
        changed,
        Some(Changed {
            before: Vec::new(),
            after: theirs.get_heads()
        })
    );
    assert_eq!(
        ours.get(ROOT, "summary")
            .ok()
            .flatten()
            .map(|(v, _)| v.to_string()),
        Some("\"on the server\"".to_owned())
    );
}

#[test]
fn a_replica_with_content_syncs_from_the_first_message_and_again_after_a_reconnect() {
    let mut peer = joined();
    let mut doc = replica("ours");
    let first = peer.sync(DOC, &mut doc).expect("a first message");
    assert!(matches!(
        crate::decode(&first),
        Ok(Message::Sync {
            document_id: DOC,
            ..
        })
    ));
    // Wrapping raw data for a replica that holds nothing: `request` only as the first word on a connection.
    let data = AutoCommit::new()
        .sync()
        .generate_sync_message(&mut sync::State::new())
        .expect("a first message")
        .encode();
    let other = DocumentId([8; 16]);
    let wrapped = |frame: Option<Vec<u8>>| crate::decode(&frame.expect("joined")).expect("decodes");
    assert!(matches!(
        wrapped(peer.wrap(other, data.clone(), true)),
        Message::Request { .. }
    ));
    assert!(matches!(
        wrapped(peer.wrap(other, data.clone(), true)),
        Message::Sync { .. }
    ));

    // A new connection starts over: no server until it answers, a fresh sync state, a first word again.
    let join = peer.join();
    assert!(matches!(crate::decode(&join), Ok(Message::Join { .. })));
    assert_eq!(peer.server(), None);
    assert_eq!(peer.their_heads(DOC), None);
    let answer =
        answer_join(&server(), &PeerMetadata::default(), &me(), &["1".into()]).expect("accepted");
    assert!(matches!(peer.receive(&answer.encode()), Ok(Event::Joined)));
    assert!(matches!(
        wrapped(peer.wrap(other, data, true)),
        Message::Request { .. }
    ));
    assert!(peer.sync(DOC, &mut doc).is_some(), "the state was reset");
}

#[test]
fn unavailable_errors_and_ephemeral_messages_say_what_they_are() {
    let mut peer = joined();
    let unavailable = Message::DocUnavailable {
        sender_id: server(),
        target_id: me(),
        document_id: DOC,
    };
    assert!(matches!(
        peer.receive(&unavailable.encode()),
        Ok(Event::Unavailable(DOC))
    ));

    let refused = peer.receive(&Message::error("go away").encode());
    let Err(error) = refused else {
        panic!("an error message is an Err, not {refused:?}");
    };
    assert_eq!(error.to_string(), "the server refused: go away");

    for (sender, from_server) in [(server(), true), (PeerId::from("server-ish"), false)] {
        let relayed = Message::Ephemeral {
            sender_id: sender.clone(),
            target_id: me(),
            document_id: DOC,
            session_id: "s".into(),
            count: 1,
            data: vec![0xa0],
        };
        let Ok(Event::Ephemeral {
            document,
            sender: got,
            from_server: flag,
            data,
        }) = peer.receive(&relayed.encode())
        else {
            panic!("an ephemeral event");
        };
        assert_eq!(
            (document, got, flag, data),
            (DOC, sender, from_server, vec![0xa0])
        );
    }

    let ours = peer.ephemeral(DOC, "session", 3, vec![1]).expect("joined");
    assert_eq!(
        crate::decode(&ours).ok(),
        Some(Message::Ephemeral {
            sender_id: me(),
            target_id: server(),
            document_id: DOC,
            session_id: "session".into(),
            count: 3,
            data: vec![1],
        })
    );
    let leave = Message::Leave {
        sender_id: server(),
    };
    assert!(matches!(peer.receive(&leave.encode()), Ok(Event::Other)));
}

#[test]
fn garbage_and_bad_sync_data_are_errors() {
    let mut peer = joined();
    assert!(matches!(
        peer.receive(b"\xff\x00"),
        Err(PeerError::Frame(_))
    ));
    let bad = Message::Sync {
        sender_id: server(),
        target_id: me(),
        document_id: DOC,
        data: vec![0x42, 1, 2, 3],
    };
    assert!(matches!(
        peer.receive(&bad.encode()),
        Err(PeerError::SyncMessage(_))
    ));
}
