//! What one keystroke from a sync peer costs the server's replica: `Incident::receive_sync` of the peer's message
//! (the authorship check of its change, the merge, the schema and command rules) and the answer, on a governed
//! replica, as the document actor runs them. Figures in BENCHMARKS.md ("The cost of integrity per keystroke").

// `criterion_group!` generates a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use incident_doc::{Declaration, Editor, Incident, Operation, SyncMemo, template};

fn benches(c: &mut Criterion) {
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 25, 4, 0, 0)
        .single()
        .expect("time");
    let template = template::builtin().into_iter().next().expect("template");
    let declaration = Declaration {
        name: "Bench".into(),
        number: Some(1),
    };
    let mut server =
        Incident::create(&template, &declaration, &Editor::new("alice", t0), None).expect("create");
    server.govern();
    let mut peer = Incident::load(&server.save()).expect("load");
    let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
    let mut memo = SyncMemo::default();
    let (bob, referee) = (Editor::new("bob", t0), Editor::new("commandpost", t0));
    let mut typed: i64 = 0;
    c.bench_function(
        "one keystroke through receive_sync (governed replica)",
        |b| {
            b.iter_custom(|keystrokes| {
                let mut spent = Duration::ZERO;
                for _ in 0..keystrokes {
                    typed += 1;
                    let edit = Operation::SpliceText {
                        field: "summary".into(),
                        item: None,
                        pos: 0,
                        delete: 0,
                        insert: "x".into(),
                    };
                    peer.apply(
                        &edit,
                        &Editor::new("bob", t0 + chrono::Duration::seconds(typed)),
                    )
                    .expect("type");
                    loop {
                        let message = peer
                            .doc_mut()
                            .sync()
                            .generate_sync_message(&mut theirs)
                            .map(sync::Message::encode);
                        let Some(data) = message else {
                            break;
                        };

                        let start = Instant::now();
                        let step = server
                            .receive_sync(&mut memo, &mut ours, &data, &bob, &referee)
                            .expect("receive");
                        let answer = step
                            .answer
                            .or_else(|| server.generate_sync(&mut memo, &mut ours));
                        spent += start.elapsed();
                        if let Some(answer) = answer {
                            let answer = sync::Message::decode(&answer).expect("decode");
                            peer.doc_mut()
                                .sync()
                                .receive_sync_message(&mut theirs, answer)
                                .expect("peer receives");
                        }
                    }
                }
                spent
            });
        },
    );
}

criterion_group!(model, benches);
criterion_main!(model);
