//! Typed edits of an incident document.
//!
//! Every way commandpost changes a document (HTTP, the browser client, bots) goes through an [`Operation`], so the
//! schema's rules live in one place: which kind of field an edit applies to, the *last updated* stamp, the commit
//! message that records who did what. An operation that fails changes nothing.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ValueRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::read::Reader;
use crate::schema::{EXIT_CRITERIA_KEY, FieldDef, FieldKind, Role, Stage, Status, keys};
use crate::view::{FieldValue, read_value, root_object};

/// One edit. The JSON form (`{"op": "spliceText", …}`) is what the HTTP API and the browser client send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Operation {
    /// Delete `delete` characters at `pos` of a text or markdown field, then insert `insert` there.
    /// Positions count Unicode code points.
    #[serde(rename_all = "camelCase")]
    SpliceText {
        /// The field key.
        field: String,
        /// Where, in code points from the start.
        pos: usize,
        /// How many code points to delete.
        #[serde(default)]
        delete: usize,
        /// What to insert.
        #[serde(default)]
        insert: String,
    },
    /// Replace a text or markdown field's content; Automerge diffs it so concurrent edits elsewhere survive.
    SetText {
        /// The field key.
        field: String,
        /// The new content.
        text: String,
    },
    /// Set or clear a choice field (e.g. severity) to one of its options.
    SetChoice {
        /// The field key.
        field: String,
        /// One of the field's option keys, or `null` to clear.
        value: Option<String>,
    },
    /// Move the incident to a lifecycle state; entering mitigated, resolved or closed stamps that moment once.
    /// Closing needs every exit criterion DONE, or `overrideReason`, which goes into the timeline.
    #[serde(rename_all = "camelCase")]
    SetStatus {
        /// The new state.
        status: Status,
        /// Why the incident closes although exit criteria are still open; only with `closed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        override_reason: Option<String>,
    },
    /// Set a flag field.
    SetFlag {
        /// The field key.
        field: String,
        /// The new value.
        value: bool,
    },
    /// Answer (or clear the answer to) one question of a questions field.
    Answer {
        /// The field key.
        field: String,
        /// The question key.
        question: String,
        /// Yes, no, or `null` for unanswered.
        value: Option<bool>,
    },
    /// Put a person in a role, or clear it (`null`).
    AssignRole {
        /// The role.
        role: Role,
        /// The person (a token name), or `null`.
        person: Option<String>,
    },
    /// Add a timeline entry; `at` defaults to now.
    AddTimelineEntry {
        /// What happened (Markdown).
        text: String,
        /// When it happened, if not now (e.g. a bot reporting an alert's start).
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// Replace a timeline entry's text.
    EditTimelineEntry {
        /// The entry id.
        id: String,
        /// The new text.
        text: String,
    },
    /// Add an item to a checklist field.
    AddItem {
        /// The field key.
        field: String,
        /// What to do or check.
        text: String,
        /// Who is on it.
        #[serde(default)]
        owner: Option<String>,
        /// A bug reference.
        #[serde(default)]
        bug: Option<String>,
    },
    /// Replace a checklist item's text.
    EditItem {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
        /// The new text.
        text: String,
    },
    /// Set a checklist item's owner and bug reference (`null` clears).
    SetItemDetails {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
        /// The owner, or `null`.
        owner: Option<String>,
        /// The bug reference, or `null`.
        bug: Option<String>,
    },
    /// Mark a checklist item DONE or back to TODO.
    SetItemDone {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
        /// DONE when true.
        done: bool,
    },
    /// Remove a checklist item.
    RemoveItem {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
    },
    /// Pin a field so it renders before everything else (after the fields pinned earlier).
    Pin {
        /// The field key.
        field: String,
    },
    /// Unpin a field.
    Unpin {
        /// The field key.
        field: String,
    },
    /// Propose handing `role` to `to`; nothing changes until they accept. The commander or the role's holder
    /// proposes; a new proposal replaces a pending one.
    ProposeHandoff {
        /// The role handed over.
        role: Role,
        /// The person (a token name) who is to take it.
        to: String,
    },
    /// Accept the handoff of `role` proposed to the editor: "you're now the incident commander". Only the named
    /// recipient can accept; the role changes hands and the timeline records it.
    AcceptHandoff {
        /// The role taken over.
        role: Role,
    },
    /// Withdraw a pending handoff of `role`.
    CancelHandoff {
        /// The role.
        role: Role,
    },
    /// Set or clear a lifecycle timestamp.
    SetTimestamp {
        /// The stage.
        stage: Stage,
        /// The moment, or `null` to clear.
        at: Option<DateTime<Utc>>,
    },
    /// Record an alert notification (from the Alertmanager hook) in the timeline, once: a fingerprint already
    /// recorded with the same state and start adds nothing (see `alert`).
    #[serde(rename_all = "camelCase")]
    RecordAlert {
        /// Alertmanager's fingerprint of the alert.
        fingerprint: String,
        /// Firing (`true`) or resolved.
        firing: bool,
        /// When the alert started firing.
        starts_at: DateTime<Utc>,
        /// The timeline entry (Markdown).
        text: String,
        /// The entry's time: the alert's start when firing, its end when resolved.
        at: DateTime<Utc>,
    },
    /// Record that the Communications lead sent a status update: `lastUpdate`, a timeline entry, and fresh stamps
    /// on the Communications lead's fields with a cadence (see `update`).
    MarkUpdateSent {
        /// The document heads the update described (hex), so the next one can say what changed since.
        #[serde(default)]
        heads: Vec<String>,
        /// Where it went or what it said, for the timeline.
        #[serde(default)]
        note: Option<String>,
    },
    /// Reopen a closed (archived) incident: the one edit an archived document accepts, alone in its batch. Moves
    /// the status to `status` (default `resolved`), clears the `closed` lifecycle stamp so that the next close
    /// records its own moment, and writes the reason to the timeline. The server lets only admins send it.
    Reopen {
        /// Why it is reopened; recorded in the timeline.
        reason: String,
        /// The state to reopen into; any but `closed`.
        #[serde(default)]
        status: Option<Status>,
    },
}

