//! Property: whatever mix of honest edits and hostile raw changes several writers send the server's replica over
//! sync, the document keeps its schema (the layout and what creation wrote, no keys outside the schema) and its
//! authorship record (every change's actor recorded as the person whose messages brought it; every stamp and
//! timeline author written by that person or put back by the server).

use std::collections::{BTreeSet, HashMap};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use chrono::{DateTime, Duration, TimeZone, Utc};
use incident_doc::schema::{SERVER_NAME, keys};
use incident_doc::{Declaration, Editor, Incident, Operation, ReceiveError, SyncMemo, template};
use proptest::prelude::*;

const WRITERS: [&str; 3] = ["alice", "bob", "mallory"];

/// What one writer does in one step.
#[derive(Debug, Clone)]
enum Act {
    Type(u8),
    AddEntry,
    SetSeverity,
    Pin,
    DeleteLayout,
    DeleteLayoutEntry(u8),
    RewriteCreation,
    ForeignKey,
    WriteServerKeys,
    ForgeStamp(u8),
    ForgeEntryAuthor(u8),
    RemoveFirstEntry,
    RenameFirstEntry,
    SeizeCommand,
    Close,
    Impersonate(u8),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        3 => any::<u8>().prop_map(Act::Type),
        2 => Just(Act::AddEntry),
        1 => Just(Act::SetSeverity),
        1 => Just(Act::Pin),
        1 => Just(Act::DeleteLayout),
        1 => any::<u8>().prop_map(Act::DeleteLayoutEntry),
        1 => Just(Act::RewriteCreation),
        1 => Just(Act::ForeignKey),
        1 => Just(Act::WriteServerKeys),
        1 => any::<u8>().prop_map(Act::ForgeStamp),
        1 => any::<u8>().prop_map(Act::ForgeEntryAuthor),
        1 => Just(Act::RemoveFirstEntry),
        1 => Just(Act::RenameFirstEntry),
        1 => Just(Act::SeizeCommand),
        1 => Just(Act::Close),
        1 => any::<u8>().prop_map(Act::Impersonate),
    ]
}

fn moment(step: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 0, 0)
        .single()
        .expect("a valid time")
        + Duration::seconds(step as i64 * 20)
}

/// One writer's replica and its sync states with the server.
struct Writer {
    name: &'static str,
    replica: Incident,
    theirs: sync::State,
    ours: sync::State,
}

impl Writer {
    fn new(name: &'static str, server: &mut Incident) -> Writer {
        Writer {
            name,
            replica: Incident::load(&server.save()).expect("the server's replica loads"),
            theirs: sync::State::new(),
            ours: sync::State::new(),
        }
    }
}

fn object(doc: &AutoCommit, obj: &ObjId, prop: impl Into<automerge::Prop>) -> Option<ObjId> {
    match doc.get(obj, prop).ok()?? {
        (automerge::Value::Object(_), id) => Some(id),
        _ => None,
    }
}

/// A raw change in the writer's copy, as any Automerge client can make; failures (a key already gone) are no-ops.
fn raw(
    doc: &mut AutoCommit,
    edit: impl FnOnce(&mut AutoCommit) -> Result<(), automerge::AutomergeError>,
) {
    if edit(doc).is_ok() {
        doc.commit();
    } else {
        doc.rollback();
    }
}

