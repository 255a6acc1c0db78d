//! Roles and their handoffs: a role assigned outright ([`Operation::AssignRole`]), or proposed to someone
//! (root key `handoffs`) who takes it by accepting, which the timeline records. Command itself is never assigned
//! outright but taken while nobody holds it, accepted, or overridden by an administrator
//! ([`Operation::OverrideCommand`]); the command rules refuse the rest.
//!
//! [`Operation::AssignRole`]: crate::Operation::AssignRole
//! [`Operation::OverrideCommand`]: crate::Operation::OverrideCommand

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc};

use crate::edit::{
    Applied, Edited, Editor, OpError, append_audit, check_short, check_text, field_by_kind,
    list_or_map_root, map_field, timestamp, touched,
};
use crate::read::Reader;
use crate::rules::COMMAND_OVERRIDE;
use crate::schema::{FieldDef, FieldKind, Role, keys};

use super::timeline;

/// A blank person clears the role. Taking command while nobody holds it is the one outright change of command the
/// rules allow, so the timeline records who took it, as it records an accepted handoff.
pub(super) fn assign(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    role: Role,
    person: Option<&str>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Roles)?;
    let map = map_field(doc, &def.key)?;
    let vacant = holder(doc, &map, role).is_none();
    let mut touched = vec![def.key.clone()];
    match person.map(str::trim) {
        Some(p) if !p.is_empty() => {
            check_short("person", p)?;
            doc.put(&map, role.as_str(), p)?;
            if role == Role::Commander && vacant {
                let text = format!("{p} took command (nobody held it).");
                touched.extend(record(doc, layout, editor, &text)?);
            }
        }
        _ => doc.delete(&map, role.as_str())?,
    }
    Ok((Applied::default(), touched))
}

/// Makes `person` the commander at an administrator's word: the pending handoff of command goes (it is moot), and
/// both the timeline and the audit trail say who overrode whom and why, since nobody accepted anything.
pub(super) fn override_command(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    person: &str,
    reason: &str,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Roles)?;
    let (person, reason) = (person.trim(), reason.trim());
    check_short("person", person)?;
    check_text(reason, FieldKind::Text)?;
    if person.is_empty() || reason.is_empty() {
        return Err(OpError::InvalidValue(
            "overriding command needs the new commander and a reason for the record".into(),
        ));
    }
    let roles = map_field(doc, &def.key)?;
    let from = holder(doc, &roles, Role::Commander);
    doc.put(&roles, Role::Commander.as_str(), person)?;
    let handoffs = handoffs(doc)?;
    if doc.get(&handoffs, Role::Commander.as_str())?.is_some() {
        doc.delete(&handoffs, Role::Commander.as_str())?;
    }
    let text = format!(
        "{person} is now the Incident Commander by {}'s override{}: {reason}",
        editor.name,
        from.map(|f| format!(" (was {f})")).unwrap_or_default()
    );
    append_audit(doc, editor.at, &editor.name, COMMAND_OVERRIDE, &text)?;
    let mut touched = vec![def.key.clone()];
    touched.extend(record(doc, layout, editor, &text)?);
    Ok((Applied::default(), touched))
}

/// Writes a timeline entry about a change of roles, if the template has a timeline; the keys it touched.
fn record(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    editor: &Editor,
    text: &str,
) -> Result<Option<String>, OpError> {
    match field_by_kind(layout, FieldKind::Timeline) {
        Ok(timeline) => {
            timeline::write_entry(doc, timeline, editor.at, editor, text)?;
            Ok(Some(timeline.key.clone()))
        }
        Err(_) => Ok(None),
    }
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
    let text = format!(
        "{} is now the {}{}.",
        editor.name,
        role.label(),
        from.map(|f| format!(" (handed over by {f})"))
            .unwrap_or_default()
    );
    touched.extend(record(doc, layout, editor, &text)?);
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
