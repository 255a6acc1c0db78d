//! Roles and their handoffs: a role assigned outright ([`Operation::AssignRole`]), or proposed to someone
//! (root key `handoffs`) who takes it by accepting, which the timeline records.
//!
//! [`Operation::AssignRole`]: crate::Operation::AssignRole

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc};

use crate::edit::{
    Applied, Edited, Editor, OpError, check_short, field_by_kind, list_or_map_root, map_field,
    timestamp, touched,
};
use crate::read::Reader;
use crate::schema::{FieldDef, FieldKind, Role, keys};

use super::timeline;

/// A blank person clears the role.
pub(super) fn assign(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    role: Role,
    person: Option<&str>,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Roles)?;
    let map = map_field(doc, &def.key)?;
    match person.map(str::trim) {
        Some(p) if !p.is_empty() => {
            check_short("person", p)?;
            doc.put(&map, role.as_str(), p)?;
        }
        _ => doc.delete(&map, role.as_str())?,
    }
    Ok(touched(def))
}

/// One pending handoff per role: a new proposal replaces the last.
pub(super) fn propose_handoff(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    role: Role,
    to: &str,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Roles)?;
    let to = to.trim();
    check_short("person", to)?;
    if to.is_empty() {
        return Err(OpError::InvalidValue(
            "a handoff needs the person who takes over".into(),
        ));
    }
    let handoffs = handoffs(doc)?;
    let handoff = doc.put_object(&handoffs, role.as_str(), ObjType::Map)?;
    doc.put(&handoff, "to", to)?;
    doc.put(&handoff, "by", editor.name.as_str())?;
    doc.put(&handoff, "at", timestamp(editor.at))?;
    Ok(touched(def))
}

/// Only the proposed recipient may accept: a role changes hands only when both sides agreed to it.
pub(super) fn accept_handoff(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    role: Role,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Roles)?;
    let handoffs = handoffs(doc)?;
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
    let from = holder(doc, &roles, role);
    doc.put(&roles, role.as_str(), editor.name.as_str())?;
    doc.delete(&handoffs, role.as_str())?;
    // The planned next commander has become the commander.
    if role == Role::Commander
        && Reader::new(&*doc, None)
            .str(&roles, Role::NextCommander.as_str())
            .as_deref()
            == Some(editor.name.as_str())
    {
        doc.delete(&roles, Role::NextCommander.as_str())?;
    }
    let mut touched = vec![def.key.clone()];
    if let Ok(timeline) = field_by_kind(layout, FieldKind::Timeline) {
        let text = format!(
            "{} is now the {}{}.",
            editor.name,
            role.label(),
            from.map(|f| format!(" (handed over by {f})"))
                .unwrap_or_default()
        );
        timeline::write_entry(doc, timeline, editor.at, editor, &text)?;
        touched.push(timeline.key.clone());
    }
    Ok((Applied::default(), touched))
}

pub(super) fn cancel_handoff(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    role: Role,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Roles)?;
    let handoffs = handoffs(doc)?;
    if doc.get(&handoffs, role.as_str())?.is_none() {
        return Err(OpError::InvalidValue(format!(
            "no handoff of the {} is pending",
            role.label()
        )));
    }
    doc.delete(&handoffs, role.as_str())?;
    Ok(touched(def))
}

fn handoffs(doc: &mut AutoCommit) -> Result<ObjId, OpError> {
    list_or_map_root(doc, keys::HANDOFFS, ObjType::Map)
}

/// Who holds `role` now, as the view reads it: a role that defaults to the commander is the commander's while
/// nobody holds it.
fn holder(doc: &AutoCommit, roles: &ObjId, role: Role) -> Option<String> {
    let r = Reader::new(doc, None);
    r.str(roles, role.as_str()).or_else(|| {
        role.defaults_to_commander()
            .then(|| r.str(roles, Role::Commander.as_str()))
            .flatten()
    })
}
