//! The document's own history, read back: which change touched which fields, who made it and when; the heads of
//! the document as it was at a moment; who held which role from when to when.
//!
//! An Automerge document keeps every change it ever merged, each with its dependencies, its actor, a timestamp
//! (whole seconds, the writer's clock) and an optional message. Who made a change is what the server recorded for
//! its actor under `authors` (the token a sync peer's changes arrived with, or the editor of an HTTP operation),
//! never what the change says about itself: any client can write any commit message. A change whose actor the
//! record does not name (a document from before the record, or imported) reads as unattributed. [`Incident`]'s
//! operations still write `{"by", "op", "fields"}` messages, of which history shows only `op`. Which fields a change
//! touched is read from its operations, so it is the same for every writer.
//!
//! Changes are ordered causally (a change after everything it depends on), and among changes that could come in
//! either order, by timestamp then hash, so every replica lists the same history in the same order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use automerge::legacy::{Key, ObjectId};
use automerge::{ActorId, Automerge, ChangeHash, ObjId, Prop, ReadDoc};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::Incident;
use crate::read::Reader;
use crate::schema::{FieldKind, Role, SERVER_NAME, keys};
use crate::view::{FieldValue, IncidentView, read_layout, read_value};

/// One change of the document, as the history lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The change hash (hex), unique across replicas.
    pub hash: String,
    /// When it was made, by the writer's clock, to the second; `None` when the writer recorded no time.
    pub at: Option<DateTime<Utc>>,
    /// The Automerge actor (hex): one replica or session of one client.
    pub actor: String,
    /// Who made it: the person the server's authorship record names for its actor; `None` when it names nobody.
    pub by: Option<String>,
    /// The operations it applied (`setText`, `addTimelineEntry,pin`, …), from its commit message: what the writer
    /// says it did, informative only.
    pub op: Option<String>,
    /// Whether the authorship record names its author (`by` is set).
    pub attributed: bool,
    /// The root keys it changed (template fields such as `summary`, and `pins`), sorted; the `updated` stamps,
    /// and the authorship record, which edits write beside their fields, are left out.
    pub fields: Vec<String>,
}

/// One page of the history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// How many changes the document has.
    pub total: usize,
    /// The position of the first change of this page in the whole history.
    pub offset: usize,
    /// The changes of this page, oldest first.
    pub changes: Vec<Change>,
}

/// A person holding a role over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpan {
    /// The role.
    pub role: Role,
    /// Who held it.
    pub person: String,
    /// From the change that gave it to them.
    pub from: DateTime<Utc>,
    /// Until the change that took it away; `None` while they hold it.
    pub to: Option<DateTime<Utc>>,
}

/// What an incident's history says about its response: who edited it and who held which role when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Everyone the authorship record names as the author of a change, sorted (the server itself left out).
    pub editors: Vec<String>,
    /// How many changes there are in all.
    pub changes: usize,
    /// How many of them the authorship record names no author for.
    pub unattributed: usize,
    /// Explicit role assignments as intervals, in the order they began. An undelegated role is held by the
    /// commander without a span of its own.
    pub roles: Vec<RoleSpan>,
}

impl Record {
    /// The commander's spans, oldest first.
    pub fn commanders(&self) -> impl Iterator<Item = &RoleSpan> {
        self.roles.iter().filter(|s| s.role == Role::Commander)
    }

    /// How many times command passed from one person to another (a commander cleared and later given to someone
    /// else counts once; given back to the same person, not at all).
    pub fn handoffs(&self) -> usize {
        self.commanders()
            .zip(self.commanders().skip(1))
            .filter(|(a, b)| a.person != b.person)
            .count()
    }

    /// The distinct people who held command, in the order they first did.
    pub fn distinct_commanders(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for span in self.commanders() {
            if !seen.contains(&span.person.as_str()) {
                seen.push(&span.person);
            }
        }
        seen
    }

