//! Checklist fields (action items, exit criteria, …): items added, edited, given an owner and a bug, marked DONE and
//! removed.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue};

use crate::edit::{
    Applied, Edited, OpError, check_short, check_text, field_of_kinds, find_item, list_field,
    nested_text, put_id, remove_listed, touched,
};
use crate::schema::{FieldDef, FieldKind};

/// The checklist field `field`; every checklist operation names one.
fn checklist<'a>(layout: &'a [FieldDef], field: &str) -> Result<&'a FieldDef, OpError> {
    field_of_kinds(layout, field, &[FieldKind::Checklist], "checklist")
}

/// Adds an item, not DONE, at the end of the list; returns its id.
pub(super) fn add(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    text: &str,
    owner: Option<&str>,
    bug: Option<&str>,
) -> Result<Edited, OpError> {
    let def = checklist(layout, field)?;
    check_text(text, FieldKind::Text)?;
    let list = list_field(doc, &def.key)?;
    let (item, id) = insert_item(doc, &list, text, false)?;
    put_details(doc, &item, owner, bug)?;
    Ok((Applied { id: Some(id) }, vec![def.key.clone()]))
}

pub(super) fn edit(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    id: &str,
    text: &str,
) -> Result<Edited, OpError> {
    let def = checklist(layout, field)?;
    check_text(text, FieldKind::Text)?;
    let item = find_item(doc, &def.key, id)?;
    let t = nested_text(doc, &item, &def.key)?;
    doc.update_text(&t, text)?;
    Ok(touched(def))
}

pub(super) fn set_details(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    id: &str,
    owner: Option<&str>,
    bug: Option<&str>,
) -> Result<Edited, OpError> {
    let def = checklist(layout, field)?;
    let item = find_item(doc, &def.key, id)?;
    put_details(doc, &item, owner, bug)?;
    Ok(touched(def))
}

pub(super) fn set_done(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    id: &str,
    done: bool,
) -> Result<Edited, OpError> {
    let def = checklist(layout, field)?;
    let item = find_item(doc, &def.key, id)?;
    doc.put(&item, "done", done)?;
    Ok(touched(def))
}

pub(super) fn remove(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    id: &str,
) -> Result<Edited, OpError> {
    let def = checklist(layout, field)?;
    remove_listed(doc, &def.key, id)?;
    Ok(touched(def))
}

/// Inserts a checklist item at the end of `list`; returns its object and id. Also writes a template's default
/// items when a document is created.
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

/// A blank owner or bug (after trimming) clears it: it is stored as null.
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
