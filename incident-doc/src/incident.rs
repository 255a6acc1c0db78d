//! [`Incident`]: an Automerge document that follows the schema, created from a template and edited through
//! [`Operation`]s.

use automerge::transaction::{CommitOptions, Transactable};
use std::collections::BTreeSet;

use automerge::{
    ActorId, AutoCommit, ChangeHash, LoadOptions, ObjId, ObjType, PatchAction, Prop, ROOT, ReadDoc,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::operation::{self, Applied, Editor, OpError, Operation};
use crate::read::Reader;
use crate::rules::{self, CommandState, Violation};
use crate::schema::{
    EXIT_CRITERIA_KEY, FieldDef, FieldKind, SCHEMA_VERSION, Stage, Status, TEXT_ENCODING,
    TITLE_KEY, keys,
};
use crate::template::{FieldDefault, Template};
use crate::view::{
    Headline, IncidentView, due_at, read_layout, read_severity, read_stamp, root_object,
};

/// A live incident document. Wraps the Automerge value so that every edit goes through the schema's operations,
/// while sync and storage still reach the raw document through [`Incident::doc_mut`].
#[derive(Debug)]
pub struct Incident {
    /// The CRDT; owned here so there is one place that knows the text encoding and commit conventions.
    doc: AutoCommit,
    /// The layout as last read, with the identity (object id, length) of the list it was read from. Reading it
    /// costs about a hundred Automerge lookups, and the layout is written once at creation, so it is read again
    /// only when that identity changes (another client replaced or extended it).
    layout: Option<(ObjId, usize, Vec<FieldDef>)>,
    /// What the command rules read, as of the heads given, with or without the timeline: the `before` of the next
    /// [`Incident::enforce`], which would otherwise read it at past heads, where every Automerge lookup first walks
    /// the history to build a clock (most of a busy war room's CPU once, BENCHMARKS.md). Keyed by heads, so any
    /// other change to the document (HTTP edits, other nodes' chunks) simply misses it.
    governed: Option<(Vec<ChangeHash>, bool, CommandState)>,
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
            governed: None,
        }
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
            || name.chars().count() > operation::MAX_SHORT_CHARS
        {
            return Err(OpError::InvalidValue(format!(
                "the incident name must be one non-empty line of at most {} characters",
                operation::MAX_SHORT_CHARS
            )));
        }
        let mut incident = Incident::empty(actor);
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
        doc.put(ROOT, keys::CREATED_AT, operation::timestamp(editor.at))?;
        doc.put(ROOT, keys::CREATED_BY, editor.name.as_str())?;
        doc.put(ROOT, keys::DRILL, template.drill)?;
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
                    doc.put(
                        &m,
                        crate::schema::Role::Commander.as_str(),
                        editor.name.as_str(),
                    )?;
                }
                FieldKind::Checklist => {
                    let list = doc.put_object(ROOT, key, ObjType::List)?;
                    if let FieldDefault::Items(items) = &field.default {
                        for (text, done) in items {
                            operation::insert_item(doc, &list, text, *done)?;
                        }
                    }
                }
                FieldKind::Timeline => {
                    doc.put_object(ROOT, key, ObjType::List)?;
                }
                FieldKind::Timestamps => {
                    let m = doc.put_object(ROOT, key, ObjType::Map)?;
                    doc.put(
                        &m,
                        Stage::Declared.as_str(),
                        operation::timestamp(editor.at),
                    )?;
                }
                FieldKind::Questions => {
                    doc.put_object(ROOT, key, ObjType::Map)?;
                }
            }
            operation::stamp(doc, key, editor)?;
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
            governed: None,
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
        let result = if operation::is_archived(&Reader::new(&self.doc, None), &layout.2) {
            self.apply_archived(&layout.2, ops, editor)
        } else {
            self.apply_with(&layout.2, ops, editor)
        };
        self.layout = Some(layout);
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
        let archived = operation::is_archived(&Reader::new(&self.doc, None), &layout.2);
        self.layout = Some(layout);
        archived
    }

    /// The layout, from the cache when the stored list is still the one it was read from.
    fn take_layout(&mut self) -> (ObjId, usize, Vec<FieldDef>) {
        let list = root_object(&self.doc, keys::LAYOUT, ObjType::List).unwrap_or(ROOT);
        let len = self.doc.length(&list);
        match self.layout.take() {
            Some(cached) if cached.0 == list && cached.1 == len => cached,
            _ => (list, len, read_layout(&Reader::new(&self.doc, None))),
        }
    }

    /// The few facts an index needs (title, status, severity, …), cheap enough to read after every change.
    pub fn headline(&mut self) -> Headline {
        let layout = self.take_layout();
        let headline = Headline::read_with(&Reader::new(&self.doc, None), &layout.2);
        self.layout = Some(layout);
        headline
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
        let with_timeline = ops
            .iter()
            .any(|op| matches!(op, Operation::EditTimelineEntry { .. }));
        let was = CommandState::read(&self.doc, layout, Some(&before), with_timeline);
        let is = CommandState::read(&self.doc, layout, None, with_timeline);
        let violations = rules::check(&was, &is, &editor.name, editor.at);
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

    /// Holds the changes merged since `before` (raw Automerge changes from one sync peer, made by `who`) to the
    /// command rules: whatever breaks one is put back as it was in one change by `server`, each attempt is
    /// appended to the audit trail, and the violations are returned (empty: the changes stand as they are).
    ///
    /// The rules only look at the parts they govern, and only when the changes touched them (the roles, handoffs,
    /// pins, status and timeline keys), so ordinary typing costs one small diff.
    pub fn enforce(&mut self, before: &[ChangeHash], who: &str, server: &Editor) -> Vec<Violation> {
        let after = self.doc.get_heads();
        if after.as_slice() == before {
            return Vec::new();
        }
        let layout = self.take_layout();
        let violations = self.enforce_with(&layout.2, before, &after, who, server);
        self.layout = Some(layout);
        violations
    }

    fn enforce_with(
        &mut self,
        layout: &[FieldDef],
        before: &[ChangeHash],
        after: &[ChangeHash],
        who: &str,
        server: &Editor,
    ) -> Vec<Violation> {
        let key_of = |kind: FieldKind| {
            layout
                .iter()
                .find(|f| f.kind == kind)
                .map(|f| f.key.clone())
        };
        let touched: BTreeSet<String> = self
            .doc
            .diff(before, after)
            .into_iter()
            .filter_map(|patch| match (patch.path.first(), patch.action) {
                (Some((_, Prop::Map(key))), _) => Some(key.clone()),
                (None, PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key }) => {
                    Some(key)
                }
                _ => None,
            })
            .collect();
        let governed = [
            key_of(FieldKind::Roles),
            key_of(FieldKind::Status),
            Some(keys::HANDOFFS.to_owned()),
            Some(keys::PINS.to_owned()),
        ];
        let timeline = key_of(FieldKind::Timeline).is_some_and(|k| touched.contains(&k));
        let known = self
            .governed
            .take()
            .filter(|(heads, with_timeline, _)| heads == before && (*with_timeline || !timeline));
        let archived = match &known {
            Some((_, _, was)) => was.status == Some(Status::Closed),
            None => operation::is_archived(&Reader::new(&self.doc, Some(before)), layout),
        };
        if !archived && !timeline && !governed.iter().flatten().any(|k| touched.contains(k)) {
            // What the rules read is as it was, unless the change touched the rest of it.
            if ![EXIT_CRITERIA_KEY, keys::CLOSE_OVERRIDE]
                .iter()
                .any(|k| touched.contains(*k))
            {
                self.governed =
                    known.map(|(_, with_timeline, was)| (after.to_vec(), with_timeline, was));
            }
            return Vec::new();
        }
        let (violations, written) = if archived {
            // A closed incident is an archive: every part of the change is put back.
            let violations = vec![rules::archived_violation(who)];
            let written = touched
                .iter()
                .try_for_each(|key| rules::restore(&mut self.doc, key, before))
                .and_then(|()| self.audit(&violations, who, server.at));
            (violations, written)
        } else {
            let was = match known {
                Some((_, _, mut was)) => {
                    // Compared with a state read without the timeline, a remembered one must not have it either.
                    if !timeline {
                        was.entries.clear();
                    }
                    was
                }
                None => CommandState::read(&self.doc, layout, Some(before), timeline),
            };
            let is = CommandState::read(&self.doc, layout, None, timeline);
            let violations = rules::check(&was, &is, who, server.at);
            if violations.is_empty() {
                self.governed = Some((after.to_vec(), timeline, is));
                return violations;
            }
            let written = rules::revert(&mut self.doc, layout, &was, &violations)
                .and_then(|()| self.audit(&violations, who, server.at));
            (violations, written)
        };
        match written {
            Ok(()) => {
                let fields: Vec<String> = touched.into_iter().collect();
                self.commit(server, "revert", &fields);
            }
            // Not expected (the document accepted these shapes a moment ago); nothing is half-written.
            Err(_) => {
                self.doc.rollback();
            }
        }
        violations
    }

    /// Appends the violations to the audit trail, in the open transaction.
    fn audit(
        &mut self,
        violations: &[Violation],
        who: &str,
        at: DateTime<Utc>,
    ) -> Result<(), automerge::AutomergeError> {
        let list = match self.doc.get(ROOT, keys::AUDIT)? {
            Some((automerge::Value::Object(ObjType::List), list)) => list,
            _ => self.doc.put_object(ROOT, keys::AUDIT, ObjType::List)?,
        };
        for violation in violations {
            let entry = self
                .doc
                .insert_object(&list, self.doc.length(&list), ObjType::Map)?;
            self.doc.put(&entry, "at", operation::timestamp(at))?;
            self.doc.put(&entry, "by", who)?;
            let rule = serde_json::to_value(violation.rule)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.doc.put(&entry, "rule", rule.as_str())?;
            self.doc
                .put(&entry, "message", violation.message.as_str())?;
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
        let layout = self.take_layout();
        let r = Reader::new(&self.doc, None);
        let stamps = r.map(&ROOT, keys::UPDATED);
        let created = r.time(&ROOT, keys::CREATED_AT);
        let severity = read_severity(&r, &layout.2);
        let due = layout
            .2
            .iter()
            // Only fields with a cadence have a due time: the others' stamps are not read.
            .filter(|def| def.cadence(severity.as_deref()).is_some())
            .filter_map(|def| {
                let updated = read_stamp(&r, stamps.as_ref(), &def.key);
                let due = due_at(def, severity.as_deref(), updated.as_ref(), created)?;
                Some((def.key.clone(), due))
            })
            .collect();
        self.layout = Some(layout);
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
