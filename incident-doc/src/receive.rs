//! What a server replica does with one Automerge sync message from a peer: decode it, merge it, hold the merged
//! changes to the command rules, and generate the answers, as one pure step.
//!
//! The server's document actor runs this for every `sync`/`request` message a connection delivers; it is here,
//! without IO, so that the fuzz target `sync_message` (in `fuzz/`) drives exactly the server's handling of hostile
//! bytes, and so that the step's result (answers to send, violations to report) is plain data the actor acts on.

use automerge::sync::{self, SyncDoc};

use crate::rules::Violation;
use crate::{Editor, Incident};

/// The outcome of one accepted sync message.
#[derive(Debug, Default)]
pub struct Received {
    /// What broke a command rule and was reverted (in one change by the server's editor), for the sender.
    pub violations: Vec<Violation>,
    /// The encoded sync message that answers the peer, if any, generated right after the message as a sequential
    /// Automerge peer would (see the document actor for why it must not wait for the end of a batch). At most one:
    /// see [`Incident::receive_sync`].
    pub answer: Option<Vec<u8>>,
}

/// Why a sync message was refused; the document is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The bytes are not an Automerge sync message.
    #[error("not a sync message: {0}")]
    Decode(String),
    /// The message decoded but Automerge could not apply it (bad changes, missing dependencies it cannot wait for).
    #[error("the sync message does not apply: {0}")]
    Apply(String),
}

impl Incident {
    /// Receives one encoded sync message from a peer whose sync state is `state` and whose changes are `who`'s:
    /// merges it, reverts what breaks the command rules (as [`Incident::enforce`], in a change by `server`), and
    /// returns the answers to send once the merged changes are durable.
    pub fn receive_sync(
        &mut self,
        state: &mut sync::State,
        data: &[u8],
        who: &str,
        server: &Editor,
    ) -> Result<Received, ReceiveError> {
        let message =
            sync::Message::decode(data).map_err(|e| ReceiveError::Decode(e.to_string()))?;
        let before = self.doc_mut().get_heads();
        self.doc_mut()
            .sync()
            .receive_sync_message(state, message)
            .map_err(|e| ReceiveError::Apply(e.to_string()))?;
        // Raw changes cannot be refused once merged: what breaks a command rule is reverted at once, in a change
        // that goes out with the answer.
        let violations = self.enforce(&before, who, server);
        // One answer per message, as automerge-repo generates them, never "until there is nothing left to say":
        // a peer whose `have` names a last sync we do not know gets a reset message from every call, forever (found
        // by the `sync_message` fuzz target: one 74-byte frame hung the document actor).
        let answer = self
            .doc_mut()
            .sync()
            .generate_sync_message(state)
            .map(sync::Message::encode);
        Ok(Received { violations, answer })
    }
}

#[cfg(test)]
mod tests {
    use automerge::sync::{self, SyncDoc};
    use chrono::{TimeZone, Utc};

    use super::ReceiveError;
    use crate::template::builtin;
    use crate::{Declaration, Editor, Incident, Operation};

    fn editor(name: &str) -> Editor {
        Editor::new(name, Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap())
    }

    fn declared() -> Incident {
        let template = builtin().into_iter().next().expect("a builtin template");
        let declaration = Declaration {
            name: "Checkout down".into(),
            number: None,
        };
        Incident::create(&template, &declaration, &editor("alice"), None).expect("create")
    }

    #[test]
    fn a_peer_edit_arrives_and_is_answered() {
        let mut server = declared();
        let mut peer = Incident::load(&server.save()).expect("load");
        peer.apply(
            &Operation::SpliceText {
                field: "summary".into(),
                pos: 0,
                delete: 0,
                insert: "Rolled back.".into(),
            },
            &editor("bob"),
        )
        .expect("edit");
        let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
        let mut received = 0;
        // Rounds of the protocol until neither side has anything to say.
        for _ in 0..10 {
            let Some(message) = peer.doc_mut().sync().generate_sync_message(&mut theirs) else {
                break;
            };
            let step = server
                .receive_sync(&mut ours, &message.encode(), "bob", &editor("commandpost"))
                .expect("a valid message");
            assert!(step.violations.is_empty());
            received += 1;
            if let Some(answer) = step.answer {
                let answer = sync::Message::decode(&answer).expect("our answer decodes");
                peer.doc_mut()
                    .sync()
                    .receive_sync_message(&mut theirs, answer)
                    .expect("the peer applies our answer");
            }
        }
        assert!(received > 0);
        assert_eq!(server.doc_mut().get_heads(), peer.doc_mut().get_heads());
    }

    #[test]
    fn garbage_is_refused_and_changes_nothing() {
        let mut server = declared();
        let heads = server.doc_mut().get_heads();
        let mut state = sync::State::new();
        for bytes in [
            &b""[..],
            b"\x42",
            b"\x42\x00\x01garbage",
            b"not a sync message at all",
        ] {
            let result = server.receive_sync(&mut state, bytes, "mallory", &editor("commandpost"));
            assert!(
                matches!(
                    result,
                    Err(ReceiveError::Decode(_) | ReceiveError::Apply(_))
                ),
                "{bytes:?}: {result:?}"
            );
        }
        assert_eq!(server.doc_mut().get_heads(), heads);
    }

    /// A V2 sync message whose `have` claims a last sync at a change this replica never saw (and which sends no
    /// changes): automerge answers it with a reset every time it is asked, so a loop that generated answers until
    /// none was left never ended. Found by the `sync_message` fuzz target; kept in its corpus.
    const UNKNOWN_LAST_SYNC: &[u8] =
        include_bytes!("../../fuzz/corpus/sync_message/regression-unknown-last-sync");

    #[test]
    fn a_claimed_last_sync_we_never_saw_gets_one_reset_and_ends() {
        let mut server = declared();
        let heads = server.doc_mut().get_heads();
        let mut state = sync::State::new();
        for _ in 0..3 {
            let step = server
                .receive_sync(
                    &mut state,
                    UNKNOWN_LAST_SYNC,
                    "mallory",
                    &editor("commandpost"),
                )
                .expect("the message is valid");
            let answer = step.answer.expect("the peer is told to start over");
            let answer = sync::Message::decode(&answer).expect("the answer decodes");
            assert_eq!(answer.heads, heads, "a reset carries our heads");
            // A reset: our heads, an empty "have" (we share nothing with you), no changes.
            assert!(answer.have.iter().all(|have| have.last_sync.is_empty()));
            assert!(answer.changes.is_empty());
        }
        assert_eq!(server.doc_mut().get_heads(), heads);
    }
}
