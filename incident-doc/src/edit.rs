//! What every typed edit shares, whichever operation it is: who makes it ([`Editor`]), why it is refused
//! ([`OpError`]), what it returns ([`Applied`]), the length limits, the *last updated* stamps, and the lookups of
//! fields and of the objects they hold. The operations (`operation/`), the document's creation (`incident`) and the
//! command rules (`rules`) all build on it; it builds on nothing of theirs.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ValueRef};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::read::Reader;
use crate::schema::{EXIT_CRITERIA_KEY, FieldDef, FieldKind, Status, keys};
use crate::view::{FieldValue, read_value, root_object};

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Applied {
    /// The id of the item or entry the operation created, if it created one.
    pub id: Option<String>,
}

/// Longest text commandpost accepts in one operation, so one request cannot bloat a document without bound.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// How far ahead of the server's clock a new timeline entry may be dated (clock skew of an honest client): an
/// entry dated later would stretch its author's edit grace. The rules hold sync changes to it, and the typed
/// operation refuses a later `at` before writing.
pub const FUTURE_SKEW: Duration = Duration::minutes(5);

/// Refuses a `what` (a timeline entry, a deviation, …) dated later than [`FUTURE_SKEW`] from the editor's now, the
/// limit the rules hold entries that arrive over sync to; returns its time (now when `at` is absent). A typo'd year
/// would put it above everything for good.
pub(crate) fn check_dated(
    what: &str,
    at: Option<DateTime<Utc>>,
    editor: &Editor,
) -> Result<DateTime<Utc>, OpError> {
    match at {
        Some(at) if at > editor.at + FUTURE_SKEW => Err(OpError::InvalidValue(format!(
            "a {what} may be dated at most {} minutes ahead of now ({}), not {}",
            FUTURE_SKEW.num_minutes(),
            editor.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))),
        at => Ok(at.unwrap_or(editor.at)),
    }
}

/// Longest name, owner, bug reference or option value.
pub const MAX_SHORT_CHARS: usize = 200;

/// What an operation produced, and the keys of the fields whose *last updated* stamps it moves.
pub(crate) type Edited = (Applied, Vec<String>);

/// What most operations produce: no new item, and the one field they edited to stamp.
pub(crate) fn touched(def: &FieldDef) -> Edited {
    (Applied::default(), vec![def.key.clone()])
}

/// Writes the stamps of everything `edited` touched. Every operation ends with it; an operation that makes another
/// edit on its way (a timeline entry, a status change) stamps that one at once too, exactly as that edit applied on
/// its own would be stamped.
pub(crate) fn stamped(
    doc: &mut AutoCommit,
    editor: &Editor,
    edited: Edited,
) -> Result<Edited, OpError> {
    for key in &edited.1 {
        stamp(doc, key, editor)?;
    }
    Ok(edited)
}

/// Writes the *last updated* stamp as one new map, so a concurrent stamp never mixes one writer's time with the
/// other's name.
///
/// The stamp is current to the second: only a stamp by the same person within the same second is left as it is.
/// Every overwrite of a map key stays in Automerge's history and makes later reads of that key slower, so
/// restamping on every keystroke would make a busy field slower to edit the longer an incident runs; one stamp per
/// field, person and second bounds that growth by time rather than by keystrokes (a person typing for an hour adds
/// at most 3,600 stamps to a field), while `updated` and the due time it sets lag the last edit by under a second.
/// (It used to be one per minute, which made them lag by up to 59 s.)
pub(crate) fn stamp(doc: &mut AutoCommit, key: &str, editor: &Editor) -> Result<(), OpError> {
    let updated = list_or_map_root(doc, keys::UPDATED, ObjType::Map)?;
    let r = Reader::new(&*doc, None);
    if let Some(current) = r.map(&updated, key) {
        let same_second = r
            .time(&current, "at")
            .is_some_and(|at| at.timestamp() == editor.at.timestamp());
        if same_second && r.str(&current, "by").as_deref() == Some(editor.name.as_str()) {
            return Ok(());
        }
    }
    let s = doc.put_object(&updated, key, ObjType::Map)?;
    doc.put(&s, "at", timestamp(editor.at))?;
    doc.put(&s, "by", editor.name.as_str())?;
    Ok(())
}

