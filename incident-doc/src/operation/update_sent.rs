//! [`Operation::MarkUpdateSent`]: the record that the Communications lead sent a status update (root key
//! `lastUpdate`) and its timeline entry. The fields the Communications lead keeps on a cadence fall due again
//! counted from the update (`view::Cadences`), but keep their *last updated* stamps: the sender did not edit them.
//! Rendering the update is `update`'s.
//!
//! [`Operation::MarkUpdateSent`]: crate::Operation::MarkUpdateSent

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ObjType, ROOT};

use crate::edit::{Edited, Editor, OpError, timestamp};
use crate::schema::{FieldDef, keys};

use super::timeline;

/// Records `lastUpdate` with the `heads` the update described, so the next update's "what changed" starts there.
/// Returns the timeline as the one field whose stamp moves.
pub(super) fn mark_sent(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    heads: &[String],
    note: Option<&str>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    for head in heads {
        head.parse::<ChangeHash>().map_err(|_| {
            OpError::InvalidValue(format!("{head:?} is not a document head (64 hex digits)"))
        })?;
    }
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    let text = match note {
        Some(note) => format!("Status update sent: {note}"),
        None => "Status update sent.".to_owned(),
    };
    let (applied, touched) = timeline::add_stamped(doc, layout, &text, None, editor)?;
    let record = doc.put_object(ROOT, keys::LAST_UPDATE, ObjType::Map)?;
    doc.put(&record, "at", timestamp(editor.at))?;
    doc.put(&record, "by", editor.name.as_str())?;
    let list = doc.put_object(&record, "heads", ObjType::List)?;
    for (i, head) in heads.iter().enumerate() {
        doc.insert(&list, i, head.as_str())?;
    }
    Ok((applied, touched))
}
