//! The timeline: entries added ([`Operation::AddTimelineEntry`]), their text edited and, by their author soon
//! after, removed (the command rules judge who and when); and the entries other
//! operations write on their way (a close with an override, a reopening, an accepted handoff, an alert, a status
//! update sent).
//!
//! [`Operation::AddTimelineEntry`]: crate::Operation::AddTimelineEntry

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc};
use chrono::{DateTime, Utc};

use crate::edit::{
    Applied, Edited, Editor, OpError, check_dated, check_text, field_by_kind, find_item,
    list_field, nested_text, put_id, remove_listed, stamped, timestamp, touched,
};
use crate::schema::{FieldDef, FieldKind};

/// Adds an entry by `editor`; `at` backdates it (a bot reporting when an alert started). Returns its id.
pub(super) fn add(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    text: &str,
    at: Option<DateTime<Utc>>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Timeline)?;
    check_text(text, FieldKind::Markdown)?;
    if text.trim().is_empty() {
        return Err(OpError::InvalidValue("a timeline entry needs text".into()));
    }
    let id = write_entry(doc, def, at.unwrap_or(editor.at), editor, text)?;
    Ok((Applied { id: Some(id) }, vec![def.key.clone()]))
}

/// [`add`] for [`Operation::AddTimelineEntry`], whose `at` a person or bot chose: refused when later than
/// [`FUTURE_SKEW`] from now, the limit the rules set for entries that arrive over sync. A typo'd year would put the
/// entry above everything in a newest-first timeline, for good, and stretch its author's edit grace.
/// (An alert's time is Alertmanager's and goes through [`add`] directly.)
///
/// [`Operation::AddTimelineEntry`]: crate::Operation::AddTimelineEntry
pub(super) fn add_dated(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    text: &str,
    at: Option<DateTime<Utc>>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    check_dated("timeline entry", at, editor)?;
    add(doc, layout, text, at, editor)
}

/// [`add`] on behalf of another operation, stamped at once as an entry added on its own would be.
pub(super) fn add_stamped(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    text: &str,
    at: Option<DateTime<Utc>>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let added = add(doc, layout, text, at, editor)?;
    stamped(doc, editor, added)
}

/// Appends the entry `{id, at, author, text}` to the timeline field `def`, without [`add`]'s checks: for text
/// commandpost writes itself. Returns the entry's id.
pub(super) fn write_entry(
    doc: &mut AutoCommit,
    def: &FieldDef,
    at: DateTime<Utc>,
    editor: &Editor,
    text: &str,
) -> Result<String, OpError> {
    let list = list_field(doc, &def.key)?;
    let entry = doc.insert_object(&list, doc.length(&list), ObjType::Map)?;
    let id = put_id(doc, &entry)?;
    doc.put(&entry, "at", timestamp(at))?;
    doc.put(&entry, "author", editor.name.as_str())?;
    let t = doc.put_object(&entry, "text", ObjType::Text)?;
    doc.splice_text(&t, 0, 0, text)?;
    Ok(id)
}

/// The timeline entry of a command decision that touches no field (who may see the incident, its channel), if the
/// template has a timeline; its key is what the change touched.
pub(super) fn record(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    editor: &Editor,
    text: &str,
) -> Result<Edited, OpError> {
    match field_by_kind(layout, FieldKind::Timeline) {
        Ok(def) => {
            write_entry(doc, def, editor.at, editor, text)?;
            Ok((Applied::default(), vec![def.key.clone()]))
        }
        Err(_) => Ok((Applied::default(), Vec::new())),
    }
}

/// Replaces an entry's text; Automerge diffs it, so a concurrent edit of the same entry survives where it can.
pub(super) fn edit(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    id: &str,
    text: &str,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Timeline)?;
    check_text(text, FieldKind::Markdown)?;
    let entry = find_item(doc, &def.key, id)?;
    let t = nested_text(doc, &entry, &def.key)?;
    doc.update_text(&t, text)?;
    Ok(touched(def))
}

/// Removes an entry. Whether its sender may (its author, within the grace period) is the command rules' to say,
/// as for a removal that arrives as a raw change.
pub(super) fn remove(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    id: &str,
) -> Result<Edited, OpError> {
    let def = field_by_kind(layout, FieldKind::Timeline)?;
    remove_listed(doc, &def.key, id)?;
    Ok(touched(def))
}