fn perform(writer: &mut Writer, act: &Act, at: DateTime<Utc>, actors: &[ActorId]) {
    let editor = Editor::new(writer.name, at);
    let other = WRITERS
        .iter()
        .find(|n| **n != writer.name)
        .copied()
        .unwrap_or("alice");
    let stamp =
        |doc: &mut AutoCommit, map: &ObjId, by: &str| -> Result<(), automerge::AutomergeError> {
            doc.put(map, "by", by)?;
            doc.put(map, "at", ScalarValue::Timestamp(at.timestamp_millis()))
        };
    match act {
        Act::Type(n) => {
            let _ = writer.replica.apply(
                &Operation::SpliceText {
                    field: "summary".into(),
                    item: None,
                    pos: 0,
                    delete: 0,
                    insert: format!("{}{n} ", writer.name),
                },
                &editor,
            );
        }
        Act::AddEntry => {
            let _ = writer.replica.apply(
                &Operation::AddTimelineEntry {
                    text: format!("{} was here", writer.name),
                    at: None,
                },
                &editor,
            );
        }
        Act::SetSeverity => {
            let _ = writer.replica.apply(
                &Operation::SetChoice {
                    field: "severity".into(),
                    value: Some("SEV2".into()),
                },
                &editor,
            );
        }
        Act::Pin => {
            let _ = writer.replica.apply(
                &Operation::Pin {
                    field: "summary".into(),
                },
                &editor,
            );
        }
        Act::DeleteLayout => raw(writer.replica.doc_mut(), |doc| {
            doc.delete(ROOT, keys::LAYOUT)
        }),
        Act::DeleteLayoutEntry(i) => raw(writer.replica.doc_mut(), |doc| {
            let layout = object(doc, &ROOT, keys::LAYOUT)
                .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            let len = doc.length(&layout).max(1);
            doc.delete(&layout, usize::from(*i) % len)
        }),
        Act::RewriteCreation => raw(writer.replica.doc_mut(), |doc| {
            doc.put(ROOT, keys::CREATED_BY, writer.name)?;
            doc.put(ROOT, keys::TEMPLATE, "security")?;
            doc.put(ROOT, keys::NUMBER, 999)
        }),
        Act::ForeignKey => raw(writer.replica.doc_mut(), |doc| doc.put(ROOT, "mine", "x")),
        Act::WriteServerKeys => raw(writer.replica.doc_mut(), |doc| {
            let authors = doc.put_object(ROOT, keys::AUTHORS, ObjType::Map)?;
            doc.put(&authors, "00", writer.name)?;
            doc.put(ROOT, keys::AUDIT, "clean")?;
            let over = doc.put_object(ROOT, keys::CLOSE_OVERRIDE, ObjType::Map)?;
            doc.put(&over, "reason", "forged")
        }),
        Act::ForgeStamp(i) => raw(writer.replica.doc_mut(), |doc| {
            let updated = object(doc, &ROOT, keys::UPDATED)
                .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            let field = ["summary", "severity", "detailedStatus"][usize::from(*i) % 3];
            let map = doc.put_object(&updated, field, ObjType::Map)?;
            stamp(doc, &map, other)
        }),
        Act::ForgeEntryAuthor(i) => raw(writer.replica.doc_mut(), |doc| {
            let timeline =
                object(doc, &ROOT, "timeline").ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            let entry = doc.insert_object(&timeline, 0, ObjType::Map)?;
            doc.put(&entry, "id", entry.to_string())?;
            doc.put(&entry, "author", WRITERS[usize::from(*i) % 3])?;
            doc.put(&entry, "at", ScalarValue::Timestamp(at.timestamp_millis()))?;
            let text = doc.put_object(&entry, "text", ObjType::Text)?;
            doc.splice_text(&text, 0, 0, "forged?")
        }),
        Act::RemoveFirstEntry => raw(writer.replica.doc_mut(), |doc| {
            let timeline =
                object(doc, &ROOT, "timeline").ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            doc.delete(&timeline, 0)
        }),
        Act::RenameFirstEntry => raw(writer.replica.doc_mut(), |doc| {
            let timeline =
                object(doc, &ROOT, "timeline").ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            let entry =
                object(doc, &timeline, 0).ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            doc.put(&entry, "id", "renamed")?;
            doc.put(&entry, "author", writer.name)
        }),
        Act::SeizeCommand => raw(writer.replica.doc_mut(), |doc| {
            let roles =
                object(doc, &ROOT, "roles").ok_or(automerge::AutomergeError::InvalidIndex(0))?;
            doc.put(&roles, "commander", writer.name)
        }),
        Act::Close => raw(writer.replica.doc_mut(), |doc| {
            doc.put(ROOT, "status", "closed")
        }),
        Act::Impersonate(i) => {
            let victim = &actors[usize::from(*i) % actors.len()];
            let doc = writer.replica.doc_mut();
            let own = doc.get_actor().clone();
            if *victim != own {
                doc.set_actor(victim.clone());
                raw(doc, |doc| {
                    let summary = object(doc, &ROOT, "summary")
                        .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
                    doc.splice_text(&summary, 0, 0, "impostor ")
                });
                doc.set_actor(own);
            }
        }
    }
}