/// Who is editing and when; every operation is stamped with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Editor {
    /// The person's (or bot's) name: the token name on the server.
    pub name: String,
    /// The moment of the edit (UTC); the caller's clock, so the model stays deterministic.
    pub at: DateTime<Utc>,
    /// Whether the editor holds the administrator scope: an administrator may close an incident without being its
    /// commander (to recover from an absent one).
    pub admin: bool,
}

impl Editor {
    /// An editor at a given moment, without administrator rights.
    pub fn new(name: impl Into<String>, at: DateTime<Utc>) -> Editor {
        Editor {
            name: name.into(),
            at,
            admin: false,
        }
    }

    /// The same editor, with administrator rights if `admin`.
    pub fn with_admin(self, admin: bool) -> Editor {
        Editor { admin, ..self }
    }
}

/// Why an operation was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The incident is closed, so its document is an archive: it accepts nothing but a reopening.
    #[error("this incident is closed and archived: it accepts no edits (an admin can reopen it)")]
    Archived,
    /// A reopening of an incident that is not closed.
    #[error("only a closed incident can be reopened")]
    NotArchived,
    /// The template has no field with that key.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// The field exists but the operation does not apply to its kind.
    #[error("field {field:?} is of kind {actual}, but this operation needs {expected}")]
    WrongKind {
        /// The field key.
        field: String,
        /// The kind the operation needs.
        expected: &'static str,
        /// The field's kind.
        actual: FieldKind,
    },
    /// The template has no field of a kind this operation needs (e.g. no timeline).
    #[error("this document has no {0} field")]
    MissingKind(FieldKind),
    /// No item or entry with that id.
    #[error("no item {id:?} in field {field:?}")]
    UnknownItem {
        /// The field key.
        field: String,
        /// The id looked for.
        id: String,
    },
    /// A value outside what the field allows.
    #[error("{0}")]
    InvalidValue(String),
    /// The stored value has a shape the schema does not expect (another client wrote something else there).
    #[error("field {0:?} does not hold what the schema expects; it cannot be edited this way")]
    Malformed(String),
    /// Automerge refused the edit.
    #[error("document error: {0}")]
    Document(String),
    /// A command rule forbids this editor this change (see `rules`).
    #[error("{0}")]
    Forbidden(String),
}

