//! What a run of merged changes touched: the root keys written (at the root or anywhere below them) and the fields
//! whose last-updated stamps were written, which decide what the schema and the command rules must look at.
//!
//! Two ways to find out. Automerge's `diff` between the heads before and after works for any changes, but walks
//! every object of the document (a long summary's text included), which made it the largest cost of a keystroke
//! (39% of the server's instructions in a war room: BENCHMARKS.md). When the caller holds the very changes that were
//! merged (a sync message's), their operations say the same in proportion to their size: each operation's object
//! leads, through its parents, to one root key, and objects never move, so that path is looked up once per object.

use std::collections::{BTreeSet, HashMap};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{ActorId, AutoCommit, Change, ChangeHash, PatchAction, Prop, ReadDoc, ScalarValue};

use crate::schema::keys;

/// What a run of changes touched.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// The root keys written.
    pub keys: BTreeSet<String>,
    /// The fields whose stamps (under `updated`) were written.
    pub stamps: BTreeSet<String>,
    /// Of `stamps`, those whose `by` the changes themselves wrote as the sender. Such a write is honest even when
    /// it lost a conflict to a concurrent stamp (the visible `by` then names someone else): only operations show
    /// this; a diff shows visible effects only, and leaves this empty.
    pub signed: BTreeSet<String>,
}

/// Where an object sits: the root key it is under, and for objects under `updated`, the stamp's field when the
/// object is a stamp or inside one (`None` for the `updated` map itself).
#[derive(Debug, Clone)]
pub(crate) struct Place {
    root: String,
    stamp: Option<String>,
    /// The object is the stamp map itself (`updated.<field>`), whose `by` names the writer.
    is_stamp: bool,
}

/// Objects' places, by the operation that created them. An object's parent is fixed when it is created, so an entry
/// never goes stale; the map is cleared when it grows past [`PLACES`] so hostile churn cannot grow it unbounded.
pub(crate) type Places = HashMap<(u64, ActorId), Place>;

/// Entries [`Places`] holds at most.
const PLACES: usize = 4096;

/// From Automerge's diff between `before` and `after`: for any changes.
pub(crate) fn by_diff(
    doc: &mut AutoCommit,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Touched {
    let mut touched = Touched::default();
    for patch in doc.diff(before, after) {
        let key_of_action = match &patch.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.clone()),
            _ => None,
        };
        match patch.path.as_slice() {
            [] => touched.keys.extend(key_of_action),
            [(_, Prop::Map(key)), rest @ ..] => {
                if key == keys::UPDATED {
                    match rest.first() {
                        Some((_, Prop::Map(field))) => {
                            touched.stamps.insert(field.clone());
                        }
                        Some(_) => {}
                        None => touched.stamps.extend(key_of_action),
                    }
                }
                touched.keys.insert(key.clone());
            }
            _ => {}
        }
    }
    touched
}

/// From the operations of `changes`, which must be exactly the changes merged since `before` (checked here: `None`
/// when they are not, say because changes held back earlier completed too, and the caller falls back on
/// [`by_diff`]). `sender` is whose the changes are, for [`Touched::signed`].
pub(crate) fn by_ops(
    doc: &mut AutoCommit,
    places: &mut Places,
    before: &[ChangeHash],
    changes: &[Change],
    sender: &str,
) -> Option<Touched> {
    let merged: BTreeSet<ChangeHash> = doc
        .get_changes_meta(before)
        .iter()
        .map(|c| c.hash)
        .collect();
    let held: BTreeSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    if merged.is_empty() || merged != held {
        return None;
    }
    if places.len() > PLACES {
        places.clear();
    }
    let mut touched = Touched::default();
    for change in changes {
        for op in change.decode().operations {
            let ObjectId::Id(id) = &op.obj else {
                if let Key::Map(key) = &op.key {
                    touched.keys.insert(key.to_string());
                }
                continue;
            };
            let place = match places.get(&(id.0, id.1.clone())) {
                Some(place) => place.clone(),
                None => {
                    let place = place_of(doc, id.0, &id.1)?;
                    places.insert((id.0, id.1.clone()), place.clone());
                    place
                }
            };
            if place.root == keys::UPDATED {
                let field = match (&place.stamp, &op.key) {
                    (Some(field), _) => Some(field.clone()),
                    (None, Key::Map(field)) => Some(field.to_string()),
                    (None, Key::Seq(_)) => None,
                };
                if let Some(field) = field {
                    let signs = place.is_stamp
                        && matches!(&op.key, Key::Map(k) if k == "by")
                        && matches!(&op.action, OpType::Put(ScalarValue::Str(by)) if by == sender);
                    if signs {
                        touched.signed.insert(field.clone());
                    }
                    touched.stamps.insert(field);
                }
            }
            touched.keys.insert(place.root);
        }
    }
    Some(touched)
}

