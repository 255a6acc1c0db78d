//! A replay drill's bookkeeping ([`crate::replay`]): `beginReplay` writes the root key `replay` once, and
//! `deliverReplayStep` writes one step of the source's timeline (an alert through the alert record, as the hook
//! does) and moves the key's step counter on, only if the step is the next one: delivered twice (two nodes, or
//! again after a restart), it is refused and nothing changes. Only the server sends either: they carry what the
//! server read from another incident, which nobody else may claim.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use chrono::Duration;

use crate::edit::{Edited, Editor, OpError, field_by_kind};
use crate::read::Reader;
use crate::replay::{Step, read_replay, valid_speed};
use crate::schema::{FieldDef, FieldKind, SERVER_NAME, keys};

use super::{alert, timeline};

/// The replay a server begins: from which incident, how fast, how many steps.
pub(super) struct Begin<'a> {
    pub source: &'a str,
    pub source_number: Option<i64>,
    pub speed: f64,
    pub total: u32,
}

/// Refuses anyone but the server.
fn server_only(editor: &Editor) -> Result<(), OpError> {
    if editor.name == SERVER_NAME {
        Ok(())
    } else {
        Err(OpError::Forbidden(
            "only the server delivers a replay drill's steps".into(),
        ))
    }
}

/// Writes the `replay` key of a new replay drill, with a timeline entry saying what it replays.
pub(super) fn begin(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    begin: Begin<'_>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    server_only(editor)?;
    if !valid_speed(begin.speed) {
        return Err(OpError::InvalidValue(format!(
            "a replay's speed is from {} to {} in hundredths",
            crate::replay::MIN_SPEED,
            crate::replay::MAX_SPEED
        )));
    }
    if Reader::new(&*doc, None).map(&ROOT, keys::REPLAY).is_some() {
        return Err(OpError::InvalidValue(
            "this drill already replays an incident".into(),
        ));
    }
    field_by_kind(layout, FieldKind::Timeline)?;
    let map = doc.put_object(ROOT, keys::REPLAY, ObjType::Map)?;
    doc.put(&map, "source", begin.source)?;
    if let Some(n) = begin.source_number {
        doc.put(&map, "sourceNumber", n)?;
    }
    doc.put(&map, "speedCenti", (begin.speed * 100.0).round() as i64)?;
    doc.put(&map, "step", 0_i64)?;
    doc.put(&map, "total", i64::from(begin.total))?;
    let view = read_replay(&Reader::new(&*doc, None))
        .ok_or_else(|| OpError::Malformed(keys::REPLAY.into()))?;
    let text = format!(
        "This drill {}: they arrive at their original relative times; the players write the rest.",
        view.describe()
    );
    timeline::record(doc, layout, editor, &text)
}

/// Delivers step `number` (counting from 1) of the replay: refused unless the document's last delivered step is
/// `number - 1`.
pub(super) fn deliver(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    number: u32,
    step: &Step,
    editor: &Editor,
) -> Result<Edited, OpError> {
    server_only(editor)?;
    let Some(replay) = read_replay(&Reader::new(&*doc, None)) else {
        return Err(OpError::InvalidValue(
            "this incident is not a replay drill".into(),
        ));
    };
    if replay.step + 1 != i64::from(number) || i64::from(number) > replay.total {
        return Err(OpError::InvalidValue(format!(
            "step {number} is not the next step of this replay (step {} of {} was the last delivered)",
            replay.step, replay.total
        )));
    }
    let text = step.drill_text();
    let edited = match &step.alert {
        Some(a) => {
            let before =
                Duration::milliseconds((a.started_before_ms as f64 / replay.speed).round() as i64);
            let notification = alert::Alert {
                fingerprint: &a.fingerprint,
                firing: a.firing,
                starts_at: editor.at - before,
                text: &text,
                at: editor.at,
            };
            alert::record(doc, layout, notification, editor)?
        }
        None => timeline::add_stamped(doc, layout, &text, None, editor)?,
    };
    let map = Reader::new(&*doc, None)
        .map(&ROOT, keys::REPLAY)
        .ok_or_else(|| OpError::Malformed(keys::REPLAY.into()))?;
    doc.put(&map, "step", i64::from(number))?;
    Ok(edited)
}
