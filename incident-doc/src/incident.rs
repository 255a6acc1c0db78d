//! [`Incident`]: an Automerge document that follows the schema, created from a template and edited through
//! [`Operation`]s.

use automerge::transaction::{CommitOptions, Transactable};
use std::collections::{BTreeSet, HashMap};

use automerge::{ActorId, AutoCommit, Change, ChangeHash, LoadOptions, ObjType, ROOT, ReadDoc};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::edit::{self, Applied, Editor, OpError};
use crate::operation::{self, Operation};
use crate::read::Reader;
use crate::rules::{self, CommandState, Violation};
use crate::schema::{
    EXIT_CRITERIA_KEY, FieldDef, FieldKind, Role, SCHEMA_VERSION, Stage, Status, TEXT_ENCODING,
    TITLE_KEY, keys,
};
use crate::template::{FieldDefault, Template};
use crate::touched::{self, Places, Touched};
use crate::view::{
    Cadences, FieldValue, Headline, IncidentView, read_layout, read_stamp, read_value,
};

/// A live incident document. Wraps the Automerge value so that every edit goes through the schema's operations,
/// while sync and storage still reach the raw document through [`Incident::doc_mut`].
#[derive(Debug)]
pub struct Incident {
    /// The CRDT; owned here so there is one place that knows the text encoding and commit conventions.
    doc: AutoCommit,
    /// The layout, read once: creation writes it and the server refuses every later change to it, so the rules
    /// find the keys they guard here, never in what a client may have just written (a change deleting `layout`
    /// would otherwise blind them). Not kept while empty: a replica starts empty and receives it by sync.
    layout: Option<Vec<FieldDef>>,
    /// Set on the server's replica: the actor it writes each person's changes with (see [`Incident::govern`]).
    authority: Option<Authority>,
    /// Changes held back for a missing dependency whose actors the authorship record does not know yet: the actor
    /// and who sent it, recorded when the change is applied (a record never names an actor with no change).
    held_authors: HashMap<ChangeHash, (ActorId, String)>,
    /// What the command rules read, as of the heads given, with or without the timeline: the `before` of the next
    /// [`Incident::enforce`], which would otherwise read it at past heads, where every Automerge lookup first walks
    /// the history to build a clock (most of a busy war room's CPU once, BENCHMARKS.md). Keyed by heads, so any
    /// other change to the document (HTTP edits, other nodes' chunks) simply misses it.
    governed: Option<(Vec<ChangeHash>, bool, CommandState)>,
    /// Where the objects that peers' changes wrote to sit, so that finding what a keystroke touched costs a lookup
    /// per object, not a diff of the document (see [`touched`]).
    places: Places,
}

/// The server's side of the authorship record: which Automerge actor this replica writes each person's changes
/// with. One actor per person (per loaded replica), recorded under `authors`, so every change's author is a fact
/// the server wrote rather than a claim the change makes about itself.
#[derive(Debug)]
struct Authority {
    /// For reproducible documents (tests, golden files): each person's actor is this one followed by their name.
    /// `None`: random actors, fresh for every loaded replica, so no two replicas ever share one.
    base: Option<ActorId>,
    /// Person → the actor this replica writes their changes with.
    actors: HashMap<String, ActorId>,
}

/// What the declarer says when opening an incident.
#[derive(Debug, Clone, Default)]
pub struct Declaration {
    /// The incident's name; the title becomes `<name>: <date>`.
    pub name: String,
    /// The incident number the server allocated.
    pub number: Option<i64>,
}

/// Why a document could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not an Automerge document.
    #[error("not a valid Automerge document: {0}")]
    Corrupt(String),
}

/// The commit message every operation leaves, so history can say who changed which fields.
#[derive(Debug, Serialize)]
struct CommitMessage<'a> {
    /// The editor's name.
    by: &'a str,
    /// The operation's name.
    op: &'a str,
    /// The fields whose stamp the operation updated.
    fields: &'a [String],
}

impl Incident {
    /// An empty document with the schema's text encoding. Pass an actor id for reproducible documents (tests,
    /// golden files); `None` picks a random one.
    pub fn empty(actor: Option<ActorId>) -> Incident {
        let mut doc = AutoCommit::new_with_encoding(TEXT_ENCODING);
        if let Some(actor) = actor {
            doc.set_actor(actor);
        }
        Incident {
            doc,
            layout: None,
            authority: None,
            held_authors: HashMap::new(),
            governed: None,
            places: Places::default(),
        }
    }

    /// Makes this replica the authority over the document, as the server's is: every change it commits from now
    /// on is written with an actor of its editor's own and recorded under `authors`, and the command rules read the
    /// layout it holds. Clients' replicas never call this: they cannot write the authorship record.
    pub fn govern(&mut self) {
        let base = self.authority.take().and_then(|a| a.base);
        self.authority = Some(Authority {
            base,
            actors: HashMap::new(),
        });
    }