/// The place of the object created by operation `counter@actor`, from its parents; `None` if the document does not
/// know it.
fn place_of(doc: &AutoCommit, counter: u64, actor: &ActorId) -> Option<Place> {
    let obj = doc
        .import_obj(&format!("{counter}@{}", actor.to_hex_string()))
        .ok()?;
    let path: Vec<Prop> = doc.parents(&obj).ok()?.map(|parent| parent.prop).collect();
    // `parents` goes from the object up to the root: the last property is the root key.
    let mut down = path.into_iter().rev();
    let Some(Prop::Map(root)) = down.next() else {
        return None;
    };
    let stamp = match down.next() {
        Some(Prop::Map(field)) if root == keys::UPDATED => Some(field),
        _ => None,
    };
    let is_stamp = stamp.is_some() && down.next().is_none();
    Some(Place {
        root,
        stamp,
        is_stamp,
    })
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ChangeHash, ROOT, ReadDoc};

    use super::{Places, Touched, by_diff, by_ops};
    use crate::receive::tests::{declared as server, editor};
    use crate::schema::keys;
    use crate::{Incident, Operation};

    /// A replica of `server` writing as actor `[i; 16]`.
    fn writer(server: &mut Incident, i: u8) -> Incident {
        let mut writer = Incident::load(&server.save()).expect("load");
        writer.doc_mut().set_actor(ActorId::from([i; 16]));
        writer
    }

    /// The changes `writer` holds that `server` lacks, as a sync message would bring them.
    fn news(server: &mut Incident, writer: &mut Incident) -> Vec<automerge::Change> {
        let known = server.doc_mut().document().clone();
        writer
            .doc_mut()
            .get_changes(&[])
            .into_iter()
            .filter(|change| known.get_change_meta_by_hash(&change.hash()).is_none())
            .collect()
    }

    /// Merges into `server` the changes `writer` holds that it lacks, as a sync message would bring them; returns
    /// the heads before and the changes.
    fn bring(
        server: &mut Incident,
        writer: &mut Incident,
    ) -> (Vec<ChangeHash>, Vec<automerge::Change>) {
        let before = server.doc_mut().get_heads();
        let changes = news(server, writer);
        for change in &changes {
            server
                .doc_mut()
                .load_incremental(change.raw_bytes())
                .expect("merge");
        }
        (before, changes)
    }

    /// Merges what `writer` made since `server`'s heads into `server`, and finds what it touched both ways.
    fn merge(server: &mut Incident, writer: &mut Incident, sender: &str) -> (Touched, Touched) {
        let (before, changes) = bring(server, writer);
        let after = server.doc_mut().get_heads();
        let ops = by_ops(
            server.doc_mut(),
            &mut Places::default(),
            &before,
            &changes,
            sender,
        )
        .expect("the changes are exactly those merged");
        (ops, by_diff(server.doc_mut(), &before, &after))
    }

    fn splice(text: &str) -> Operation {
        Operation::SpliceText {
            field: "summary".into(),
            item: None,
            pos: 0,
            delete: 0,
            insert: text.into(),
        }
    }

    #[test]
    fn operations_find_what_the_diff_finds() {
        let mut server = server();
        let mut bob = writer(&mut server, 1);
        bob.apply(&splice("Rolled back."), &editor("bob"))
            .expect("type");
        bob.apply(
            &Operation::AddTimelineEntry {
                text: "paged the database team".into(),
                at: None,
            },
            &editor("bob"),
        )
        .expect("timeline");
        // A raw write of a key only the server may write, as a hostile client can.
        bob.doc_mut()
            .put(ROOT, keys::AUTHORS, "mallory")
            .expect("raw");
        let (ops, diff) = merge(&mut server, &mut bob, "bob");
        assert_eq!(ops.keys, diff.keys);
        assert_eq!(ops.stamps, diff.stamps);
        assert!(
            ops.keys.contains("summary") && ops.keys.contains(keys::AUTHORS),
            "{:?}",
            ops.keys
        );
        assert!(ops.signed.contains("summary"), "{:?}", ops.signed);
        // The server's own record of objects' places serves the next keystroke without asking automerge again.
        let mut places = Places::default();
        bob.apply(&splice("x"), &editor("bob")).expect("type");
        let (before, changes) = bring(&mut server, &mut bob);
        let again = by_ops(server.doc_mut(), &mut places, &before, &changes, "bob").expect("exact");
        assert!(!places.is_empty());
        assert!(again.keys.contains("summary"));
    }

    #[test]
    fn changes_other_than_those_merged_fall_back_on_the_diff() {
        let mut server = server();
        let mut bob = writer(&mut server, 1);
        bob.apply(&splice("a"), &editor("bob")).expect("type");
        bob.apply(&splice("b"), &editor("bob")).expect("type");
        let (before, changes) = bring(&mut server, &mut bob);
        // Only one of the two merged changes in hand: not enough to say what both touched.
        let one = &changes[..1];
        assert!(
            by_ops(
                server.doc_mut(),
                &mut Places::default(),
                &before,
                one,
                "bob"
            )
            .is_none()
        );
        assert!(
            by_ops(
                server.doc_mut(),
                &mut Places::default(),
                &before,
                &[],
                "bob"
            )
            .is_none()
        );
    }

    #[test]
    fn a_stamp_that_lost_a_conflict_is_no_forgery() {
        let mut server = server();
        let mut bob = writer(&mut server, 1);
        let mut carol = writer(&mut server, 2);
        // Concurrent edits of one field: each writes its own stamp of it, and one stamp wins the conflict.
        carol
            .apply(&splice("carol "), &editor("carol"))
            .expect("type");
        bob.apply(&splice("bob "), &editor("bob")).expect("type");
        let mut violations = Vec::new();
        for (peer, name) in [(&mut carol, "carol"), (&mut bob, "bob")] {
            let (before, changes) = bring(&mut server, peer);
            let (found, touched) = server.enforce_recording(
                &before,
                &editor(name),
                &editor("commandpost"),
                &[],
                &changes,
            );
            assert!(touched.is_some_and(|keys| keys.contains("summary")));
            // Found from the operations, not the diff: the diff shows nothing of a stamp that lost.
            assert!(
                by_ops(
                    server.doc_mut(),
                    &mut Places::default(),
                    &before,
                    &changes,
                    name
                )
                .is_some()
            );
            violations.extend(found);
        }
        // Same counters, so the higher actor's stamp (carol's) is the one shown: bob's lost, and is still his own.
        let updated = server
            .doc()
            .get(ROOT, keys::UPDATED)
            .expect("read")
            .expect("stamps")
            .1;
        let stamp = server
            .doc()
            .get(&updated, "summary")
            .expect("read")
            .expect("a stamp")
            .1;
        let by = server.doc().get(&stamp, "by").expect("read").expect("by").0;
        assert_eq!(by.as_str(), Some("carol"));
        assert!(violations.is_empty(), "{violations:?}");
    }
}
