//! The Planning lead's revert list (a field of kind `deviations`): what was changed away from normal, how to revert
//! it, and its reverting. Each deviation is `{id, by, at, what, revert, revertedBy?, revertedAt?, revertNote?}`;
//! `by` and the reverting name their sender, and no deviation is ever removed (the command rules). Open ones block
//! closing like open exit criteria.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc};
use chrono::{DateTime, Utc};

use crate::edit::{
    Applied, Edited, Editor, OpError, check_dated, check_short, field_by_kind, find_item,
    list_field, put_id, timestamp, touched,
};
use crate::read::Reader;
use crate::schema::{FieldDef, FieldKind};

/// Refuses an empty `what` or `revert`, or one over the short limit: each is one line people read in a list.
pub(super) fn check_line<'a>(what: &str, value: &'a str) -> Result<&'a str, OpError> {
    let value = value.trim();
    check_short(what, value)?;
    if value.is_empty() {
        return Err(OpError::InvalidValue(format!("{what} must not be empty")));
    }
    Ok(value)
}

/// Adds an open deviation by `editor`; `at` is when production was changed, if not now. Returns its id.
pub(super) fn add(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    what: &str,
    revert: &str,
    at: Option<DateTime<Utc>>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Deviations)?;
    let what = check_line("what", what)?;
    let revert = check_line("revert", revert)?;
    let at = check_dated("deviation", at, editor)?;
    let list = list_field(doc, &def.key)?;
    let entry = doc.insert_object(&list, doc.length(&list), ObjType::Map)?;
    let id = put_id(doc, &entry)?;
    doc.put(&entry, "by", editor.name.as_str())?;
    doc.put(&entry, "at", timestamp(at))?;
    doc.put(&entry, "what", what)?;
    doc.put(&entry, "revert", revert)?;
    Ok((Applied { id: Some(id) }, vec![def.key.clone()]))
}

/// Rewords what was changed or how to revert it (`None` keeps it).
pub(super) fn edit(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    id: &str,
    what: Option<&str>,
    revert: Option<&str>,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Deviations)?;
    let entry = find_item(doc, &def.key, id)?;
    for (key, value) in [("what", what), ("revert", revert)] {
        if let Some(value) = value {
            doc.put(&entry, key, check_line(key, value)?)?;
        }
    }
    Ok(touched(def))
}

/// Marks a deviation reverted by `editor`, now, with an optional note; once reverted it stays reverted.
pub(super) fn mark_reverted(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    id: &str,
    note: Option<&str>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Deviations)?;
    let entry = find_item(doc, &def.key, id)?;
    if Reader::new(&*doc, None).str(&entry, "revertedBy").is_some() {
        return Err(OpError::InvalidValue(format!(
            "the deviation {id} is already reverted"
        )));
    }
    doc.put(&entry, "revertedBy", editor.name.as_str())?;
    doc.put(&entry, "revertedAt", timestamp(editor.at))?;
    if let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) {
        check_short("note", note)?;
        doc.put(&entry, "revertNote", note)?;
    }
    Ok(touched(def))
}
