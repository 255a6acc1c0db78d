//! Criterion benchmarks of the heavy reads on a document with a long history (5,000 changes, typed by two
//! replicas that merge now and then): the view now and at past heads, read in place or on a fork at those heads,
//! and the ways the server can take a snapshot to read off its document actor. Figures are in BENCHMARKS.md.

// `criterion_group!` generates a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use automerge::{ActorId, ChangeHash};
use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use incident_doc::{Declaration, Editor, Incident, IncidentView, Operation, export, template};

/// Changes in the long document.
const CHANGES: usize = 5_000;

fn editor(name: &str, seconds: usize) -> Editor {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 25, 4, 0, 0)
        .single()
        .expect("time");
    Editor::new(name, start + Duration::seconds(seconds as i64))
}

/// One edit of a long incident: mostly keystrokes in the summary, a timeline entry every tenth change, command
/// changing hands every five hundredth (by an administrator's override, the one way command changes in a single
/// change).
fn edit(i: usize) -> Operation {
    if i.is_multiple_of(500) {
        Operation::OverrideCommand {
            person: format!("ic-{}", i / 500),
            reason: "shift change".into(),
        }
    } else if i.is_multiple_of(10) {
        Operation::AddTimelineEntry {
            text: format!("Entry {i}: checked the dashboards"),
            at: None,
        }
    } else {
        Operation::SpliceText {
            field: "summary".into(),
            item: None,
            pos: 0,
            delete: 0,
            insert: "x".into(),
        }
    }
}

/// The two shapes of history measured.
#[derive(Clone, Copy)]
enum Shape {
    /// Two replicas that merge each other's changes every 50 changes, as automerge-repo clients do.
    Merging,
    /// A writer that never merges the server's changes: its chain of changes sits between the server's, so no
    /// change on it is one whose clock Automerge caches (every sixteenth), and reading at past heads walks the
    /// whole chain to build a clock. The worst case for reading in place; any write token can make it.
    Diverging,
}

/// A document of [`CHANGES`] changes by two replicas, and the heads it had halfway.
fn long_document(shape: Shape) -> (Incident, Vec<ChangeHash>) {
    let template = template::builtin().into_iter().next().expect("template");
    let mut a = Incident::create(
        &template,
        &Declaration {
            name: "Bench".into(),
            number: Some(1),
        },
        &editor("ic-0", 0),
        Some(ActorId::from(&[1u8; 16][..])),
    )
    .expect("create");
    let mut b = Incident::load(&a.save()).expect("load");
    b.doc_mut().set_actor(ActorId::from(&[2u8; 16][..]));
    let mut middle = Vec::new();
    for i in 1..CHANGES {
        // Command changes on the server's replica (`a`), as an administrator's override over HTTP would.
        let commander = format!("ic-{}", i / 500 - usize::from(i >= 500));
        let (replica, name) = if i.is_multiple_of(500) {
            (&mut a, commander.as_str())
        } else if i.is_multiple_of(2) {
            (&mut a, "alice")
        } else {
            (&mut b, "bob")
        };
        let admin = i.is_multiple_of(500);
        replica
            .apply(&edit(i), &editor(name, i).with_admin(admin))
            .expect("edit");
        match shape {
            Shape::Merging if i.is_multiple_of(50) => {
                a.doc_mut().merge(b.doc_mut()).expect("merge");
                b.doc_mut().merge(a.doc_mut()).expect("merge");
            }
            Shape::Diverging => {
                a.doc_mut().merge(b.doc_mut()).expect("merge");
            }
            Shape::Merging => {}
        }
        if i == CHANGES / 2 {
            a.doc_mut().merge(b.doc_mut()).expect("merge");
            middle = a.doc_mut().get_heads();
        }
    }
    a.doc_mut().merge(b.doc_mut()).expect("merge");
    (a, middle)
}

fn benches(c: &mut Criterion) {
    for (label, shape) in [
        ("5,000 changes, merging", Shape::Merging),
        ("5,000 changes, diverging", Shape::Diverging),
    ] {
        let (mut incident, middle) = long_document(shape);
        assert_eq!(incident.doc_mut().get_changes(&[]).len(), CHANGES);
        let mut group = c.benchmark_group(label);
        group.sample_size(10);
        reads(&mut group, &mut incident, &middle);
        group.finish();
    }
}

/// The reads measured on one document; `middle` are the heads it had halfway.
fn reads(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    incident: &mut Incident,
    middle: &[ChangeHash],
) {
    group.bench_function("view now", |b| b.iter(|| incident.view()));
    group.bench_function("view at past heads, in place", |b| {
        b.iter(|| incident.view_at(middle))
    });
    group.bench_function("view at past heads, on a fork at them", |b| {
        b.iter(|| {
            let past = incident.doc_mut().fork_at(middle).expect("fork");
            IncidentView::read(&past, None)
        })
    });
    group.bench_function("postmortem at past heads, in place", |b| {
        b.iter(|| {
            let view = incident.view_at(middle);
            export::postmortem(&view, &incident.record(Some(middle)))
        })
    });
    group.bench_function("postmortem at past heads, on a fork at them", |b| {
        b.iter(|| {
            let mut past = Incident::empty(None);
            *past.doc_mut() = incident.doc_mut().fork_at(middle).expect("fork");
            let view = past.view();
            export::postmortem(&view, &past.record(None))
        })
    });
    group.bench_function("record now", |b| b.iter(|| incident.record(None)));
    group.bench_function("due times", |b| b.iter(|| incident.due_times()));
    group.bench_function("history, first page of 100", |b| {
        b.iter(|| incident.history(0, 100))
    });
    group.bench_function("heads at a time", |b| {
        b.iter(|| incident.heads_at(editor("x", CHANGES / 2).at))
    });
    group.bench_function("snapshot by clone", |b| b.iter(|| incident.doc().clone()));
    group.bench_function("snapshot by save", |b| b.iter(|| incident.save()));
    let saved = incident.save();
    group.bench_function("load a saved snapshot", |b| {
        b.iter(|| Incident::load(&saved).expect("load"))
    });
}

criterion_group!(past, benches);
criterion_main!(past);