/// Syncs one writer with the server until neither has anything to say; `false` if the server refused a message
/// (the writer wrote as someone else), in which case the writer starts over from the server's copy.
fn sync(
    server: &mut Incident,
    memo: &mut SyncMemo,
    writer: &mut Writer,
    at: DateTime<Utc>,
) -> bool {
    let sender = Editor::new(writer.name, at);
    let referee = Editor::new(SERVER_NAME, at);
    for _ in 0..20 {
        let mut quiet = true;
        let message = writer
            .replica
            .doc_mut()
            .sync()
            .generate_sync_message(&mut writer.theirs)
            .map(sync::Message::encode);
        if let Some(message) = message {
            quiet = false;
            match server.receive_sync(memo, &mut writer.ours, &message, &sender, &referee) {
                Ok(_) => {}
                Err(ReceiveError::Forged { .. }) => {
                    *writer = Writer::new(writer.name, server);
                    return false;
                }
                Err(e) => panic!("an honest-shaped message was refused: {e}"),
            }
        }
        if let Some(answer) = server.generate_sync(memo, &mut writer.ours) {
            quiet = false;
            let answer = sync::Message::decode(&answer).expect("our answers decode");
            let result = writer
                .replica
                .doc_mut()
                .sync()
                .receive_sync_message(&mut writer.theirs, answer);
            if result.is_err() {
                // Only an impostor's copy breaks: it wrote under an actor whose real changes now arrive with
                // the same sequence numbers. It starts over; the server never took the forgery.
                *writer = Writer::new(writer.name, server);
                return false;
            }
        }
        if quiet {
            break;
        }
    }
    true
}

/// The actor of the operation that wrote `prop` of `obj`.
fn writer_of(doc: &AutoCommit, obj: &ObjId, prop: &str) -> Option<ActorId> {
    match doc.get(obj, prop).ok()?? {
        (_, ObjId::Id(_, actor, _)) => Some(actor),
        (_, ObjId::Root) => None,
    }
}