/// Appends `{at, by, rule, message}` to the audit trail (root key `audit`, which only the server writes): the
/// record of what the server reverted and of the overrides an administrator made, kept beside the timeline because
/// nobody may reword it.
pub(crate) fn append_audit(
    doc: &mut AutoCommit,
    at: DateTime<Utc>,
    by: &str,
    rule: &str,
    message: &str,
) -> Result<(), automerge::AutomergeError> {
    let list = match doc.get(ROOT, keys::AUDIT)? {
        Some((automerge::Value::Object(ObjType::List), list)) => list,
        _ => doc.put_object(ROOT, keys::AUDIT, ObjType::List)?,
    };
    let entry = doc.insert_object(&list, doc.length(&list), ObjType::Map)?;
    doc.put(&entry, "at", timestamp(at))?;
    doc.put(&entry, "by", by)?;
    doc.put(&entry, "rule", rule)?;
    doc.put(&entry, "message", message)
}

/// Times are stored as Automerge timestamps (milliseconds), which other Automerge clients read as dates.
pub(crate) fn timestamp(at: DateTime<Utc>) -> ScalarValue {
    ScalarValue::Timestamp(at.timestamp_millis())
}

/// The item's Automerge object id is unique across replicas and never reused, so it makes a stable public id.
pub(crate) fn put_id(doc: &mut AutoCommit, obj: &ObjId) -> Result<String, OpError> {
    let id = obj.to_string();
    doc.put(obj, "id", id.as_str())?;
    Ok(id)
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

/// What every deviation on the revert list not yet reverted says was changed, in list order; empty without a
/// revert list.
pub(crate) fn open_deviations<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> Vec<String> {
    match layout
        .iter()
        .find(|f| f.kind == FieldKind::Deviations)
        .map(|def| read_value(r, def))
    {
        Some(FieldValue::Deviations(list)) => list
            .into_iter()
            .filter(|d| d.reverted.is_none())
            .map(|d| d.what)
            .collect(),
        _ => Vec::new(),
    }
}

/// How [`closing_blockers`] names a deviation not reverted, before its `what`.
pub(crate) const OPEN_DEVIATION: &str = "deviation not reverted: ";

/// What stands in the way of closing, each named: the open exit criteria as they read, then each deviation not
/// reverted as [`OPEN_DEVIATION`] and its `what`.
pub(crate) fn closing_blockers<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> Vec<String> {
    let mut open = open_exit_criteria(r, layout);
    open.extend(
        open_deviations(r, layout)
            .into_iter()
            .map(|what| format!("{OPEN_DEVIATION}{what}")),
    );
    open
}

/// Whether the document read through `r` is an archive: its status field says `closed`.
pub(crate) fn is_archived<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> bool {
    layout
        .iter()
        .find(|f| f.kind == FieldKind::Status)
        .and_then(|f| r.str(&ROOT, f.key.as_str()))
        .is_some_and(|s| s == Status::Closed.as_str())
}

/// The field with this key; operations name fields by key.
pub(crate) fn field_by_key<'a>(layout: &'a [FieldDef], key: &str) -> Result<&'a FieldDef, OpError> {
    layout
        .iter()
        .find(|f| f.key == key)
        .ok_or_else(|| OpError::UnknownField(key.to_owned()))
}

/// The field with this key, if it is of one of `kinds` (`expected` names them in the error).
pub(crate) fn field_of_kinds<'a>(
    layout: &'a [FieldDef],
    key: &str,
    kinds: &[FieldKind],
    expected: &'static str,
) -> Result<&'a FieldDef, OpError> {
    let def = field_by_key(layout, key)?;
    if kinds.contains(&def.kind) {
        Ok(def)
    } else {
        Err(OpError::WrongKind {
            field: def.key.clone(),
            expected,
            actual: def.kind,
        })
    }
}

/// The first field of a kind a template has at most one of (status, roles, timeline, timestamps): operations on
/// those name the kind, not the key.
pub(crate) fn field_by_kind(layout: &[FieldDef], kind: FieldKind) -> Result<&FieldDef, OpError> {
    layout
        .iter()
        .find(|f| f.kind == kind)
        .ok_or(OpError::MissingKind(kind))
}

