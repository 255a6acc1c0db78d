//! Restricting an incident to its members and changing who the commander added ([`crate::Access`]): root key
//! `access`, `{restricted, members}`. Each change is recorded in the timeline; the command rules let only the
//! commander or an administrator make it.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType};

use crate::edit::{Applied, Edited, Editor, OpError, check_short, list_or_map_root};
use crate::read::Reader;
use crate::schema::{FieldDef, keys};

use super::timeline;

/// The `access` map and its `members` list, created if the document lacks them (incidents declared open, or before
/// restriction existed).
fn containers(doc: &mut AutoCommit) -> Result<(ObjId, ObjId), OpError> {
    let access = list_or_map_root(doc, keys::ACCESS, ObjType::Map)?;
    let members = match Reader::new(&*doc, None).list(&access, "members") {
        Some(list) => list,
        None => doc.put_object(&access, "members", ObjType::List)?,
    };
    Ok((access, members))
}

/// Restricts the incident to its members, or opens it to everyone again. Setting what is already set writes
/// nothing, not even a timeline entry.
pub(super) fn set_restricted(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    restricted: bool,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let (is, _) = crate::access::read_access(&Reader::new(&*doc, None));
    if is == restricted {
        return Ok((Applied::default(), Vec::new()));
    }
    let (access, _) = containers(doc)?;
    doc.put(&access, "restricted", restricted)?;
    let text = if restricted {
        format!(
            "{} restricted the incident to its members (the declarer, the role holders and the people added).",
            editor.name
        )
    } else {
        format!("{} opened the incident to everyone.", editor.name)
    };
    timeline::record(doc, layout, editor, &text)
}

/// Adds `person` to the members; someone already added is left as they are.
pub(super) fn add_member(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    person: &str,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let person = valid_person(person)?;
    let (_, members) = containers(doc)?;
    let added = Reader::new(&*doc, None).strings_in(&members);
    if added.iter().any(|m| m == person) {
        return Ok((Applied::default(), Vec::new()));
    }
    doc.insert(&members, added.len(), person)?;
    let text = format!("{} added {person} to the incident's members.", editor.name);
    timeline::record(doc, layout, editor, &text)
}

/// Removes `person` from the added members. The declarer and the role holders stay members by what they are, so
/// only someone the commander added can be removed.
pub(super) fn remove_member(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    person: &str,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let person = valid_person(person)?;
    let (_, members) = containers(doc)?;
    let added = Reader::new(&*doc, None).strings_in(&members);
    let Some(index) = added.iter().position(|m| m == person) else {
        return Err(OpError::InvalidValue(format!(
            "{person} was not added to the members (the declarer and the role holders are members by their role)"
        )));
    };
    doc.delete(&members, index)?;
    let text = format!(
        "{} removed {person} from the incident's members.",
        editor.name
    );
    timeline::record(doc, layout, editor, &text)
}

fn valid_person(person: &str) -> Result<&str, OpError> {
    let person = person.trim();
    check_short("person", person)?;
    if person.is_empty() {
        return Err(OpError::InvalidValue("a member needs a name".into()));
    }
    Ok(person)
}