fn check(
    server: &mut Incident,
    layout: &[(String, String)],
    creation: &[(String, String)],
    expected: &HashMap<ActorId, &str>,
) {
    let metas: Vec<(ActorId, automerge::ChangeHash)> = server
        .doc_mut()
        .get_changes_meta(&[])
        .into_iter()
        .map(|m| (m.actor.into_owned(), m.hash))
        .collect();
    let doc = server.doc();
    let view = server.view();
    let now: Vec<(String, String)> = view
        .fields
        .iter()
        .map(|f| (f.def.key.clone(), f.def.kind.to_string()))
        .collect();
    assert_eq!(now, layout, "the layout is the one creation wrote");
    for (key, value) in creation {
        let now = doc
            .get(ROOT, key.as_str())
            .ok()
            .flatten()
            .map(|(v, _)| format!("{v:?}"));
        assert_eq!(
            now.as_deref(),
            Some(value.as_str()),
            "{key} is as creation wrote it"
        );
    }
    let allowed: BTreeSet<&str> = layout
        .iter()
        .map(|(k, _)| k.as_str())
        .chain([
            keys::SCHEMA_VERSION,
            keys::TEMPLATE,
            keys::TEMPLATE_NAME,
            keys::TEMPLATE_VERSION,
            keys::CREATED_AT,
            keys::CREATED_BY,
            keys::NUMBER,
            keys::DRILL,
            keys::LAYOUT,
            keys::UPDATED,
            keys::PINS,
            keys::HANDOFFS,
            keys::AUDIT,
            keys::AUTHORS,
            keys::CHECKINS,
            keys::HELP,
        ])
        .collect();
    for key in doc.keys(ROOT) {
        assert!(
            allowed.contains(key.as_str()),
            "root key {key} is outside the schema"
        );
    }
    let authors = object(doc, &ROOT, keys::AUTHORS).expect("the authorship record");
    let author = |actor: &ActorId| -> Option<String> {
        doc.get(&authors, actor.to_hex_string().as_str())
            .ok()
            .flatten()
            .and_then(|(v, _)| v.into_scalar().ok())
            .and_then(|s| s.as_str().map(str::to_owned))
    };
    for (actor, hash) in &metas {
        let recorded =
            author(actor).unwrap_or_else(|| panic!("change {hash} has no recorded author"));
        match expected.get(actor) {
            Some(name) => assert_eq!(recorded, *name, "{actor}'s changes came from {name}"),
            None => assert!(
                [SERVER_NAME, "alice"].contains(&recorded.as_str()),
                "an actor nobody sent is the server's: {recorded}"
            ),
        }
    }
    // Whatever names a person was written by that person, or put back by the server.
    let written_by_named = |obj: &ObjId, prop: &str| {
        let Some(named) = doc
            .get(obj, prop)
            .ok()
            .flatten()
            .and_then(|(v, _)| v.into_scalar().ok())
            .and_then(|s| s.as_str().map(str::to_owned))
        else {
            return;
        };
        let writer = writer_of(doc, obj, prop)
            .and_then(|a| author(&a))
            .expect("a recorded writer");
        assert!(
            writer == named || writer == SERVER_NAME,
            "{prop} names {named} but {writer} wrote it"
        );
    };
    if let Some(updated) = object(doc, &ROOT, keys::UPDATED) {
        for key in doc.keys(&updated) {
            if let Some(stamp) = object(doc, &updated, key.as_str()) {
                written_by_named(&stamp, "by");
            }
        }
    }
    if let Some(timeline) = object(doc, &ROOT, "timeline") {
        for i in 0..doc.length(&timeline) {
            if let Some(entry) = object(doc, &timeline, i) {
                written_by_named(&entry, "author");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_writers_never_break_the_schema_or_the_authorship_record(
        steps in prop::collection::vec((0usize..3, act()), 1..40)
    ) {
        let template = template::builtin().into_iter().next().expect("a built-in template");
        let declaration = Declaration { name: "Property".into(), number: Some(7) };
        let mut server = Incident::create(&template, &declaration, &Editor::new("alice", moment(0)), None)
            .expect("declared");
        let layout: Vec<(String, String)> =
            server.view().fields.iter().map(|f| (f.def.key.clone(), f.def.kind.to_string())).collect();
        let creation: Vec<(String, String)> = [
            keys::SCHEMA_VERSION, keys::TEMPLATE, keys::TEMPLATE_NAME, keys::TEMPLATE_VERSION, keys::CREATED_AT, keys::CREATED_BY,
            keys::NUMBER, keys::DRILL,
        ]
        .iter()
        .map(|k| {
            let value = server.doc().get(ROOT, *k).ok().flatten().map(|(v, _)| format!("{v:?}")).unwrap_or_default();
            ((*k).to_owned(), value)
        })
        .collect();
        let mut memo = SyncMemo::default();
        let mut writers: Vec<Writer> = WRITERS.iter().map(|n| Writer::new(n, &mut server)).collect();
        let mut expected: HashMap<ActorId, &str> = HashMap::new();
        for (step, (who, act)) in steps.iter().enumerate() {
            let at = moment(step + 1);
            // Actors become known when their changes reach the server (a random actor cannot be guessed before).
            let actors: Vec<ActorId> = expected
                .keys()
                .filter(|actor| server.author_of(actor).is_some())
                .cloned()
                .collect();
            let writer = &mut writers[*who];
            expected.insert(writer.replica.doc().get_actor().clone(), writer.name);
            let actors = if actors.is_empty() { vec![writer.replica.doc().get_actor().clone()] } else { actors };
            perform(writer, act, at, &actors);
            sync(&mut server, &mut memo, writer, at);
            check(&mut server, &layout, &creation, &expected);
        }
    }
}
