//! The edits of a field's own value: text and Markdown ([`Operation::SpliceText`], [`Operation::SetText`]), choices,
//! flags and the answers of a questions field.
//!
//! [`Operation::SpliceText`]: crate::Operation::SpliceText
//! [`Operation::SetText`]: crate::Operation::SetText

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc, ScalarValue};

use crate::edit::{
    Edited, MAX_TEXT_CHARS, OpError, check_text, field_of_kinds, map_field, text_field, text_of,
    too_long, touched,
};
use crate::schema::{FieldDef, FieldKind};

const TEXTUAL: &[FieldKind] = &[FieldKind::Text, FieldKind::Markdown];

/// Where a text edit happens: a text or markdown field's own text, or the text of one item of a checklist field.
pub(super) struct TextAt<'a> {
    pub field: &'a str,
    pub item: Option<&'a str>,
    /// In code points from the start.
    pub pos: usize,
}

/// One text edit as a client types it: positions in code points, checked against the text as it is now. An
/// item's text is one line, as `addItem` and `editItem` keep it.
pub(super) fn splice_text(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    at: TextAt<'_>,
    delete: usize,
    insert: &str,
) -> Result<Edited, OpError> {
    let TextAt { field, item, pos } = at;
    let def = match item {
        None => field_of_kinds(layout, field, TEXTUAL, "text or markdown")?,
        Some(_) => field_of_kinds(layout, field, &[FieldKind::Checklist], "checklist")?,
    };
    let kind = if item.is_some() {
        FieldKind::Text
    } else {
        def.kind
    };
    check_text(insert, kind)?;
    let text = text_of(doc, &def.key, item)?;
    let len = doc.length(&text);
    if pos > len || pos.saturating_add(delete) > len {
        return Err(OpError::InvalidValue(format!(
            "splice at {pos} deleting {delete} is outside the text of {field:?}, which is {len} characters long"
        )));
    }
    if len - delete + insert.chars().count() > MAX_TEXT_CHARS {
        return Err(too_long());
    }
    doc.splice_text(&text, pos, delete as isize, insert)?;
    Ok(touched(def))
}

/// A whole new text, diffed by Automerge so that concurrent edits elsewhere in it survive.
pub(super) fn set_text(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    text: &str,
) -> Result<Edited, OpError> {
    let def = field_of_kinds(layout, field, TEXTUAL, "text or markdown")?;
    check_text(text, def.kind)?;
    let obj = text_field(doc, &def.key)?;
    doc.update_text(&obj, text)?;
    Ok(touched(def))
}

/// Only the field's own option keys are stored, so every reader can label the value.
pub(super) fn set_choice(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    value: Option<&str>,
) -> Result<Edited, OpError> {
    let def = field_of_kinds(layout, field, &[FieldKind::Choice], "choice")?;
    match value {
        Some(v) if def.options.iter().any(|o| o.key == v) => doc.put(ROOT, &def.key, v)?,
        Some(v) => {
            let allowed: Vec<_> = def.options.iter().map(|o| o.key.as_str()).collect();
            return Err(OpError::InvalidValue(format!(
                "{v:?} is not an option of {field:?} (expected one of {})",
                allowed.join(", ")
            )));
        }
        None => doc.put(ROOT, &def.key, ScalarValue::Null)?,
    }
    Ok(touched(def))
}

pub(super) fn set_flag(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    value: bool,
) -> Result<Edited, OpError> {
    let def = field_of_kinds(layout, field, &[FieldKind::Flag], "flag")?;
    doc.put(ROOT, &def.key, value)?;
    Ok(touched(def))
}

/// An unanswered question has no key at all, so clearing an answer deletes it.
pub(super) fn answer(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    field: &str,
    question: &str,
    value: Option<bool>,
) -> Result<Edited, OpError> {
    let def = field_of_kinds(layout, field, &[FieldKind::Questions], "questions")?;
    if !def.options.iter().any(|o| o.key == question) {
        return Err(OpError::InvalidValue(format!(
            "{field:?} has no question {question:?}"
        )));
    }
    let map = map_field(doc, &def.key)?;
    match value {
        Some(v) => doc.put(&map, question, v)?,
        None => doc.delete(&map, question)?,
    }
    Ok(touched(def))
}
