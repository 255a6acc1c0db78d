//! Bare web addresses in prose (`https://meet.example.com/465`), found so the HTML export can make them links:
//! responders paste chat channels and call bridges into the command post as plain URLs, and a bridge that cannot
//! be clicked is a bridge nobody joins. Markdown links (`[chat](https://…)`) are links already.

/// A piece of text: plain, or a web address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text as it is.
    Text(&'a str),
    /// An `http://` or `https://` address.
    Url(&'a str),
}

/// Splits `text` into plain runs and web addresses. An address runs to the next whitespace or `<>"`; trailing
/// punctuation that usually ends a sentence (`.,;:!?` and an unbalanced `)`) is left out of it.
pub(crate) fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    // Plain text runs from `plain`; the search for the next address resumes at `at`.
    let (mut plain, mut at) = (0, 0);
    while let Some(found) = next_url(&text[at..]) {
        let start = at + found;
        let tail = &text[start..];
        let scheme = if tail.starts_with("https://") { 8 } else { 7 };
        let mut end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(tail.len());
        loop {
            let url = &tail[..end];
            let unbalanced = url.matches(')').count() > url.matches('(').count();
            match url.chars().last() {
                Some('.' | ',' | ';' | ':' | '!' | '?') => end -= 1,
                Some(')') if unbalanced => end -= 1,
                _ => break,
            }
        }
        // A scheme alone is not an address.
        if end <= scheme {
            at = start + scheme;
            continue;
        }
        if start > plain {
            out.push(Piece::Text(&text[plain..start]));
        }
        out.push(Piece::Url(&tail[..end]));
        plain = start + end;
        at = plain;
    }
    if plain < text.len() {
        out.push(Piece::Text(&text[plain..]));
    }
    out
}

fn next_url(text: &str) -> Option<usize> {
    [text.find("https://"), text.find("http://")]
        .into_iter()
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::Piece::{Text, Url};
    use super::pieces;

    #[test]
    fn finds_addresses_and_leaves_sentence_punctuation_out() {
        assert_eq!(
            pieces(
                "Bridge: https://meet.example.com/465, chat (https://chat.example.com/a_(b)). http://x.io"
            ),
            [
                Text("Bridge: "),
                Url("https://meet.example.com/465"),
                Text(", chat ("),
                Url("https://chat.example.com/a_(b)"),
                Text("). "),
                Url("http://x.io"),
            ]
        );
        assert_eq!(pieces("no links"), [Text("no links")]);
        assert_eq!(pieces("https:// alone"), [Text("https:// alone")]);
    }
}
