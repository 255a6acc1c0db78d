//! Pins: the fields rendered before all others, in the order they were pinned (root key `pins`).

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc};

use crate::edit::{Applied, Edited, Editor, OpError, field_by_key, list_or_map_root, timestamp};
use crate::read::Reader;
use crate::schema::{FieldDef, keys};

/// Pinning a pinned field changes nothing, so it keeps its place. Pins are bookkeeping: no field is stamped.
pub(super) fn pin(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_key(layout, field)?;
    let pins = list_or_map_root(doc, keys::PINS, ObjType::List)?;
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
    Ok((Applied::default(), Vec::new()))
}

pub(super) fn unpin(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
) -> Result<Edited, OpError> {
    let def = field_by_key(layout, field)?;
    let pins = list_or_map_root(doc, keys::PINS, ObjType::List)?;
    // Delete from the end so earlier indexes stay valid; concurrent pins may have left duplicates.
    for i in (0..doc.length(&pins)).rev() {
        let r = Reader::new(&*doc, None);
        let is_it = r.map(&pins, i).and_then(|m| r.str(&m, "field")).as_deref() == Some(&def.key);
        if is_it {
            doc.delete(&pins, i)?;
        }
    }
    Ok((Applied::default(), Vec::new()))
}
