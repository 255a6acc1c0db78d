//! The lifecycle: the status ([`Operation::SetStatus`], closing with its exit criteria or an override), the
//! lifecycle timestamps, and the reopening of a closed incident.
//!
//! [`Operation::SetStatus`]: crate::Operation::SetStatus

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use chrono::{DateTime, Utc};

use crate::edit::{
    Applied, Edited, Editor, OPEN_DEVIATION, OpError, closing_blockers, field_by_kind, is_archived,
    map_field, stamped, timestamp, touched,
};
use crate::read::Reader;
use crate::schema::{FieldDef, FieldKind, Stage, Status, keys};

use super::timeline;

/// Entering a state stamps its stage only the first time, so a flapping status keeps the first moment it was
/// mitigated or resolved. Closing writes a timeline entry: who closed it or, over open exit criteria, the override
/// and its reason (also kept in `closeOverride`); whether the editor may close at all is the command rules' call.
pub(super) fn set_status(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    status: Status,
    override_reason: Option<&str>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Status)?;
    let mut applied = Applied::default();
    let mut touched = vec![def.key.clone()];
    let mut recorded = false;
    if let Some(reason) = override_reason {
        if status != Status::Closed {
            return Err(OpError::InvalidValue(
                "an override reason only applies to closing".into(),
            ));
        }
        if reason.trim().is_empty() {
            return Err(OpError::InvalidValue(
                "closing with exit criteria or deviations open needs a reason for the timeline"
                    .into(),
            ));
        }
        let open = closing_blockers(&Reader::new(&*doc, None), layout);
        if !open.is_empty() {
            let over = doc.put_object(ROOT, keys::CLOSE_OVERRIDE, ObjType::Map)?;
            doc.put(&over, "reason", reason.trim())?;
            doc.put(&over, "by", editor.name.as_str())?;
            doc.put(&over, "at", timestamp(editor.at))?;
            let what = if open.iter().any(|o| o.starts_with(OPEN_DEVIATION)) {
                "exit criteria or deviations"
            } else {
                "exit criteria"
            };
            let text = format!(
                "Closed with {} {what} open ({}): {}",
                open.len(),
                open.join("; "),
                reason.trim()
            );
            let (added, fields) = timeline::add_stamped(doc, layout, &text, None, editor)?;
            applied = added;
            touched.extend(fields);
            recorded = true;
        }
    }
    // Closing ends the response: the timeline says who closed it, whichever way.
    let closing = status == Status::Closed && !is_archived(&Reader::new(&*doc, None), layout);
    if closing && !recorded {
        let text = format!("Closed by {}.", editor.name);
        let (added, fields) = timeline::add_stamped(doc, layout, &text, None, editor)?;
        applied = added;
        touched.extend(fields);
    }
    doc.put(ROOT, &def.key, status.as_str())?;
    if let (Some(stage), Ok(ts)) = (status.stage(), field_by_kind(layout, FieldKind::Timestamps)) {
        let map = map_field(doc, &ts.key)?;
        if Reader::new(&*doc, None)
            .time(&map, stage.as_str())
            .is_none()
        {
            doc.put(&map, stage.as_str(), timestamp(editor.at))?;
            touched.push(ts.key.clone());
        }
    }
    Ok((applied, touched))
}

/// Corrects a lifecycle moment by hand (e.g. when impact really started); `None` clears it.
pub(super) fn set_timestamp(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    stage: Stage,
    at: Option<DateTime<Utc>>,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Timestamps)?;
    let map = map_field(doc, &def.key)?;
    match at {
        Some(t) => doc.put(&map, stage.as_str(), timestamp(t))?,
        None => doc.delete(&map, stage.as_str())?,
    }
    Ok(touched(def))
}

/// Reopens an archive into `status` (default resolved). The `closed` stamp and any close override go, so that the
/// next close records its own moment and is judged on the exit criteria as they will be then.
pub(super) fn reopen(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    reason: &str,
    status: Option<Status>,
    editor: &Editor,
) -> Result<Edited, OpError> {
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
    let set = set_status(doc, layout, status, None, editor)?;
    let mut touched = stamped(doc, editor, set)?.1;
    if let Ok(ts) = field_by_kind(layout, FieldKind::Timestamps) {
        let map = map_field(doc, &ts.key)?;
        doc.delete(&map, Stage::Closed.as_str())?;
        touched.push(ts.key.clone());
    }
    if doc.get(ROOT, keys::CLOSE_OVERRIDE)?.is_some() {
        doc.delete(ROOT, keys::CLOSE_OVERRIDE)?;
    }
    let text = format!("Reopened ({status}): {}", reason.trim());
    let (applied, fields) = timeline::add_stamped(doc, layout, &text, None, editor)?;
    touched.extend(fields);
    let mut unique: Vec<String> = Vec::with_capacity(touched.len());
    for key in touched {
        if !unique.contains(&key) {
            unique.push(key);
        }
    }
    Ok((applied, unique))
}