impl From<automerge::AutomergeError> for OpError {
    fn from(e: automerge::AutomergeError) -> Self {
        OpError::Document(e.to_string())
    }
}

/// What applying an operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Applied {
    /// The id of the item or entry the operation created, if it created one.
    pub id: Option<String>,
}

/// Longest text commandpost accepts in one operation, so one request cannot bloat a document without bound.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// Longest name, owner, bug reference or option value.
pub const MAX_SHORT_CHARS: usize = 200;

impl Operation {
    /// The name used in commit messages and history (the JSON `op`).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Reopen { .. } => "reopen",
            Operation::SpliceText { .. } => "spliceText",
            Operation::SetText { .. } => "setText",
            Operation::SetChoice { .. } => "setChoice",
            Operation::SetStatus { .. } => "setStatus",
            Operation::SetFlag { .. } => "setFlag",
            Operation::Answer { .. } => "answer",
            Operation::AssignRole { .. } => "assignRole",
            Operation::AddTimelineEntry { .. } => "addTimelineEntry",
            Operation::EditTimelineEntry { .. } => "editTimelineEntry",
            Operation::AddItem { .. } => "addItem",
            Operation::EditItem { .. } => "editItem",
            Operation::SetItemDetails { .. } => "setItemDetails",
            Operation::SetItemDone { .. } => "setItemDone",
            Operation::RemoveItem { .. } => "removeItem",
            Operation::Pin { .. } => "pin",
            Operation::Unpin { .. } => "unpin",
            Operation::SetTimestamp { .. } => "setTimestamp",
            Operation::ProposeHandoff { .. } => "proposeHandoff",
            Operation::AcceptHandoff { .. } => "acceptHandoff",
            Operation::CancelHandoff { .. } => "cancelHandoff",
            Operation::RecordAlert { .. } => "recordAlert",
            Operation::MarkUpdateSent { .. } => "markUpdateSent",
        }
    }
}