    /// The person the authorship record names for `actor`, if any.
    pub fn author_of(&self, actor: &ActorId) -> Option<String> {
        author_of(&self.doc, actor)
    }

    /// Switches, in a fresh transaction, to the actor this replica writes `name`'s changes with and records it
    /// under `authors` if it is not yet. Does nothing on a client's replica.
    fn speak_as(&mut self, name: &str) -> Result<(), automerge::AutomergeError> {
        match self.actor_for(name) {
            Some(actor) => self.record_author(&actor, name),
            None => Ok(()),
        }
    }

    /// Switches to the actor this replica writes `name`'s changes with (a fresh one the first time) and returns
    /// it, without writing anything yet; `None` on a client's replica.
    fn actor_for(&mut self, name: &str) -> Option<ActorId> {
        let authority = self.authority.as_mut()?;
        let actor = match authority.actors.get(name) {
            Some(actor) => actor.clone(),
            None => {
                let derived = authority.base.as_ref().map(|base| {
                    let mut bytes = base.to_bytes().to_vec();
                    bytes.extend_from_slice(name.as_bytes());
                    ActorId::from(bytes)
                });
                // A derived actor someone else already holds (a client chose it) is not reused.
                let actor = derived
                    .filter(|actor| author_of(&self.doc, actor).is_none_or(|n| n == name))
                    .unwrap_or_else(ActorId::random);
                authority.actors.insert(name.to_owned(), actor.clone());
                actor
            }
        };
        if self.doc.get_actor() != &actor {
            self.doc.set_actor(actor.clone());
        }
        Some(actor)
    }

    /// Records `actor` as `name`'s in the open transaction, unless it already is.
    fn record_author(
        &mut self,
        actor: &ActorId,
        name: &str,
    ) -> Result<(), automerge::AutomergeError> {
        if author_of(&self.doc, actor).as_deref() != Some(name) {
            bind(&mut self.doc, actor, name)?;
        }
        Ok(())
    }

    /// A new incident from `template`, declared by `editor`: one change that writes the layout, every field's
    /// starting value and the bookkeeping maps, so that later concurrent edits never race to create containers.
    pub fn create(
        template: &Template,
        declaration: &Declaration,
        editor: &Editor,
        actor: Option<ActorId>,
    ) -> Result<Incident, OpError> {
        let name = declaration.name.trim();
        if name.is_empty()
            || name.contains(['\n', '\r'])
            || name.chars().count() > edit::MAX_SHORT_CHARS
        {
            return Err(OpError::InvalidValue(format!(
                "the incident name must be one non-empty line of at most {} characters",
                edit::MAX_SHORT_CHARS
            )));
        }
        let base = actor.clone();
        let mut incident = Incident::empty(actor);
        incident.authority = Some(Authority {
            base,
            actors: HashMap::new(),
        });
        incident.speak_as(&editor.name)?;
        incident.write_template(template, name, declaration.number, editor)?;
        incident.commit(editor, "create", &[]);
        Ok(incident)
    }