    /// The responders: the editors, the people who held a role and the authors of timeline entries in `view`,
    /// sorted. Bots that write to the timeline count: they are part of the response as the document saw it.
    pub fn responders(&self, view: &IncidentView) -> Vec<String> {
        let mut people: BTreeSet<String> = self.editors.iter().cloned().collect();
        people.extend(self.roles.iter().map(|s| s.person.clone()));
        if let Some(FieldValue::Timeline(entries)) =
            view.field_of_kind(FieldKind::Timeline).map(|f| &f.value)
        {
            people.extend(entries.iter().map(|e| e.author.clone()));
        }
        people.retain(|p| !p.trim().is_empty());
        people.into_iter().collect()
    }
}

/// The commit message [`Incident`]'s operations write (see `Incident::commit`), read back for its operation names
/// (its `by` is a claim, not a record).
#[derive(Deserialize)]
struct Message {
    /// The operations' names.
    op: String,
}

/// A change's metadata, owned, in the causal order of [`ordered`].
struct Meta {
    hash: ChangeHash,
    deps: Vec<ChangeHash>,
    /// Seconds since the epoch as written; 0 when the writer gave none.
    time: i64,
    /// For ordering: `time`, or for a change without one, the latest time among its dependencies.
    when: i64,
    actor: ActorId,
    /// The author the record names for the actor.
    by: Option<String>,
    message: Option<Message>,
}

impl Meta {
    fn at(&self) -> Option<DateTime<Utc>> {
        (self.time > 0)
            .then(|| Utc.timestamp_opt(self.time, 0).single())
            .flatten()
    }
}

/// Every change, dependencies first; among changes free to go in either order, the earliest (then the lowest
/// hash) first.
fn ordered(doc: &Automerge) -> Vec<Meta> {
    let authors = authors(doc);
    let metas: Vec<_> = doc.get_changes_meta(&[]);
    let index: HashMap<ChangeHash, usize> =
        metas.iter().enumerate().map(|(i, m)| (m.hash, i)).collect();
    let mut waiting: Vec<usize> = metas
        .iter()
        .map(|m| m.deps.iter().filter(|d| index.contains_key(d)).count())
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); metas.len()];
    for (i, m) in metas.iter().enumerate() {
        for dep in &m.deps {
            if let Some(&d) = index.get(dep) {
                dependents[d].push(i);
            }
        }
    }
    let mut when: Vec<i64> = metas.iter().map(|m| m.timestamp.max(0)).collect();
    let mut ready: BinaryHeap<Reverse<(i64, ChangeHash, usize)>> = metas
        .iter()
        .enumerate()
        .filter(|(i, _)| waiting[*i] == 0)
        .map(|(i, m)| Reverse((when[i], m.hash, i)))
        .collect();
    let mut order = Vec::with_capacity(metas.len());
    while let Some(Reverse((_, _, i))) = ready.pop() {
        order.push(i);
        for &next in &dependents[i] {
            if metas[next].timestamp <= 0 {
                when[next] = when[next].max(when[i]);
            }
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(Reverse((when[next], metas[next].hash, next)));
            }
        }
    }
    order
        .into_iter()
        .map(|i| {
            let m = &metas[i];
            Meta {
                hash: m.hash,
                deps: m.deps.clone(),
                time: m.timestamp,
                when: when[i],
                actor: m.actor.clone().into_owned(),
                by: authors.get(m.actor.as_ref()).cloned(),
                message: m
                    .message
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok()),
            }
        })
        .collect()
}

/// The authorship record: actor → person, as the server wrote it under `authors`.
fn authors(doc: &Automerge) -> HashMap<ActorId, String> {
    let r = Reader::new(doc, None);
    let Some(map) = r.map(&automerge::ROOT, keys::AUTHORS) else {
        return HashMap::new();
    };
    r.keys(&map)
        .into_iter()
        .filter_map(|hex| {
            let actor = ActorId::try_from(hex.as_str()).ok()?;
            Some((actor, r.str(&map, hex.as_str())?))
        })
        .collect()
}

