//! Writes the seed corpus of the `sync_message` target into `corpus/sync_message/`: the messages a peer holding
//! the server's replica sends while syncing a few kinds of edit (typing, a timeline entry, a role change the
//! command rules revert, a status change), captured as it talks to a replica running the server's own step. Rerun
//! it (`cargo run --release --example write-seeds`) when the replica in `src/lib.rs` or the template changes.

use std::path::Path;

use automerge::sync::{self, SyncDoc};
use commandpost_fuzz::{COMMANDER, PEER, SERVER, moment, server_replica};
use incident_doc::schema::Role;
use incident_doc::{Editor, Incident, Operation, SyncMemo};

/// Syncs a peer that made `edits` (as the commander, so it accepts them locally; the server judges them as
/// [`PEER`]'s) with a fresh server replica; returns every message the peer sent.
fn conversation(edits: &[Operation]) -> Vec<Vec<u8>> {
    let mut server = server_replica();
    let mut peer = Incident::load(&server.save()).expect("the replica loads");
    if !edits.is_empty() {
        peer.apply_all(edits, &Editor::new(COMMANDER, moment()))
            .expect("the peer's edits apply");
    }
    let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
    let referee = Editor::new(SERVER, moment());
    let sender = Editor::new(PEER, moment());
    let mut memo = SyncMemo::default();
    let mut sent = Vec::new();
    loop {
        let Some(message) = peer.doc_mut().sync().generate_sync_message(&mut theirs) else {
            break;
        };
        let bytes = message.encode();
        let received = server
            .receive_sync(&mut memo, &mut ours, &bytes, &sender, &referee)
            .expect("the server takes the peer's message");
        sent.push(bytes);
        let answer = received
            .answer
            .or_else(|| server.generate_sync(&mut memo, &mut ours));
        if let Some(answer) = answer {
            let answer = sync::Message::decode(&answer).expect("the answer decodes");
            peer.doc_mut()
                .sync()
                .receive_sync_message(&mut theirs, answer)
                .expect("the peer takes the answer");
        }
        assert!(sent.len() < 16, "the conversation ends");
    }
    sent
}

fn main() {
    assert_eq!(
        server_replica().doc_mut().get_heads(),
        server_replica().doc_mut().get_heads(),
        "the replica is the same every run, or seeds would not apply to it"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sync_message");
    std::fs::create_dir_all(&dir).expect("creating the corpus directory");
    let scenarios: Vec<(&str, Vec<Operation>)> = vec![
        ("nothing", vec![]),
        (
            "typing",
            vec![Operation::SpliceText {
                field: "summary".to_owned(),
                item: None,
                pos: 9,
                delete: 4,
                insert: "are failing".to_owned(),
            }],
        ),
        (
            "timeline",
            vec![Operation::AddTimelineEntry {
                text: "Rolled back release 42.".to_owned(),
                at: None,
            }],
        ),
        (
            "role-change",
            vec![Operation::AssignRole {
                role: Role::Commander,
                person: Some(PEER.to_owned()),
            }],
        ),
    ];
    let mut written = 0;
    for (name, edits) in scenarios {
        for (n, message) in conversation(&edits).into_iter().enumerate() {
            std::fs::write(dir.join(format!("{name}-{n}")), message).expect("writing a seed");
            written += 1;
        }
    }
    // A peer that knows nothing yet: what `repo.find()` sends first.
    let mut empty = automerge::AutoCommit::new();
    if let Some(first) = empty.sync().generate_sync_message(&mut sync::State::new()) {
        std::fs::write(dir.join("fresh-peer"), first.encode()).expect("writing a seed");
        written += 1;
    }
    println!("wrote {written} seeds into {}", dir.display());
}
