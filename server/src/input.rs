//! What people type to name an incident or a moment, read the same way by the HTTP API and the CLI.

use chrono::{DateTime, NaiveDate, Utc};

use wire::DocumentId;

/// The incident `text` names, by its id or its `automerge:` URL (what the UI shows and clients copy), or `None`:
/// each caller words its own refusal.
pub fn parse_incident(text: &str) -> Option<DocumentId> {
    text.parse()
        .ok()
        .or_else(|| DocumentId::parse_url(text).ok())
}

/// The moment `text` names, an RFC 3339 time or a date standing for its midnight UTC, or `None`: each caller words
/// its own refusal, naming its own parameter.
pub fn parse_moment(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example `commandpost import --help` and its refusal give must be an id the command takes.
    #[test]
    fn the_documented_example_id_is_an_id() {
        let id = parse_incident("t3NSKfb4wJQdkb2QFC6ukUTpLFg").expect("the example parses");
        assert_eq!(parse_incident(&id.url()), Some(id));
        assert_eq!(parse_incident("00465"), None);
    }
}
