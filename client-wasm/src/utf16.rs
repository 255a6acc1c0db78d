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

#[cfg(test)]
mod tests {
    use super::*;

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
