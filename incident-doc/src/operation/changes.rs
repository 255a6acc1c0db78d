//! The operations log (a field of kind `changes`): who changed what on which system. Each entry is `{id, by, at,
//! what, target, uncoordinated}`, written once and never changed or removed; `uncoordinated` says the writer
//! neither held the Operations role nor was delegated by its lead at that moment (the command rules hold a raw
//! change to the same verdict). The Operations lead's delegations live in the root key `operationsDelegates`.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc};
use chrono::{DateTime, Utc};

use crate::edit::{
    Applied, Edited, Editor, OpError, check_dated, field_by_kind, list_field, list_or_map_root,
    put_id, timestamp,
};
use crate::read::Reader;
use crate::rules::CommandState;
use crate::schema::{FieldDef, FieldKind, keys};

use super::deviations::check_line;
use super::timeline;

/// Logs a change by `editor`, marked uncoordinated unless they hold Operations or are delegated. Returns its id.
pub(super) fn log(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    what: &str,
    target: &str,
    at: Option<DateTime<Utc>>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Changes)?;
    let what = check_line("what", what)?;
    let target = check_line("target", target)?;
    let at = check_dated("change", at, editor)?;
    let coordinated = CommandState::read(&*doc, layout, None, false).coordinates(&editor.name);
    let list = list_field(doc, &def.key)?;
    let entry = doc.insert_object(&list, doc.length(&list), ObjType::Map)?;
    let id = put_id(doc, &entry)?;
    doc.put(&entry, "by", editor.name.as_str())?;
    doc.put(&entry, "at", timestamp(at))?;
    doc.put(&entry, "what", what)?;
    doc.put(&entry, "target", target)?;
    doc.put(&entry, "uncoordinated", !coordinated)?;
    Ok((Applied { id: Some(id) }, vec![def.key.clone()]))
}

/// Delegates changes to production to `person` (or, with `delegate` false, takes it back), recorded in the
/// timeline; whether the editor holds Operations is the command rules' call. Delegating someone already delegated
/// (or revoking someone who is not) changes nothing.
pub(super) fn delegate(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    person: &str,
    delegate: bool,
    editor: &Editor,
) -> Result<Edited, OpError> {
    field_by_kind(layout, FieldKind::Changes)?;
    let person = check_line("person", person)?;
    let list = list_or_map_root(doc, keys::OPERATIONS_DELEGATES, ObjType::List)?;
    let delegates = Reader::new(&*doc, None).strings_in(&list);
    let text = match (delegates.iter().position(|d| d == person), delegate) {
        (None, true) => {
            doc.insert(&list, delegates.len(), person)?;
            format!(
                "{} delegated changes to production to {person}.",
                editor.name
            )
        }
        (Some(index), false) => {
            doc.delete(&list, index)?;
            format!(
                "{} took back the delegation of changes to production from {person}.",
                editor.name
            )
        }
        _ => return Ok((Applied::default(), Vec::new())),
    };
    timeline::record(doc, layout, editor, &text)
}