/// Applies `op` inside `doc`'s open transaction. The caller commits on success and rolls back on error.
pub(crate) fn apply(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    op: &Operation,
    editor: &Editor,
) -> Result<(Applied, Vec<String>), OpError> {
    let field_by_key = |key: &str| -> Result<&FieldDef, OpError> {
        layout
            .iter()
            .find(|f| f.key == key)
            .ok_or_else(|| OpError::UnknownField(key.to_owned()))
    };
    let field_by_kind = |kind: FieldKind| -> Result<&FieldDef, OpError> {
        layout
            .iter()
            .find(|f| f.kind == kind)
            .ok_or(OpError::MissingKind(kind))
    };
    let expect =
        |def: &FieldDef, kinds: &[FieldKind], expected: &'static str| -> Result<(), OpError> {
            if kinds.contains(&def.kind) {
                Ok(())
            } else {
                Err(OpError::WrongKind {
                    field: def.key.clone(),
                    expected,
                    actual: def.kind,
                })
            }
        };
    const TEXTUAL: &[FieldKind] = &[FieldKind::Text, FieldKind::Markdown];
    let mut applied = Applied::default();
    let touched: Vec<String> = match op {
        Operation::Reopen { reason, status } => {
            let status = status.unwrap_or(Status::Resolved);
            if status == Status::Closed {
                return Err(OpError::InvalidValue(
                    "an incident cannot be reopened into closed".into(),
                ));
            }
            if !is_archived(&Reader::new(&*doc, None), layout) {
                return Err(OpError::NotArchived);
            }
            if reason.trim().is_empty() {
                return Err(OpError::InvalidValue(
                    "reopening needs a reason for the timeline".into(),
                ));
            }
            let set = Operation::SetStatus {
                status,
                override_reason: None,
            };
            let mut touched = apply(doc, layout, &set, editor)?.1;
            if let Ok(ts) = field_by_kind(FieldKind::Timestamps) {
                let map = map_field(doc, &ts.key)?;
                doc.delete(&map, Stage::Closed.as_str())?;
                touched.push(ts.key.clone());
            }
            // The next close is judged on the exit criteria as they will be then, not on this override.
            if doc.get(ROOT, keys::CLOSE_OVERRIDE)?.is_some() {
                doc.delete(ROOT, keys::CLOSE_OVERRIDE)?;
            }
            let entry = Operation::AddTimelineEntry {
                text: format!("Reopened ({status}): {}", reason.trim()),
                at: None,
            };
            let (added, fields) = apply(doc, layout, &entry, editor)?;
            applied = added;
            touched.extend(fields);
            let mut unique: Vec<String> = Vec::with_capacity(touched.len());
            for key in touched {
                if !unique.contains(&key) {
                    unique.push(key);
                }
            }
            unique
        }
        Operation::SpliceText {
            field,
            pos,
            delete,
            insert,
        } => {
            let def = field_by_key(field)?;
            expect(def, TEXTUAL, "text or markdown")?;
            check_text(insert, def.kind)?;
            let text = text_field(doc, &def.key)?;
            let len = doc.length(&text);
            if *pos > len || pos.saturating_add(*delete) > len {
                return Err(OpError::InvalidValue(format!(
                    "splice at {pos} deleting {delete} is outside {field:?}, which is {len} characters long"
                )));
            }
            if len - delete + insert.chars().count() > MAX_TEXT_CHARS {
                return Err(too_long());
            }
            doc.splice_text(&text, *pos, *delete as isize, insert)?;
            vec![def.key.clone()]
        }
        Operation::SetText { field, text } => {
            let def = field_by_key(field)?;
            expect(def, TEXTUAL, "text or markdown")?;
            check_text(text, def.kind)?;
            let obj = text_field(doc, &def.key)?;
            doc.update_text(&obj, text)?;
            vec![def.key.clone()]
        }
        Operation::SetChoice { field, value } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Choice], "choice")?;
            match value {
                Some(v) if def.options.iter().any(|o| &o.key == v) => {
                    doc.put(ROOT, &def.key, v.as_str())?
                }
                Some(v) => {
                    let allowed: Vec<_> = def.options.iter().map(|o| o.key.as_str()).collect();
                    return Err(OpError::InvalidValue(format!(
                        "{v:?} is not an option of {field:?} (expected one of {})",
                        allowed.join(", ")
                    )));
                }
                None => doc.put(ROOT, &def.key, ScalarValue::Null)?,
            }
            vec![def.key.clone()]
        }
        Operation::SetStatus {
            status,
            override_reason,
        } => {
            let def = field_by_kind(FieldKind::Status)?;
            let mut touched = vec![def.key.clone()];
            if let Some(reason) = override_reason {
                if *status != Status::Closed {
                    return Err(OpError::InvalidValue(
                        "an override reason only applies to closing".into(),
                    ));
                }
                if reason.trim().is_empty() {
                    return Err(OpError::InvalidValue(
                        "closing with exit criteria open needs a reason for the timeline".into(),
                    ));
                }
                let open = open_exit_criteria(&Reader::new(&*doc, None), layout);
                if !open.is_empty() {
                    let over = doc.put_object(ROOT, keys::CLOSE_OVERRIDE, ObjType::Map)?;
                    doc.put(&over, "reason", reason.trim())?;
                    doc.put(&over, "by", editor.name.as_str())?;
                    doc.put(&over, "at", timestamp(editor.at))?;
                    let entry = Operation::AddTimelineEntry {
                        text: format!(
                            "Closed with {} exit criteria open ({}): {}",
                            open.len(),
                            open.join("; "),
                            reason.trim()
                        ),
                        at: None,
                    };
                    let (added, fields) = apply(doc, layout, &entry, editor)?;
                    applied = added;
                    touched.extend(fields);
                }
            }
            doc.put(ROOT, &def.key, status.as_str())?;
            if let (Some(stage), Ok(ts)) = (status.stage(), field_by_kind(FieldKind::Timestamps)) {
                let map = map_field(doc, &ts.key)?;
                if Reader::new(&*doc, None)
                    .time(&map, stage.as_str())
                    .is_none()
                {
                    doc.put(&map, stage.as_str(), timestamp(editor.at))?;
                    touched.push(ts.key.clone());
                }
            }
            touched
        }
        Operation::SetFlag { field, value } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Flag], "flag")?;
            doc.put(ROOT, &def.key, *value)?;
            vec![def.key.clone()]
        }
        Operation::Answer {
            field,
            question,
            value,
        } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Questions], "questions")?;
            if !def.options.iter().any(|o| &o.key == question) {
                return Err(OpError::InvalidValue(format!(
                    "{field:?} has no question {question:?}"
                )));
            }
            let map = map_field(doc, &def.key)?;
            match value {
                Some(v) => doc.put(&map, question.as_str(), *v)?,
                None => doc.delete(&map, question.as_str())?,
            }
            vec![def.key.clone()]
        }
        Operation::AssignRole { role, person } => {
            let def = field_by_kind(FieldKind::Roles)?;
            let map = map_field(doc, &def.key)?;
            match person.as_deref().map(str::trim) {
                Some(p) if !p.is_empty() => {
                    check_short("person", p)?;
                    doc.put(&map, role.as_str(), p)?;
                }
                _ => doc.delete(&map, role.as_str())?,
            }
            vec![def.key.clone()]
        }
        Operation::AddTimelineEntry { text, at } => {
            let def = field_by_kind(FieldKind::Timeline)?;
            check_text(text, FieldKind::Markdown)?;
            if text.trim().is_empty() {
                return Err(OpError::InvalidValue("a timeline entry needs text".into()));
            }
            let list = list_field(doc, &def.key)?;
            let entry = doc.insert_object(&list, doc.length(&list), ObjType::Map)?;
            applied.id = Some(put_id(doc, &entry)?);
            doc.put(&entry, "at", timestamp(at.unwrap_or(editor.at)))?;
            doc.put(&entry, "author", editor.name.as_str())?;
            let t = doc.put_object(&entry, "text", ObjType::Text)?;
            doc.splice_text(&t, 0, 0, text)?;
            vec![def.key.clone()]
        }
        Operation::EditTimelineEntry { id, text } => {
            let def = field_by_kind(FieldKind::Timeline)?;
            check_text(text, FieldKind::Markdown)?;
            let entry = find_item(doc, &def.key, id)?;
            let t = nested_text(doc, &entry, &def.key)?;
            doc.update_text(&t, text)?;
            vec![def.key.clone()]
        }
        Operation::AddItem {
            field,
            text,
            owner,
            bug,
        } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Checklist], "checklist")?;
            check_text(text, FieldKind::Text)?;
            let list = list_field(doc, &def.key)?;
            let item = insert_item(doc, &list, text, false)?;
            applied.id = Some(item.1);
            put_details(doc, &item.0, owner.as_deref(), bug.as_deref())?;
            vec![def.key.clone()]
        }
        Operation::EditItem { field, id, text } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Checklist], "checklist")?;
            check_text(text, FieldKind::Text)?;
            let item = find_item(doc, &def.key, id)?;
            let t = nested_text(doc, &item, &def.key)?;
            doc.update_text(&t, text)?;
            vec![def.key.clone()]
        }
        Operation::SetItemDetails {
            field,
            id,
            owner,
            bug,
        } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Checklist], "checklist")?;
            let item = find_item(doc, &def.key, id)?;
            put_details(doc, &item, owner.as_deref(), bug.as_deref())?;
            vec![def.key.clone()]
        }
        Operation::SetItemDone { field, id, done } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Checklist], "checklist")?;
            let item = find_item(doc, &def.key, id)?;
            doc.put(&item, "done", *done)?;
            vec![def.key.clone()]
        }
        Operation::RemoveItem { field, id } => {
            let def = field_by_key(field)?;
            expect(def, &[FieldKind::Checklist], "checklist")?;
            let list = list_field(doc, &def.key)?;
            let (index, _) = item_index(doc, &list, id).ok_or_else(|| OpError::UnknownItem {
                field: def.key.clone(),
                id: id.clone(),
            })?;
            doc.delete(&list, index)?;
            vec![def.key.clone()]
        }
        Operation::Pin { field } => {
            let def = field_by_key(field)?;
            let pins = list_root(doc, keys::PINS)?;
            let r = Reader::new(&*doc, None);
            let already = r
                .maps_in(&pins)
                .iter()
                .any(|m| r.str(m, "field").as_deref() == Some(&def.key));
            if !already {
                let pin = doc.insert_object(&pins, doc.length(&pins), ObjType::Map)?;
                doc.put(&pin, "field", def.key.as_str())?;
                doc.put(&pin, "by", editor.name.as_str())?;
                doc.put(&pin, "at", timestamp(editor.at))?;
            }
            Vec::new()
        }
        Operation::Unpin { field } => {
            let def = field_by_key(field)?;
            let pins = list_root(doc, keys::PINS)?;
            // Delete from the end so earlier indexes stay valid; concurrent pins may have left duplicates.
            for i in (0..doc.length(&pins)).rev() {
                let r = Reader::new(&*doc, None);
                let is_it =
                    r.map(&pins, i).and_then(|m| r.str(&m, "field")).as_deref() == Some(&def.key);
                if is_it {
                    doc.delete(&pins, i)?;
                }
            }
            Vec::new()
        }
        Operation::ProposeHandoff { role, to } => {
            let def = field_by_kind(FieldKind::Roles)?;
            let to = to.trim();
            check_short("person", to)?;
            if to.is_empty() {
                return Err(OpError::InvalidValue(
                    "a handoff needs the person who takes over".into(),
                ));
            }
            let handoffs = list_or_map_root(doc, keys::HANDOFFS, ObjType::Map)?;
            let handoff = doc.put_object(&handoffs, role.as_str(), ObjType::Map)?;
            doc.put(&handoff, "to", to)?;
            doc.put(&handoff, "by", editor.name.as_str())?;
            doc.put(&handoff, "at", timestamp(editor.at))?;
            vec![def.key.clone()]
        }
        Operation::AcceptHandoff { role } => {
            let def = field_by_kind(FieldKind::Roles)?;
            let handoffs = list_or_map_root(doc, keys::HANDOFFS, ObjType::Map)?;
            let r = Reader::new(&*doc, None);
            let pending = r.map(&handoffs, role.as_str());
            let to = pending.as_ref().and_then(|h| r.str(h, "to"));
            if to.as_deref() != Some(editor.name.as_str()) {
                return Err(OpError::Forbidden(match to {
                    Some(to) => format!(
                        "the {} handoff is proposed to {to}, not {}",
                        role.label(),
                        editor.name
                    ),
                    None => format!("no handoff of the {} is pending", role.label()),
                }));
            }
            let roles = map_field(doc, &def.key)?;
            let from = Reader::new(&*doc, None)
                .str(&roles, role.as_str())
                .or_else(|| {
                    role.defaults_to_commander()
                        .then(|| Reader::new(&*doc, None).str(&roles, Role::Commander.as_str()))
                        .flatten()
                });
            doc.put(&roles, role.as_str(), editor.name.as_str())?;
            doc.delete(&handoffs, role.as_str())?;
            // The planned next commander has become the commander.
            if *role == Role::Commander
                && Reader::new(&*doc, None)
                    .str(&roles, Role::NextCommander.as_str())
                    .as_deref()
                    == Some(editor.name.as_str())
            {
                doc.delete(&roles, Role::NextCommander.as_str())?;
            }
            let mut touched = vec![def.key.clone()];
            if let Ok(timeline) = field_by_kind(FieldKind::Timeline) {
                let list = list_field(doc, &timeline.key)?;
                let entry = doc.insert_object(&list, doc.length(&list), ObjType::Map)?;
                put_id(doc, &entry)?;
                doc.put(&entry, "at", timestamp(editor.at))?;
                doc.put(&entry, "author", editor.name.as_str())?;
                let t = doc.put_object(&entry, "text", ObjType::Text)?;
                let text = format!(
                    "{} is now the {}{}.",
                    editor.name,
                    role.label(),
                    from.map(|f| format!(" (handed over by {f})"))
                        .unwrap_or_default()
                );
                doc.splice_text(&t, 0, 0, &text)?;
                touched.push(timeline.key.clone());
            }
            touched
        }
        Operation::CancelHandoff { role } => {
            let def = field_by_kind(FieldKind::Roles)?;
            let handoffs = list_or_map_root(doc, keys::HANDOFFS, ObjType::Map)?;
            if doc.get(&handoffs, role.as_str())?.is_none() {
                return Err(OpError::InvalidValue(format!(
                    "no handoff of the {} is pending",
                    role.label()
                )));
            }
            doc.delete(&handoffs, role.as_str())?;
            vec![def.key.clone()]
        }
        Operation::RecordAlert {
            fingerprint,
            firing,
            starts_at,
            text,
            at,
        } => {
            let alert = crate::alert::Alert {
                fingerprint,
                firing: *firing,
                starts_at: *starts_at,
                text,
                at: *at,
            };
            let (added, touched) = crate::alert::record(doc, layout, alert, editor)?;
            applied = added;
            touched
        }
        Operation::MarkUpdateSent { heads, note } => {
            let (added, touched) =
                crate::update::mark_sent(doc, layout, heads, note.as_deref(), editor)?;
            applied = added;
            touched
        }
        Operation::SetTimestamp { stage, at } => {
            let def = field_by_kind(FieldKind::Timestamps)?;
            let map = map_field(doc, &def.key)?;
            match at {
                Some(t) => doc.put(&map, stage.as_str(), timestamp(*t))?,
                None => doc.delete(&map, stage.as_str())?,
            }
            vec![def.key.clone()]
        }
    };
    for key in &touched {
        stamp(doc, key, editor)?;
    }
    Ok((applied, touched))
}

