//! Fuzzes what the server does with one Automerge sync message from a peer (`Incident::receive_sync`, the step the
//! document actor runs for every `sync` and `request` frame): decode, merge, command-rule enforcement and the
//! answers, on a replica with a commander whom the sender is not. It must refuse or accept, never panic; a refused
//! message leaves the document as it was; an accepted one leaves a document that saves and loads again.

#![no_main]

use std::sync::{Once, OnceLock};

use automerge::sync;
use commandpost_fuzz::{PEER, SERVER, moment, server_replica};
use incident_doc::{Editor, Incident, SyncMemo};
use libfuzzer_sys::fuzz_target;

/// The replica, saved once: loading it per input is much cheaper than declaring it anew.
fn saved() -> &'static [u8] {
    static SAVED: OnceLock<Vec<u8>> = OnceLock::new();
    SAVED.get_or_init(|| server_replica().save())
}

/// libfuzzer-sys aborts on every panic, even one the code under test catches; `receive_sync` catches automerge's
/// panics on malformed change bytes (and refuses the message), so the default hook comes back. A panic nobody
/// catches still aborts: libfuzzer-sys runs each input under `catch_unwind` and aborts when it unwinds.
fn catchable_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

fuzz_target!(|data: &[u8]| {
    catchable_panics();
    let mut incident = Incident::load(saved()).expect("the replica loads");
    // As the server's document actor holds it: the authority over schema and authorship.
    incident.govern();
    let before = incident.doc_mut().get_heads();
    let mut state = sync::State::new();
    let server = Editor::new(SERVER, moment());
    let sender = Editor::new(PEER, moment());
    let mut memo = SyncMemo::default();
    match incident.receive_sync(&mut memo, &mut state, data, &sender, &server) {
        Err(_) => assert_eq!(
            incident.doc_mut().get_heads(),
            before,
            "a refused sync message changes nothing"
        ),
        Ok(received) => {
            // A message without changes is answered by the actor's next generation for the peer.
            let answer = received
                .answer
                .or_else(|| incident.generate_sync(&mut memo, &mut state));
            if let Some(answer) = &answer {
                sync::Message::decode(answer).expect("our answers decode");
            }
            let bytes = incident.save();
            Incident::load(&bytes).expect("the merged document loads again");
            let _ = incident.view();
        }
    }
});
