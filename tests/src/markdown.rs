//! Reading one field back out of the Markdown export, so tests can compare what a person would read with what the
//! sync clients hold.

/// The body of the `## {label}` section of a Markdown export, without its *Last updated* stamp line; `None` when the
/// export has no such section.
///
/// The export writes a markdown field's text with trailing whitespace trimmed, so compare it with
/// `text.trim_end()`. An empty field renders as its italic prompt, not as an empty string.
pub fn markdown_section(markdown: &str, label: &str) -> Option<String> {
    let heading = format!("## {label}\n\n");
    let pinned = format!("## {label} (pinned)\n\n");
    let start = if markdown.starts_with(&heading) {
        heading.len()
    } else if let Some(at) = markdown.find(&format!("\n{heading}")) {
        at + 1 + heading.len()
    } else {
        let at = markdown.find(&format!("\n{pinned}"))?;
        at + 1 + pinned.len()
    };
    let rest = &markdown[start..];
    let end = rest.find("\n\n## ").unwrap_or(rest.len());
    let mut body = rest[..end].trim_end();
    if let Some(at) = body.rfind("\n\n_Last updated at ") {
        body = &body[..at];
    } else if body.starts_with("_Last updated at ") {
        body = "";
    }
    Some(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::markdown_section;

    const EXPORT: &str = "# Title\n\n_General incident · #1_\n\n## Summary\n\nLine one.\n\nLine two.\n\n\
                          _Last updated at 2026-11-25 04:00 UTC by alice._\n\n## Status\n\n**declared**\n";

    #[test]
    fn finds_a_section_and_drops_its_stamp() {
        assert_eq!(
            markdown_section(EXPORT, "Summary").as_deref(),
            Some("Line one.\n\nLine two.")
        );
        assert_eq!(
            markdown_section(EXPORT, "Status").as_deref(),
            Some("**declared**")
        );
        assert_eq!(markdown_section(EXPORT, "Severity"), None);
    }
}