/// Writes the *last updated* stamp as one new map, so a concurrent stamp never mixes one writer's time with the
/// other's name.
///
/// A stamp that would read the same (same person, same minute: exports show minutes) is not rewritten. Every
/// overwrite of a map key stays in Automerge's history and makes later reads of that key slower, so restamping on
/// every keystroke would make a busy field slower to edit the longer an incident runs.
pub(crate) fn stamp(doc: &mut AutoCommit, key: &str, editor: &Editor) -> Result<(), OpError> {
    let updated = list_or_map_root(doc, keys::UPDATED, ObjType::Map)?;
    let r = Reader::new(&*doc, None);
    if let Some(current) = r.map(&updated, key) {
        let same_minute = r
            .time(&current, "at")
            .is_some_and(|at| at.timestamp() / 60 == editor.at.timestamp() / 60);
        if same_minute && r.str(&current, "by").as_deref() == Some(editor.name.as_str()) {
            return Ok(());
        }
    }
    let s = doc.put_object(&updated, key, ObjType::Map)?;
    doc.put(&s, "at", timestamp(editor.at))?;
    doc.put(&s, "by", editor.name.as_str())?;
    Ok(())
}

/// Inserts a checklist item at the end of `list`; returns its object and id.
pub(crate) fn insert_item(
    doc: &mut AutoCommit,
    list: &ObjId,
    text: &str,
    done: bool,
) -> Result<(ObjId, String), OpError> {
    let item = doc.insert_object(list, doc.length(list), ObjType::Map)?;
    let id = put_id(doc, &item)?;
    let t = doc.put_object(&item, "text", ObjType::Text)?;
    doc.splice_text(&t, 0, 0, text)?;
    doc.put(&item, "done", done)?;
    Ok((item, id))
}