/// `heads` and everything they depend on.
fn ancestors(metas: &[Meta], heads: &[ChangeHash]) -> HashSet<ChangeHash> {
    let deps: HashMap<ChangeHash, &[ChangeHash]> =
        metas.iter().map(|m| (m.hash, m.deps.as_slice())).collect();
    let mut seen = HashSet::new();
    let mut stack: Vec<ChangeHash> = heads.to_vec();
    while let Some(hash) = stack.pop() {
        if let Some(ds) = deps.get(&hash)
            && seen.insert(hash)
        {
            stack.extend(ds.iter().copied());
        }
    }
    seen
}

/// The changes of a causally closed set that nothing else in it depends on, sorted.
fn heads_of(metas: &[Meta], set: &HashSet<ChangeHash>) -> Vec<ChangeHash> {
    let covered: HashSet<ChangeHash> = metas
        .iter()
        .filter(|m| set.contains(&m.hash))
        .flat_map(|m| m.deps.iter().copied())
        .collect();
    let mut heads: Vec<ChangeHash> = set.difference(&covered).copied().collect();
    heads.sort();
    heads
}

/// Finds the template field (or other root key) each object of the document lives under, remembering answers:
/// every keystroke in a text is an operation on the same object.
struct RootKeys<'a> {
    doc: &'a Automerge,
    known: HashMap<ObjId, Option<String>>,
}

impl<'a> RootKeys<'a> {
    fn new(doc: &'a Automerge) -> RootKeys<'a> {
        RootKeys {
            doc,
            known: HashMap::new(),
        }
    }

    /// The root keys `change` wrote under, without the bookkeeping every edit writes (`updated` stamps, `authors`).
    fn touched(&mut self, change: &automerge::Change) -> Vec<String> {
        let mut keys = BTreeSet::new();
        for op in change.decode().operations {
            let key = match (&op.obj, &op.key) {
                (ObjectId::Root, Key::Map(k)) => Some(k.to_string()),
                (ObjectId::Root, Key::Seq(_)) => None,
                (ObjectId::Id(id), _) => self.root_key(ObjId::Id(id.0, id.1.clone(), usize::MAX)),
            };
            keys.extend(key);
        }
        keys.remove(keys::UPDATED);
        keys.remove(keys::AUTHORS);
        keys.into_iter().collect()
    }

    /// The root key `obj` hangs under, now or, for a deleted object, when it existed. (An object id that names the
    /// actor by its full id is found whatever the actor's index in this document; see `ExId`'s equality.)
    fn root_key(&mut self, obj: ObjId) -> Option<String> {
        if let Some(known) = self.known.get(&obj) {
            return known.clone();
        }
        let key = self
            .doc
            .parents(&obj)
            .ok()
            .and_then(|parents| parents.last())
            .and_then(|top| match top.prop {
                Prop::Map(k) => Some(k),
                Prop::Seq(_) => None,
            });
        self.known.insert(obj, key.clone());
        key
    }
}

/// The document's changes by hash, for reading their operations.
fn changes_by_hash(doc: &Automerge) -> HashMap<ChangeHash, automerge::Change> {
    doc.get_changes(&[])
        .into_iter()
        .map(|c| (c.hash(), c))
        .collect()
}

impl Incident {
    /// The heads of the document as it was at `at`: every change stamped at or before `at` (change times are whole
    /// seconds), with whatever those changes built on, even if their writer's clock put that later. A change with no
    /// time counts only through the timed changes that build on it. `None` when no change is that old: the
    /// incident did not exist yet.
    pub fn heads_at(&mut self, at: DateTime<Utc>) -> Option<Vec<ChangeHash>> {
        let doc = self.doc_mut().document();
        let metas = ordered(doc);
        let seconds = at.timestamp();
        let stamped: Vec<ChangeHash> = metas
            .iter()
            .filter(|m| m.time > 0 && m.time <= seconds)
            .map(|m| m.hash)
            .collect();
        if stamped.is_empty() {
            return None;
        }
        let set = ancestors(&metas, &stamped);
        Some(heads_of(&metas, &set))
    }

