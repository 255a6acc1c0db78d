//! Converting the browser's UTF-16 text offsets to the model's Unicode code points.
//!
//! JavaScript strings, and so `<textarea>` selections, `InputEvent`s and the JavaScript Automerge library, count
//! UTF-16 code units; commandpost's model counts code points (`incident_doc::schema::TEXT_ENCODING`). The two agree
//! until a character outside the Basic Multilingual Plane (most emoji) appears: it is one code point but two UTF-16
//! units, and every offset after it differs. This module is the one place that converts, always against the text
//! the offsets were measured in.
//!
//! Only code points are converted, never grapheme clusters: `e` followed by U+0301 (combining acute) is two code
//! points and two UTF-16 units, and an offset between them is valid in both. Keeping user-perceived characters
//! together is the editor's business, as it is in the JavaScript client.
//!
//! It also owns the caret rule ([`caret_cursor`], [`caret_position`]): a caret is anchored to the character
//! *before* it, the typist's own previous character, never to the one after it. Automerge inserts a character after
//! the one before its position, so a caret that stays behind its own last character keeps each person's run of
//! typing together when others type at the same spot; anchored to the character after it (or to the end), the
//! caret jumps past a remote insertion there and the next keystroke lands after the other person's. The start of a
//! selection is the one exception ([`selection_start_cursor`]): it is anchored to the first selected character,
//! so that text others type just before or just after a selection stays outside it, and replacing the selection
//! never deletes it.

use automerge::{AutoCommit, AutomergeError, Cursor, MoveCursor, ObjId, ReadDoc};

/// Why a UTF-16 offset has no code-point equivalent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// The offset falls between the two halves of a surrogate pair; splicing there would split a character.
    #[error("UTF-16 offset {offset} falls inside a surrogate pair")]
    InsideSurrogatePair {
        /// The offending offset.
        offset: usize,
    },
    /// The offset is beyond the end of the text.
    #[error("UTF-16 offset {offset} is past the end of the text ({len} UTF-16 units)")]
    PastEnd {
        /// The offending offset (`pos + delete` for the end of a deletion).
        offset: usize,
        /// The text's length in UTF-16 units.
        len: usize,
    },
}

/// The code-point index of UTF-16 offset `offset` in `text`.
pub fn code_points_from_utf16(text: &str, offset: usize) -> Result<usize, PositionError> {
    let mut units = 0;
    for (code_points, c) in text.chars().enumerate() {
        if units == offset {
            return Ok(code_points);
        }
        units += c.len_utf16();
        if units > offset {
            return Err(PositionError::InsideSurrogatePair { offset });
        }
    }
    if units == offset {
        Ok(text.chars().count())
    } else {
        Err(PositionError::PastEnd { offset, len: units })
    }
}

/// The code-point `(pos, delete)` of a splice the browser measured in UTF-16 units: both ends of the deleted range
/// must fall on character boundaries.
pub fn splice_range_from_utf16(
    text: &str,
    pos: usize,
    delete: usize,
) -> Result<(usize, usize), PositionError> {
    let end = pos.checked_add(delete).ok_or(PositionError::PastEnd {
        offset: usize::MAX,
        len: text.encode_utf16().count(),
    })?;
    let start = code_points_from_utf16(text, pos)?;
    let end = code_points_from_utf16(text, end)?;
    Ok((start, end - start))
}

/// The UTF-16 offset of code-point index `index` in `text`, clamped to the end: what a `<textarea>` needs to put
/// the caret back where a cursor resolved.
pub fn utf16_from_code_points(text: &str, index: usize) -> usize {
    text.chars().take(index).map(char::len_utf16).sum()
}

/// The stable address of a caret at code point `pos` of text `obj`: the character before it (Automerge's cursor
/// on index `pos - 1`), or the start of the text. Every caret and selection end the client keeps or sends goes
/// through here, so that the rule in this module's documentation holds in one place.
pub fn caret_cursor(doc: &AutoCommit, obj: &ObjId, pos: usize) -> Result<Cursor, AutomergeError> {
    match pos.checked_sub(1) {
        None => Ok(Cursor::Start),
        Some(before) => doc.get_cursor(obj, before, None),
    }
}

/// The stable address of the start of a non-empty selection beginning at code point `pos`: its first character,
/// marked as Automerge's "move before" cursor so that [`caret_position`] puts it *before* that character.
pub fn selection_start_cursor(
    doc: &AutoCommit,
    obj: &ObjId,
    pos: usize,
) -> Result<Cursor, AutomergeError> {
    doc.get_cursor_moving(obj, pos, None, MoveCursor::Before)
}

