//! The commander's check-ins ([`crate::checkins`]): answering the reconsider prompt (root key `checkins`) and a
//! responder's help flag (root key `help`), each with its timeline entry. Who may send them is the command rules'
//! (`Rule::CheckIn`).

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};

use crate::checkins::{HelpState, read_help};
use crate::edit::{Applied, Edited, Editor, OpError, check_short, timestamp};
use crate::read::Reader;
use crate::schema::{FieldDef, keys};

use super::timeline;

/// Records the commander's one-line answer to "is the current approach still right?" and resets the due time.
pub(super) fn reconsider(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    note: &str,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let note = note.trim();
    if note.is_empty() || note.contains(['\n', '\r']) {
        return Err(OpError::InvalidValue(
            "the answer to the reconsider prompt is one line of text".into(),
        ));
    }
    check_short("note", note)?;
    let r = Reader::new(&*doc, None);
    let map = r
        .map(&ROOT, keys::CHECKINS)
        .filter(|map| r.int(map, "reconsiderMinutes").is_some())
        .ok_or_else(|| {
            OpError::InvalidValue(
                "this incident's template has no reconsider prompt (reconsider=…)".into(),
            )
        })?;
    let count = r.int(&map, "reconsiderations").unwrap_or(0);
    let last = doc.put_object(&map, "reconsidered", ObjType::Map)?;
    doc.put(&last, "at", timestamp(editor.at))?;
    doc.put(&last, "by", editor.name.as_str())?;
    doc.put(&last, "note", note)?;
    doc.put(&map, "reconsiderations", count + 1)?;
    let text = format!("{} reconsidered the approach: {note}", editor.name);
    timeline::record(doc, layout, editor, &text)
}

/// Raises or clears `person`'s help flag (the editor's own by default); the same state again writes nothing.
pub(super) fn set_help(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    person: Option<&str>,
    state: Option<HelpState>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let person = person.map(str::trim).unwrap_or(&editor.name);
    check_short("person", person)?;
    if person.is_empty() {
        return Err(OpError::InvalidValue("the person is a name".into()));
    }
    let r = Reader::new(&*doc, None);
    let on = r
        .map(&ROOT, keys::CHECKINS)
        .and_then(|map| r.bool(&map, "helpFlag"))
        .unwrap_or(false);
    if !on {
        return Err(OpError::InvalidValue(
            "this incident's template has no help flag (help-flag)".into(),
        ));
    }
    let (was, _, raised) = read_help(&r).remove(person).unwrap_or_default();
    if was == state {
        return Ok((Applied::default(), Vec::new()));
    }
    let help = match r.map(&ROOT, keys::HELP) {
        Some(help) => help,
        None => doc.put_object(ROOT, keys::HELP, ObjType::Map)?,
    };
    let entry = doc.put_object(&help, person, ObjType::Map)?;
    doc.put(&entry, "at", timestamp(editor.at))?;
    let raised = raised + i64::from(state.is_some());
    doc.put(&entry, "raised", raised)?;
    let text = match state {
        Some(state) => {
            doc.put(&entry, "state", state.as_str())?;
            format!("Help flag: {}.", state.describe(person))
        }
        None if person == editor.name => format!("Help flag: {person} cleared their flag."),
        None => format!("Help flag: {} cleared {person}'s flag.", editor.name),
    };
    timeline::record(doc, layout, editor, &text)
}