    /// `limit` changes of the history from position `offset`, oldest first, with the total count.
    pub fn history(&mut self, offset: usize, limit: usize) -> HistoryPage {
        let doc = self.doc_mut().document();
        let metas = ordered(doc);
        let total = metas.len();
        let page: Vec<&Meta> = metas.iter().skip(offset).take(limit).collect();
        let mut full = if page.is_empty() {
            HashMap::new()
        } else {
            changes_by_hash(doc)
        };
        let mut roots = RootKeys::new(doc);
        let changes = page
            .into_iter()
            .map(|m| Change {
                hash: m.hash.to_string(),
                at: m.at(),
                actor: m.actor.to_hex_string(),
                by: m.by.clone(),
                op: m.message.as_ref().map(|msg| msg.op.clone()),
                attributed: m.by.is_some(),
                fields: full
                    .remove(&m.hash)
                    .map(|c| roots.touched(&c))
                    .unwrap_or_default(),
            })
            .collect();
        HistoryPage {
            total,
            offset,
            changes,
        }
    }

    /// What the history up to `heads` (`None`: all of it) says about the response: editors and role intervals.
    /// Role intervals are read at each change that touched the roles field, replaying the changes in the order of
    /// the history; a span ends at `heads` still open.
    pub fn record(&mut self, heads: Option<&[ChangeHash]>) -> Record {
        let doc = self.doc_mut().document();
        let mut metas = ordered(doc);
        if let Some(heads) = heads {
            let keep = ancestors(&metas, heads);
            metas.retain(|m| keep.contains(&m.hash));
        }
        let roles_def = read_layout(&Reader::new(doc, heads))
            .into_iter()
            .find(|f| f.kind == FieldKind::Roles);
        let editors: BTreeSet<String> = metas
            .iter()
            .filter_map(|m| m.by.clone())
            .filter(|by| by != SERVER_NAME)
            .collect();
        let mut record = Record {
            editors: editors.into_iter().collect(),
            changes: metas.len(),
            unattributed: metas.iter().filter(|m| m.by.is_none()).count(),
            roles: Vec::new(),
        };
        let Some(roles_def) = roles_def else {
            return record;
        };
        let full = changes_by_hash(doc);
        let mut roots = RootKeys::new(doc);
        let mut now: BTreeSet<ChangeHash> = BTreeSet::new();
        let mut holding: BTreeMap<Role, usize> = BTreeMap::new();
        for m in &metas {
            for dep in &m.deps {
                now.remove(dep);
            }
            now.insert(m.hash);
            let touched = full
                .get(&m.hash)
                .is_some_and(|c| roots.touched(c).contains(&roles_def.key));
            if !touched {
                continue;
            }
            let heads: Vec<ChangeHash> = now.iter().copied().collect();
            let FieldValue::Roles(roles) = read_value(&Reader::new(doc, Some(&heads)), &roles_def)
            else {
                continue;
            };
            let when = Utc
                .timestamp_opt(m.when, 0)
                .single()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
            for role in Role::ALL {
                let held = holding.get(role).map(|&i| record.roles[i].person.as_str());
                let next = roles.get(role).map(String::as_str);
                if held == next {
                    continue;
                }
                if let Some(i) = holding.remove(role) {
                    record.roles[i].to = Some(when);
                }
                if let Some(person) = next {
                    holding.insert(*role, record.roles.len());
                    record.roles.push(RoleSpan {
                        role: *role,
                        person: person.to_owned(),
                        from: when,
                        to: None,
                    });
                }
            }
        }
        record
    }
}