/// Where a cursor from [`caret_cursor`] or [`selection_start_cursor`] is now, in code points: just after a
/// caret's character, just before a selection start's. When someone deleted that character, it sits before the
/// next character that survives (Automerge resolves a cursor on a deleted character to the next visible one),
/// which is where the deletion was.
pub fn caret_position(
    doc: &AutoCommit,
    obj: &ObjId,
    cursor: &Cursor,
) -> Result<usize, AutomergeError> {
    let text = cursor.to_string();
    if let Some(after) = text.strip_prefix('-') {
        // A selection start: resolved as the same character's plain cursor, whose fallback is the next character.
        return doc.get_cursor_position(obj, &Cursor::try_from(after)?, None);
    }
    let index = doc.get_cursor_position(obj, cursor, None)?;
    let on_its_character = matches!(cursor, Cursor::Op(_))
        && index < doc.length(obj)
        && doc.get_cursor(obj, index, None)? == *cursor;
    Ok(if on_its_character { index + 1 } else { index })
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT};

    use super::*;

    /// A document whose `text` holds `content`, with its own actor `actor`.
    fn text_doc(actor: u8, content: &str) -> (AutoCommit, ObjId) {
        let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(vec![actor; 16]));
        let Ok(obj) = doc.put_object(ROOT, "text", ObjType::Text) else {
            panic!("put_object");
        };
        assert!(doc.splice_text(&obj, 0, 0, content).is_ok());
        (doc, obj)
    }

    fn caret(doc: &AutoCommit, obj: &ObjId, pos: usize) -> Cursor {
        match caret_cursor(doc, obj, pos) {
            Ok(c) => c,
            Err(e) => panic!("caret_cursor: {e}"),
        }
    }

    fn at(doc: &AutoCommit, obj: &ObjId, cursor: &Cursor) -> usize {
        match caret_position(doc, obj, cursor) {
            Ok(p) => p,
            Err(e) => panic!("caret_position: {e}"),
        }
    }

    /// Two people append to the same text at once, one key at a time, each exchanging changes after every key and
    /// putting their caret back through the caret rule: each person's words stay together.
    #[test]
    fn two_people_appending_at_once_keep_their_words_whole() {
        let (mut alice, obj) = text_doc(1, "Checkout errors.");
        let mut bob = alice
            .fork()
            .with_actor(automerge::ActorId::from(vec![2; 16]));
        let (mut alices, mut bobs) = (caret(&alice, &obj, 16), caret(&bob, &obj, 16));
        for (a, b) in " alpha".chars().zip(" bravo".chars()) {
            for (doc, key, c) in [(&mut alice, a, &mut alices), (&mut bob, b, &mut bobs)] {
                let pos = at(doc, &obj, c);
                assert!(doc.splice_text(&obj, pos, 0, &key.to_string()).is_ok());
                *c = caret(doc, &obj, pos + 1);
            }
            assert!(alice.merge(&mut bob).is_ok());
            assert!(bob.merge(&mut alice).is_ok());
        }
        let (Ok(a), Ok(b)) = (alice.text(&obj), bob.text(&obj)) else {
            panic!("text");
        };
        assert_eq!(a, b);
        assert!(
            a == "Checkout errors. alpha bravo" || a == "Checkout errors. bravo alpha",
            "{a:?}"
        );
    }

    #[test]
    fn a_caret_stays_behind_its_character_and_falls_back_when_it_is_deleted() {
        let (mut doc, obj) = text_doc(1, "abcd");
        let start = caret(&doc, &obj, 0);
        let after_b = caret(&doc, &obj, 2);
        let end = caret(&doc, &obj, 4);
        // Insertions at the caret's own spot go after it, wherever they come from.
        assert!(doc.splice_text(&obj, 2, 0, "XY").is_ok());
        assert!(doc.splice_text(&obj, 0, 0, ">").is_ok());
        assert_eq!(doc.text(&obj).ok().as_deref(), Some(">abXYcd"));
        assert_eq!(at(&doc, &obj, &start), 0);
        assert_eq!(at(&doc, &obj, &after_b), 3);
        assert_eq!(at(&doc, &obj, &end), 7);
        // Deleting "bX" takes the caret's character: it sits where the deletion was.
        assert!(doc.splice_text(&obj, 2, 2, "").is_ok());
        assert_eq!(doc.text(&obj).ok().as_deref(), Some(">aYcd"));
        assert_eq!(at(&doc, &obj, &after_b), 2);
        // Deleting everything leaves it at 0.
        assert!(doc.splice_text(&obj, 0, 5, "").is_ok());
        assert_eq!(at(&doc, &obj, &end), 0);
    }

    #[test]
    fn text_typed_at_either_end_of_a_selection_stays_outside_it() {
        let (mut doc, obj) = text_doc(1, "Checkout errors.");
        // "errors" is selected: from 9 to 15.
        let Ok(start) = selection_start_cursor(&doc, &obj, 9) else {
            panic!("selection_start_cursor");
        };
        let end = caret(&doc, &obj, 15);
        assert!(start.to_string().starts_with('-'));
        assert!(doc.splice_text(&obj, 15, 0, "]").is_ok());
        assert!(doc.splice_text(&obj, 9, 0, "[").is_ok());
        assert_eq!(doc.text(&obj).ok().as_deref(), Some("Checkout [errors]."));
        assert_eq!((at(&doc, &obj, &start), at(&doc, &obj, &end)), (10, 16));
        // The selected text deleted by someone else: both ends meet where it was.
        assert!(doc.splice_text(&obj, 10, 6, "").is_ok());
        assert_eq!((at(&doc, &obj, &start), at(&doc, &obj, &end)), (10, 10));
    }

    #[test]
    fn ascii_offsets_are_unchanged() {
        for i in 0..=5 {
            assert_eq!(code_points_from_utf16("hello", i), Ok(i));
        }
        assert_eq!(code_points_from_utf16("", 0), Ok(0));
    }

    #[test]
    fn an_emoji_is_two_units_but_one_code_point() {
        // "a👍b": a=1 unit, 👍 = 2 units (U+1F44D), b=1 unit.
        let text = "a\u{1F44D}b";
        assert_eq!(code_points_from_utf16(text, 0), Ok(0));
        assert_eq!(code_points_from_utf16(text, 1), Ok(1));
        assert_eq!(
            code_points_from_utf16(text, 2),
            Err(PositionError::InsideSurrogatePair { offset: 2 })
        );
        assert_eq!(code_points_from_utf16(text, 3), Ok(2));
        assert_eq!(code_points_from_utf16(text, 4), Ok(3));
        assert_eq!(utf16_from_code_points(text, 2), 3);
        assert_eq!(utf16_from_code_points(text, 3), 4);
        assert_eq!(utf16_from_code_points(text, 99), 4);
        assert_eq!(
            code_points_from_utf16(text, 5),
            Err(PositionError::PastEnd { offset: 5, len: 4 })
        );
    }

    #[test]
    fn a_zwj_sequence_counts_each_code_point() {
        // 👩‍🚒 = U+1F469 ZWJ U+1F692: 3 code points, 5 UTF-16 units, one grapheme.
        let text = "\u{1F469}\u{200D}\u{1F692}!";
        assert_eq!(code_points_from_utf16(text, 2), Ok(1));
        assert_eq!(code_points_from_utf16(text, 3), Ok(2));
        assert_eq!(code_points_from_utf16(text, 5), Ok(3));
        assert_eq!(code_points_from_utf16(text, 6), Ok(4));
        assert_eq!(splice_range_from_utf16(text, 0, 5), Ok((0, 3)));
    }

    #[test]
    fn combining_marks_are_their_own_code_points() {
        // "e\u{301}" renders as é but is two code points and two UTF-16 units; offsets map one to one, including
        // the offset between the base letter and its mark.
        let text = "cafe\u{301} \u{1F600}";
        assert_eq!(code_points_from_utf16(text, 4), Ok(4));
        assert_eq!(code_points_from_utf16(text, 5), Ok(5));
        assert_eq!(code_points_from_utf16(text, 6), Ok(6));
        assert_eq!(code_points_from_utf16(text, 8), Ok(7));
        // Delete the combining mark only.
        assert_eq!(splice_range_from_utf16(text, 4, 1), Ok((4, 1)));
        // Delete the space and the emoji: 3 units, 2 code points.
        assert_eq!(splice_range_from_utf16(text, 5, 3), Ok((5, 2)));
    }

    #[test]
    fn a_deletion_ending_inside_a_pair_is_refused() {
        let text = "x\u{1F44D}";
        assert_eq!(
            splice_range_from_utf16(text, 0, 2),
            Err(PositionError::InsideSurrogatePair { offset: 2 })
        );
        assert_eq!(
            splice_range_from_utf16(text, 1, usize::MAX),
            Err(PositionError::PastEnd {
                offset: usize::MAX,
                len: 3
            })
        );
    }
}