/// The item's Automerge object id is unique across replicas and never reused, so it makes a stable public id.
fn put_id(doc: &mut AutoCommit, obj: &ObjId) -> Result<String, OpError> {
    let id = obj.to_string();
    doc.put(obj, "id", id.as_str())?;
    Ok(id)
}

fn put_details(
    doc: &mut AutoCommit,
    item: &ObjId,
    owner: Option<&str>,
    bug: Option<&str>,
) -> Result<(), OpError> {
    for (key, value) in [("owner", owner), ("bug", bug)] {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => {
                check_short(key, v)?;
                doc.put(item, key, v)?;
            }
            None => doc.put(item, key, ScalarValue::Null)?,
        }
    }
    Ok(())
}

/// The text of every exit criterion not yet DONE, in list order; empty when the layout has no exit criteria.
pub(crate) fn open_exit_criteria<D: ReadDoc>(
    r: &Reader<'_, D>,
    layout: &[FieldDef],
) -> Vec<String> {
    match layout
        .iter()
        .find(|f| f.key == EXIT_CRITERIA_KEY && f.kind == FieldKind::Checklist)
        .map(|def| read_value(r, def))
    {
        Some(FieldValue::Checklist(items)) => items
            .into_iter()
            .filter(|item| !item.done)
            .map(|item| item.text)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the document read through `r` is an archive: its status field says `closed`.
pub(crate) fn is_archived<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> bool {
    layout
        .iter()
        .find(|f| f.kind == FieldKind::Status)
        .and_then(|f| r.str(&ROOT, f.key.as_str()))
        .is_some_and(|s| s == Status::Closed.as_str())
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> ScalarValue {
    ScalarValue::Timestamp(at.timestamp_millis())
}

fn too_long() -> OpError {
    OpError::InvalidValue(format!("text longer than {MAX_TEXT_CHARS} characters"))
}

fn check_text(text: &str, kind: FieldKind) -> Result<(), OpError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(too_long());
    }
    if kind == FieldKind::Text && text.contains(['\n', '\r']) {
        return Err(OpError::InvalidValue(
            "this field holds a single line".into(),
        ));
    }
    Ok(())
}

fn check_short(what: &str, value: &str) -> Result<(), OpError> {
    if value.chars().count() > MAX_SHORT_CHARS || value.contains(['\n', '\r']) {
        return Err(OpError::InvalidValue(format!(
            "{what} must be one line of at most {MAX_SHORT_CHARS} characters"
        )));
    }
    Ok(())
}

fn text_field(doc: &AutoCommit, key: &str) -> Result<ObjId, OpError> {
    root_object(doc, key, ObjType::Text).ok_or_else(|| OpError::Malformed(key.to_owned()))
}

fn list_field(doc: &AutoCommit, key: &str) -> Result<ObjId, OpError> {
    root_object(doc, key, ObjType::List).ok_or_else(|| OpError::Malformed(key.to_owned()))
}

fn map_field(doc: &AutoCommit, key: &str) -> Result<ObjId, OpError> {
    root_object(doc, key, ObjType::Map).ok_or_else(|| OpError::Malformed(key.to_owned()))
}

/// Bookkeeping containers are created on first use if a document lacks them (e.g. one written by another client).
fn list_or_map_root(doc: &mut AutoCommit, key: &str, want: ObjType) -> Result<ObjId, OpError> {
    match root_object(doc, key, want) {
        Some(id) => Ok(id),
        None => Ok(doc.put_object(ROOT, key, want)?),
    }
}

fn list_root(doc: &mut AutoCommit, key: &str) -> Result<ObjId, OpError> {
    list_or_map_root(doc, key, ObjType::List)
}

/// The index and object of the item with this id, found in one pass over the list.
fn item_index(doc: &AutoCommit, list: &ObjId, id: &str) -> Option<(usize, ObjId)> {
    let r = Reader::new(doc, None);
    doc.list_range(list, ..).find_map(|item| {
        if !matches!(item.value, ValueRef::Object(ObjType::Map)) {
            return None;
        }
        let obj = item.id();
        (r.str(&obj, "id").as_deref() == Some(id)).then_some((item.index, obj))
    })
}

fn find_item(doc: &AutoCommit, key: &str, id: &str) -> Result<ObjId, OpError> {
    let list = list_field(doc, key)?;
    item_index(doc, &list, id)
        .map(|(_, obj)| obj)
        .ok_or_else(|| OpError::UnknownItem {
            field: key.to_owned(),
            id: id.to_owned(),
        })
}

fn nested_text(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<ObjId, OpError> {
    match doc.get(obj, "text")? {
        Some((automerge::Value::Object(ObjType::Text), id)) => Ok(id),
        _ => Err(OpError::Malformed(key.to_owned())),
    }
}