    fn write_template(
        &mut self,
        template: &Template,
        name: &str,
        number: Option<i64>,
        editor: &Editor,
    ) -> Result<(), OpError> {
        let doc = &mut self.doc;
        doc.put(ROOT, keys::SCHEMA_VERSION, SCHEMA_VERSION)?;
        doc.put(ROOT, keys::TEMPLATE, template.id.as_str())?;
        doc.put(ROOT, keys::TEMPLATE_NAME, template.name.as_str())?;
        doc.put(ROOT, keys::TEMPLATE_VERSION, template.version.as_str())?;
        doc.put(ROOT, keys::CREATED_AT, edit::timestamp(editor.at))?;
        doc.put(ROOT, keys::CREATED_BY, editor.name.as_str())?;
        doc.put(ROOT, keys::DRILL, template.drill)?;
        if template.restricted {
            let access = doc.put_object(ROOT, keys::ACCESS, ObjType::Map)?;
            doc.put(&access, "restricted", true)?;
            doc.put_object(&access, "members", ObjType::List)?;
        }
        template.checkins.write(doc)?;
        if let Some(n) = number {
            doc.put(ROOT, keys::NUMBER, n)?;
        }
        doc.put_object(ROOT, keys::UPDATED, ObjType::Map)?;
        doc.put_object(ROOT, keys::PINS, ObjType::List)?;
        let layout = doc.put_object(ROOT, keys::LAYOUT, ObjType::List)?;
        for (i, field) in template.fields.iter().enumerate() {
            let def = &field.def;
            let m = doc.insert_object(&layout, i, ObjType::Map)?;
            doc.put(&m, "key", def.key.as_str())?;
            doc.put(&m, "label", def.label.as_str())?;
            doc.put(&m, "kind", def.kind.as_str())?;
            if let Some(owner) = def.owner {
                doc.put(&m, "owner", owner.as_str())?;
            }
            if let Some(c) = def.cadence_minutes {
                doc.put(&m, "cadenceMinutes", c)?;
            }
            if !def.cadence_by_severity.is_empty() {
                let by = doc.put_object(&m, "cadenceBySeverity", ObjType::Map)?;
                for (severity, minutes) in &def.cadence_by_severity {
                    doc.put(&by, severity.as_str(), *minutes)?;
                }
            }
            doc.put(&m, "stamp", def.stamp)?;
            if let Some(p) = &def.prompt {
                doc.put(&m, "prompt", p.as_str())?;
            }
            if !def.options.is_empty() {
                let opts = doc.put_object(&m, "options", ObjType::List)?;
                for (j, o) in def.options.iter().enumerate() {
                    let om = doc.insert_object(&opts, j, ObjType::Map)?;
                    doc.put(&om, "key", o.key.as_str())?;
                    doc.put(&om, "label", o.label.as_str())?;
                }
            }

            let key = def.key.as_str();
            match def.kind {
                FieldKind::Text | FieldKind::Markdown => {
                    let t = doc.put_object(ROOT, key, ObjType::Text)?;
                    let initial = if key == TITLE_KEY {
                        format!("{name}: {}", editor.at.format("%Y-%m-%d"))
                    } else if let FieldDefault::Text(s) = &field.default {
                        s.clone()
                    } else {
                        String::new()
                    };
                    doc.splice_text(&t, 0, 0, &initial)?;
                }
                FieldKind::Status => doc.put(ROOT, key, Status::Declared.as_str())?,
                FieldKind::Choice => match &field.default {
                    FieldDefault::Choice(c) => doc.put(ROOT, key, c.as_str())?,
                    _ => doc.put(ROOT, key, automerge::ScalarValue::Null)?,
                },
                FieldKind::Flag => {
                    doc.put(ROOT, key, matches!(field.default, FieldDefault::Flag(true)))?;
                }
                FieldKind::Roles => {
                    let m = doc.put_object(ROOT, key, ObjType::Map)?;
                    // Whoever declares commands until they hand over.
                    doc.put(&m, Role::Commander.as_str(), editor.name.as_str())?;
                }
                FieldKind::Checklist => {
                    let list = doc.put_object(ROOT, key, ObjType::List)?;
                    if let FieldDefault::Items(items) = &field.default {
                        for (text, done) in items {
                            operation::insert_item(doc, &list, text, *done)?;
                        }
                    }
                }
                FieldKind::Timeline | FieldKind::Deviations | FieldKind::Changes => {
                    doc.put_object(ROOT, key, ObjType::List)?;
                }
                FieldKind::Timestamps => {
                    let m = doc.put_object(ROOT, key, ObjType::Map)?;
                    doc.put(&m, Stage::Declared.as_str(), edit::timestamp(editor.at))?;
                }
                FieldKind::Questions => {
                    doc.put_object(ROOT, key, ObjType::Map)?;
                }
            }
            edit::stamp(doc, key, editor)?;
        }
        Ok(())
    }

    /// Loads a saved document (snapshot followed by any incremental chunks), with the schema's text encoding.
    pub fn load(bytes: &[u8]) -> Result<Incident, LoadError> {
        let doc =
            AutoCommit::load_with_options(bytes, LoadOptions::new().text_encoding(TEXT_ENCODING))
                .map_err(|e| LoadError::Corrupt(e.to_string()))?;
        Ok(Incident {
            doc,
            layout: None,
            authority: None,
            held_authors: HashMap::new(),
            governed: None,
            places: Places::default(),
        })
    }

    /// Applies one operation as one Automerge change. On error nothing changes.
    pub fn apply(&mut self, op: &Operation, editor: &Editor) -> Result<Applied, OpError> {
        let mut applied = self.apply_all(std::slice::from_ref(op), editor)?;
        Ok(applied.pop().unwrap_or_default())
    }

    /// Applies several operations as one Automerge change: all of them or, on the first refusal, none.
    pub fn apply_all(
        &mut self,
        ops: &[Operation],
        editor: &Editor,
    ) -> Result<Vec<Applied>, OpError> {
        let layout = self.take_layout();
        let result = if edit::is_archived(&Reader::new(&self.doc, None), &layout) {
            self.apply_archived(&layout, ops, editor)
        } else {
            self.apply_with(&layout, ops, editor)
        };
        self.keep_layout(layout);
        result
    }