pub(crate) fn too_long() -> OpError {
    OpError::InvalidValue(format!("text longer than {MAX_TEXT_CHARS} characters"))
}

/// Refuses text over [`MAX_TEXT_CHARS`], and line breaks where `kind` is a single-line text.
pub(crate) fn check_text(text: &str, kind: FieldKind) -> Result<(), OpError> {
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

/// Refuses a name, owner or bug reference over [`MAX_SHORT_CHARS`] or over one line; `what` names it.
pub(crate) fn check_short(what: &str, value: &str) -> Result<(), OpError> {
    if value.chars().count() > MAX_SHORT_CHARS || value.contains(['\n', '\r']) {
        return Err(OpError::InvalidValue(format!(
            "{what} must be one line of at most {MAX_SHORT_CHARS} characters"
        )));
    }
    Ok(())
}

pub(crate) fn text_field(doc: &AutoCommit, key: &str) -> Result<ObjId, OpError> {
    root_object(doc, key, ObjType::Text).ok_or_else(|| OpError::Malformed(key.to_owned()))
}

pub(crate) fn list_field(doc: &AutoCommit, key: &str) -> Result<ObjId, OpError> {
    root_object(doc, key, ObjType::List).ok_or_else(|| OpError::Malformed(key.to_owned()))
}

pub(crate) fn map_field(doc: &AutoCommit, key: &str) -> Result<ObjId, OpError> {
    root_object(doc, key, ObjType::Map).ok_or_else(|| OpError::Malformed(key.to_owned()))
}

/// Bookkeeping containers are created on first use if a document lacks them (e.g. one written by another client).
pub(crate) fn list_or_map_root(
    doc: &mut AutoCommit,
    key: &str,
    want: ObjType,
) -> Result<ObjId, OpError> {
    match root_object(doc, key, want) {
        Some(id) => Ok(id),
        None => Ok(doc.put_object(ROOT, key, want)?),
    }
}

/// The index and object of the item with this id, found in one pass over the list.
pub(crate) fn item_index(doc: &AutoCommit, list: &ObjId, id: &str) -> Option<(usize, ObjId)> {
    let r = Reader::new(doc, None);
    doc.list_range(list, ..).find_map(|item| {
        if !matches!(item.value, ValueRef::Object(ObjType::Map)) {
            return None;
        }
        let obj = item.id();
        (r.str(&obj, "id").as_deref() == Some(id)).then_some((item.index, obj))
    })
}

/// The Text object a text edit addresses: the text or markdown field `key`, or with `item`, the text of that item
/// of the checklist field `key`.
pub(crate) fn text_of(doc: &AutoCommit, key: &str, item: Option<&str>) -> Result<ObjId, OpError> {
    match item {
        None => text_field(doc, key),
        Some(id) => nested_text(doc, &find_item(doc, key, id)?, key),
    }
}

/// The checklist item or timeline entry with this id in the list field `key`.
pub(crate) fn find_item(doc: &AutoCommit, key: &str, id: &str) -> Result<ObjId, OpError> {
    let list = list_field(doc, key)?;
    item_index(doc, &list, id)
        .map(|(_, obj)| obj)
        .ok_or_else(|| OpError::UnknownItem {
            field: key.to_owned(),
            id: id.to_owned(),
        })
}

/// Removes the checklist item or timeline entry with this id from the list field `key`.
pub(crate) fn remove_listed(doc: &mut AutoCommit, key: &str, id: &str) -> Result<(), OpError> {
    let list = list_field(doc, key)?;
    let (index, _) = item_index(doc, &list, id).ok_or_else(|| OpError::UnknownItem {
        field: key.to_owned(),
        id: id.to_owned(),
    })?;
    doc.delete(&list, index)?;
    Ok(())
}

/// The text object of an item or entry; `key` names the field in the error.
pub(crate) fn nested_text(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<ObjId, OpError> {
    match doc.get(obj, "text")? {
        Some((automerge::Value::Object(ObjType::Text), id)) => Ok(id),
        _ => Err(OpError::Malformed(key.to_owned())),
    }
}