    /// A closed incident is evidence: it accepts one batch only, a lone [`Operation::Reopen`]. That is an admin's
    /// decision (the server checks the scope), so the command rules, which let the status only move forward, do
    /// not judge it.
    fn apply_archived(
        &mut self,
        layout: &[FieldDef],
        ops: &[Operation],
        editor: &Editor,
    ) -> Result<Vec<Applied>, OpError> {
        let [op @ Operation::Reopen { .. }] = ops else {
            return Err(OpError::Archived);
        };
        self.speak_as(&editor.name)?;
        match operation::apply(&mut self.doc, layout, op, editor) {
            Ok((applied, fields)) => {
                self.commit(editor, op.name(), &fields);
                Ok(vec![applied])
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }

    /// Whether the incident is closed and so archived: it accepts no change but a reopening, which
    /// [`Incident::apply_all`] enforces for typed operations. Whoever checks raw changes (sync messages from other
    /// clients) asks this of the document as it was before them.
    pub fn archived(&mut self) -> bool {
        let layout = self.take_layout();
        let archived = edit::is_archived(&Reader::new(&self.doc, None), &layout);
        self.keep_layout(layout);
        archived
    }

    /// The layout: the one read before, or read now. A document whose layout was deleted before the server refused
    /// such changes still has the one its creation wrote, in its first change.
    pub(crate) fn take_layout(&mut self) -> Vec<FieldDef> {
        if let Some(layout) = self.layout.take() {
            return layout;
        }
        let now = read_layout(&Reader::new(&self.doc, None));
        if !now.is_empty() {
            return now;
        }
        match self
            .doc
            .get_changes(&[])
            .first()
            .map(automerge::Change::hash)
        {
            Some(first) => read_layout(&Reader::new(&self.doc, Some(&[first]))),
            None => now,
        }
    }

    /// Holds the layout from now on, reading it if it is not held yet. The server's replica calls this before it
    /// takes changes from a peer, so the command rules guard the layout as it was before any of them, never as a
    /// peer's change just rewrote it.
    pub fn hold_layout(&mut self) {
        let layout = self.take_layout();
        self.keep_layout(layout);
    }

    /// Keeps the layout for the next call, unless it is still empty (a replica waiting for its first sync).
    pub(crate) fn keep_layout(&mut self, layout: Vec<FieldDef>) {
        if !layout.is_empty() {
            self.layout = Some(layout);
        }
    }

    /// Whether changes that wrote only root keys `touched` leave everything an index row reads as it was (the
    /// headline, who may see the incident, the commander, the chat channel): true when each is the prose of a field
    /// no row shows (every kind but the title, status, choices, flags and roles) or a stamp. Lets the server keep
    /// a row across keystrokes instead of reading it again after each.
    pub fn index_row_unaffected(&mut self, touched: &BTreeSet<String>) -> bool {
        let layout = self.take_layout();
        let prose = |key: &String| {
            key == keys::UPDATED
                || layout.iter().any(|def| {
                    def.key == *key
                        && def.key != TITLE_KEY
                        && matches!(
                            def.kind,
                            FieldKind::Text
                                | FieldKind::Markdown
                                | FieldKind::Checklist
                                | FieldKind::Timeline
                                | FieldKind::Questions
                                | FieldKind::Deviations
                                | FieldKind::Changes
                        )
                })
        };
        let unaffected = touched.iter().all(prose);
        self.keep_layout(layout);
        unaffected
    }

    /// The few facts an index needs (title, status, severity, …), cheap enough to read after every change.
    pub fn headline(&mut self) -> Headline {
        let layout = self.take_layout();
        let headline = Headline::read_with(&Reader::new(&self.doc, None), &layout);
        self.keep_layout(layout);
        headline
    }

    /// The Incident Commander now, if one is named: the incident list shows who to call on every row, so the index
    /// keeps it beside the headline, read after every change as cheaply (the roles field alone).
    pub fn commander(&mut self) -> Option<String> {
        let layout = self.take_layout();
        let r = Reader::new(&self.doc, None);
        let commander = match layout.iter().find(|d| d.kind == FieldKind::Roles) {
            Some(def) => match read_value(&r, def) {
                FieldValue::Roles(mut roles) => roles.remove(&Role::Commander),
                _ => None,
            },
            None => None,
        };
        self.keep_layout(layout);
        commander
    }

    fn apply_with(
        &mut self,
        layout: &[FieldDef],
        ops: &[Operation],
        editor: &Editor,
    ) -> Result<Vec<Applied>, OpError> {
        let before = self.doc.get_heads();
        let mut applied = Vec::with_capacity(ops.len());
        let mut touched: Vec<String> = Vec::new();
        self.speak_as(&editor.name)?;
        for op in ops {
            match operation::apply(&mut self.doc, layout, op, editor) {
                Ok((a, fields)) => {
                    applied.push(a);
                    for f in fields {
                        if !touched.contains(&f) {
                            touched.push(f);
                        }
                    }
                }
                Err(e) => {
                    self.doc.rollback();
                    return Err(e);
                }
            }
        }
        // The command rules see the whole batch at once, as they would see one change arriving over sync.
        let with_timeline = ops.iter().any(|op| {
            matches!(
                op,
                Operation::EditTimelineEntry { .. }
                    | Operation::RemoveTimelineEntry { .. }
                    | Operation::AddDeviation { .. }
                    | Operation::EditDeviation { .. }
                    | Operation::MarkReverted { .. }
                    | Operation::LogChange { .. }
            )
        });
        let was = CommandState::read(&self.doc, layout, Some(&before), with_timeline);
        let is = CommandState::read(&self.doc, layout, None, with_timeline);
        let violations = rules::check(&was, &is, editor, editor.at);
        if !violations.is_empty() {
            self.doc.rollback();
            let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
            return Err(OpError::Forbidden(messages.join("; ")));
        }
        let names: Vec<&str> = ops.iter().map(Operation::name).collect();
        self.commit(editor, &names.join(","), &touched);
        Ok(applied)
    }

    fn commit(&mut self, editor: &Editor, op: &str, fields: &[String]) {
        let message = serde_json::to_string(&CommitMessage {
            by: &editor.name,
            op,
            fields,
        })
        .unwrap_or_default();
        self.doc.commit_with(
            CommitOptions::default()
                .with_message(message)
                .with_time(editor.at.timestamp()),
        );
    }

    /// Holds the changes merged since `before` (raw Automerge changes from one sync peer, sent by `sender`) to the
    /// schema and the command rules: whatever breaks one is put back as it was in one change by `server`, each
    /// attempt is appended to the audit trail, and the violations are returned (empty: the changes stand as they
    /// are). [`Incident::receive_sync`] does this for every sync message, and records the sender's new actors.
    ///
    /// The rules only look at the parts they govern, and only when the changes touched them (the roles, handoffs,
    /// pins, status and timeline keys, the stamps), so ordinary typing costs one small diff.
    pub fn enforce(
        &mut self,
        before: &[ChangeHash],
        sender: &Editor,
        server: &Editor,
    ) -> Vec<Violation> {
        self.enforce_recording(before, sender, server, &[], &[]).0
    }

    /// Of `newcomers` (changes `sender` just sent, under actors the record does not know), the actors whose changes
    /// are now applied, with whose they are, and those of changes held back earlier that are applied now; the
    /// rest is kept until their changes apply.
    pub(crate) fn applied_authors(
        &mut self,
        newcomers: Vec<(ChangeHash, ActorId)>,
        sender: &str,
    ) -> Vec<(ActorId, String)> {
        for (hash, actor) in newcomers {
            self.held_authors.insert(hash, (actor, sender.to_owned()));
        }
        let doc = self.doc.document();
        let mut applied = Vec::new();
        self.held_authors.retain(|hash, (actor, name)| {
            let done = doc.get_change_meta_by_hash(hash).is_some();
            if done && !applied.iter().any(|(a, _)| a == actor) {
                applied.push((actor.clone(), name.clone()));
            }
            !done
        });
        applied
    }

    /// [`Incident::enforce`], recording `newcomers` (actors of applied changes the authorship record does not know
    /// yet, with whose they are) in the same change. `merged` are the changes merged since `before` when the caller
    /// holds them (a sync message's), which makes finding what they touched cheap; any others, or none, cost a
    /// diff. Besides the violations, returns the root keys the merged changes wrote when they stand as they came
    /// (`None` when the server wrote a change of its own too).
    pub(crate) fn enforce_recording(
        &mut self,
        before: &[ChangeHash],
        sender: &Editor,
        server: &Editor,
        newcomers: &[(ActorId, String)],
        merged: &[Change],
    ) -> (Vec<Violation>, Option<BTreeSet<String>>) {
        let after = self.doc.get_heads();
        if after.as_slice() == before && newcomers.is_empty() {
            return (Vec::new(), Some(BTreeSet::new()));
        }
        let touched = touched::by_ops(
            &mut self.doc,
            &mut self.places,
            before,
            merged,
            &sender.name,
        )
        .unwrap_or_else(|| touched::by_diff(&mut self.doc, before, &after));
        let layout = self.take_layout();
        let violations = self.enforce_with(
            &layout,
            (before, &after),
            touched,
            sender,
            server,
            newcomers,
        );
        self.keep_layout(layout);
        violations
    }

    fn enforce_with(
        &mut self,
        layout: &[FieldDef],
        (before, after): (&[ChangeHash], &[ChangeHash]),
        touched: Touched,
        sender: &Editor,
        server: &Editor,
        newcomers: &[(ActorId, String)],
    ) -> (Vec<Violation>, Option<BTreeSet<String>>) {
        let (verdict, unchanged_state) = self.judge(layout, before, touched, sender, server);
        let unbound: Vec<&(ActorId, String)> = newcomers
            .iter()
            .filter(|(actor, _)| author_of(&self.doc, actor).is_none())
            .collect();
        if verdict.violations.is_empty() && unbound.is_empty() {
            self.governed = match (verdict.states, unchanged_state) {
                (Some((_, is, with_timeline)), _) => Some((after.to_vec(), with_timeline, is)),
                (None, Some((with_timeline, was))) => Some((after.to_vec(), with_timeline, was)),
                (None, None) => None,
            };
            return (verdict.violations, Some(verdict.touched));
        }
        // The server's actor first (before anything is written), the record last: a restored `authors` must not
        // drop what this change records.
        let server_actor = self.actor_for(&server.name);
        let written = (|| -> Result<(), automerge::AutomergeError> {
            if !verdict.violations.is_empty() {
                self.put_back(layout, before, &verdict, sender, server)?;
            }
            if let Some(actor) = &server_actor {
                self.record_author(actor, &server.name)?;
            }
            for (actor, name) in &unbound {
                bind(&mut self.doc, actor, name)?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => {
                let fields: Vec<String> = verdict.touched.into_iter().collect();
                let op = if verdict.violations.is_empty() {
                    "record authors"
                } else {
                    "revert"
                };
                self.commit(server, op, &fields);
            }
            // Not expected (the document accepted these shapes a moment ago); nothing is half-written.
            Err(_) => {
                self.doc.rollback();
            }
        }
        (verdict.violations, None)
    }

    /// Judges the changes between `before` and `after` against the schema, the authorship of stamps and the command
    /// rules, without writing anything. Besides the verdict, returns the command state to remember at `after` when
    /// the changes left what the rules read as it was (with whether it holds the timeline).
    fn judge(
        &mut self,
        layout: &[FieldDef],
        before: &[ChangeHash],
        touched: Touched,
        sender: &Editor,
        server: &Editor,
    ) -> (Verdict, Option<(bool, CommandState)>) {
        let key_of = |kind: FieldKind| {
            layout
                .iter()
                .find(|f| f.kind == kind)
                .map(|f| f.key.clone())
        };
        let Touched {
            keys: touched,
            stamps,
            signed,
        } = touched;
        let governed = [
            key_of(FieldKind::Roles),
            key_of(FieldKind::Status),
            Some(keys::HANDOFFS.to_owned()),
            Some(keys::PINS.to_owned()),
            Some(keys::ACCESS.to_owned()),
            Some(keys::CHAT_CHANNEL.to_owned()),
            Some(keys::OPERATIONS_DELEGATES.to_owned()),
        ];
        // The logs the rules keep append-only are read only when one of them changed.
        let timeline = [
            FieldKind::Timeline,
            FieldKind::Deviations,
            FieldKind::Changes,
        ]
        .into_iter()
        .any(|kind| key_of(kind).is_some_and(|k| touched.contains(&k)));
        let known = self
            .governed
            .take()
            .filter(|(heads, with_timeline, _)| heads == before && (*with_timeline || !timeline));
        let archived = match &known {
            Some((_, _, was)) => was.status == Some(Status::Closed),
            None => edit::is_archived(&Reader::new(&self.doc, Some(before)), layout),
        };
        // What the server owns, whatever else the change did.
        let foreign: Vec<String> = touched
            .iter()
            .filter(|key| !rules::client_writable(layout, key))
            .cloned()
            .collect();
        let forged_stamps = self.forged_stamps(&stamps, &signed, &sender.name);
        let mut violations = if archived {
            Vec::new()
        } else {
            schema_violations(&sender.name, &foreign, &forged_stamps)
        };
        let touches_rules = timeline
            || governed.iter().flatten().any(|k| touched.contains(k))
            || [EXIT_CRITERIA_KEY, keys::CLOSE_OVERRIDE]
                .iter()
                .any(|k| touched.contains(*k));
        let mut unchanged_state = None;
        let mut states = None;
        if archived {
            // A closed incident is an archive: every part of the change is put back.
            violations = vec![rules::archived_violation(&sender.name)];
        } else if touches_rules {
            let was = match known {
                Some((_, _, mut was)) => {
                    // Compared with a state read without the timeline, a remembered one must not have it either.
                    if !timeline {
                        was.forget_logs();
                    }
                    was
                }
                None => CommandState::read(&self.doc, layout, Some(before), timeline),
            };
            let mut is = CommandState::read(&self.doc, layout, None, timeline);
            if foreign.iter().any(|k| k == keys::CLOSE_OVERRIDE) {
                // A client's override is no override: only the server records one (HTTP `setStatus`).
                is.close_override.clone_from(&was.close_override);
            }
            if foreign.iter().any(|k| k == keys::AUDIT) {
                // Nor is an override of command a client writes into the audit trail (HTTP `overrideCommand`).
                is.command_overrides = was.command_overrides;
            }
            violations.extend(rules::check(&was, &is, sender, server.at));
            states = Some((was, is, timeline));
        } else {
            // What the rules read is as it was: remember it at the new heads.
            unchanged_state = known.map(|(_, with_timeline, was)| (with_timeline, was));
        }
        let verdict = Verdict {
            touched,
            stamps,
            archived,
            foreign,
            forged_stamps,
            states,
            violations,
        };
        (verdict, unchanged_state)
    }

    /// The fields of `stamps` whose stamp now names someone other than `sender`, who wrote it, unless `sender`'s own
    /// changes signed it (a stamp that lost a conflict to a concurrent one is no forgery).
    fn forged_stamps(
        &self,
        stamps: &BTreeSet<String>,
        signed: &BTreeSet<String>,
        sender: &str,
    ) -> Vec<String> {
        let r = Reader::new(&self.doc, None);
        let updated = r.map(&ROOT, keys::UPDATED);
        stamps
            .iter()
            .filter(|key| !signed.contains(*key))
            .filter(|key| {
                let by = updated
                    .as_ref()
                    .and_then(|map| r.map(map, key.as_str()))
                    .and_then(|stamp| r.str(&stamp, "by"));
                by.as_deref() != Some(sender)
            })
            .cloned()
            .collect()
    }

    /// Puts back, in the open transaction, what `verdict` found broken, and appends its violations to the audit
    /// trail.
    fn put_back(
        &mut self,
        layout: &[FieldDef],
        before: &[ChangeHash],
        verdict: &Verdict,
        sender: &Editor,
        server: &Editor,
    ) -> Result<(), automerge::AutomergeError> {
        let updated = Reader::new(&self.doc, None).map(&ROOT, keys::UPDATED);
        // The stamps a change wrote are put back one by one in the map they live in (rebuilding the whole map from
        // its past state would also rewrite every other field's stamp).
        let stamps_in_place = updated.is_some()
            && updated == Reader::new(&self.doc, Some(before)).map(&ROOT, keys::UPDATED);
        let restore: Vec<&String> = if verdict.archived {
            verdict
                .touched
                .iter()
                .filter(|key| !(stamps_in_place && key.as_str() == keys::UPDATED))
                .collect()
        } else {
            verdict.foreign.iter().collect()
        };
        for key in restore {
            rules::restore_key(&mut self.doc, &ROOT, key, before)?;
        }
        let stamps_to_restore: Vec<&String> = if verdict.archived && stamps_in_place {
            verdict.stamps.iter().collect()
        } else {
            verdict.forged_stamps.iter().collect()
        };
        if let Some(updated) = updated.filter(|_| !stamps_to_restore.is_empty()) {
            for key in stamps_to_restore {
                rules::restore_key(&mut self.doc, &updated, key, before)?;
            }
        }
        if let Some((was, is, _)) = &verdict.states {
            rules::revert(
                &mut self.doc,
                layout,
                (was, is),
                before,
                sender,
                server.at,
                &verdict.violations,
            )?;
        }
        self.audit(&verdict.violations, &sender.name, server.at)
    }

    /// Appends the violations to the audit trail, in the open transaction.
    fn audit(
        &mut self,
        violations: &[Violation],
        who: &str,
        at: DateTime<Utc>,
    ) -> Result<(), automerge::AutomergeError> {
        for violation in violations {
            let rule = serde_json::to_value(violation.rule)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            edit::append_audit(&mut self.doc, at, who, &rule, &violation.message)?;
        }
        Ok(())
    }

    /// The keys of the fields past their due time at `now` (the template's cadence, counted from the field's last
    /// update or the declaration).
    pub fn stale_fields(&mut self, now: DateTime<Utc>) -> Vec<String> {
        self.due_times()
            .into_iter()
            .filter(|(_, due)| *due < now)
            .map(|(key, _)| key)
            .collect()
    }

    /// Each field with a cadence and when it falls due, read from the stamps alone: cheap enough for the server to
    /// refresh after every change, so that counting stale fields later needs only the clock, not the document.
    pub fn due_times(&mut self) -> Vec<(String, DateTime<Utc>)> {
        // Read, not held, unless it already is: the server reads the due times of every incident it loads, and most
        // are only read, never edited (the layout was about 5 KB of each loaded idle incident). What edits it holds
        // the layout first (`apply_all`, and [`Incident::hold_layout`] for peers).
        let held = self.layout.is_some();
        let layout = self.take_layout();
        let r = Reader::new(&self.doc, None);
        let stamps = r.map(&ROOT, keys::UPDATED);
        let cadences = Cadences::read(&r, &layout);
        let due = layout
            .iter()
            // Only fields with a cadence have a due time: the others' stamps are not read.
            .filter(|def| cadences.applies(def))
            .filter_map(|def| {
                let updated = read_stamp(&r, stamps.as_ref(), &def.key);
                let due = cadences.due_at(def, updated.as_ref())?;
                Some((def.key.clone(), due))
            })
            .collect();
        if held {
            self.keep_layout(layout);
        }
        due
    }

    /// The document as plain data, now.
    pub fn view(&self) -> IncidentView {
        IncidentView::read(&self.doc, None)
    }

    /// The document as plain data, as it was at `heads`.
    pub fn view_at(&self, heads: &[ChangeHash]) -> IncidentView {
        IncidentView::read(&self.doc, Some(heads))
    }

    /// The Text object that a `spliceText` of `field` (and `item`, for a checklist item's text) edits, for a
    /// client that anchors carets and undo history to its characters; `None` when there is no such text.
    pub fn text_object(&self, field: &str, item: Option<&str>) -> Option<automerge::ObjId> {
        edit::text_of(&self.doc, field, item).ok()
    }

    /// The raw document, for reading heads and history.
    pub fn doc(&self) -> &AutoCommit {
        &self.doc
    }

    /// The raw document, for sync and storage. Edits must go through [`Incident::apply`].
    pub fn doc_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// The full document with its history, compressed. Changes held back for a dependency that never arrived
    /// (a peer may send such "orphans", by accident or on purpose) are left out: they are not part of the history,
    /// and a snapshot or export must not carry them.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save_with_options(automerge::SaveOptions {
            retain_orphans: false,
            ..Default::default()
        })
    }

    /// Whether `heads` are all known to this document (a point-in-time read needs that).
    pub fn has_heads(&self, heads: &[ChangeHash]) -> bool {
        heads
            .iter()
            .all(|h| self.doc.get_change_by_hash(h).is_some())
    }
}

/// How [`Incident::enforce`] judged a run of merged changes: what they touched, what of it breaks a rule, and
/// what putting it back needs.
struct Verdict {
    /// The root keys the changes wrote.
    touched: BTreeSet<String>,
    /// The fields whose stamps they wrote.
    stamps: BTreeSet<String>,
    /// The incident was closed before them: all of it is put back.
    archived: bool,
    /// Root keys they wrote that no client may write.
    foreign: Vec<String>,
    /// Stamps they wrote that name someone other than their sender.
    forged_stamps: Vec<String>,
    /// The command states before and after, and whether they hold the timeline; `None` when the rules did not run.
    states: Option<(CommandState, CommandState, bool)>,
    /// Every rule broken.
    violations: Vec<Violation>,
}

/// The violations of the schema (`foreign` root keys written) and of authorship (`forged_stamps`) by `sender`.
fn schema_violations(sender: &str, foreign: &[String], forged_stamps: &[String]) -> Vec<Violation> {
    let quoted = |keys: &[String]| {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut violations = Vec::new();
    if !foreign.is_empty() {
        violations.push(rules::Violation {
            rule: rules::Rule::Schema,
            message: format!(
                "{sender} may change the template's fields, stamps, pins and handoffs; {} {} the server's \
                 (written at creation or only by the server) or not part of the schema",
                quoted(foreign),
                if foreign.len() == 1 { "is" } else { "are" }
            ),
        });
    }
    if !forged_stamps.is_empty() {
        violations.push(rules::Violation {
            rule: rules::Rule::Authorship,
            message: format!(
                "a last-updated stamp {sender} writes names {sender} (the stamps of {} were put back)",
                quoted(forged_stamps)
            ),
        });
    }
    violations
}

/// The person `authors` names for `actor`, if any.
fn author_of(doc: &AutoCommit, actor: &ActorId) -> Option<String> {
    let r = Reader::new(doc, None);
    let authors = r.map(&ROOT, keys::AUTHORS)?;
    r.str(&authors, actor.to_hex_string().as_str())
}

/// Records `actor` as `name`'s in the open transaction.
fn bind(
    doc: &mut AutoCommit,
    actor: &ActorId,
    name: &str,
) -> Result<(), automerge::AutomergeError> {
    let authors = match doc.get(ROOT, keys::AUTHORS)? {
        Some((automerge::Value::Object(ObjType::Map), map)) => map,
        _ => doc.put_object(ROOT, keys::AUTHORS, ObjType::Map)?,
    };
    doc.put(&authors, actor.to_hex_string().as_str(), name)
}
