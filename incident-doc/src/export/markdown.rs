//! Markdown export: the state document as responders would write it by hand, most important facts first.

use std::fmt::Write;

use super::time::format_time;
use crate::schema::{FieldKind, Role, Stage, TITLE_KEY};
use crate::view::{Change, Deviation, Entry, FieldValue, FieldView, IncidentView};

/// The incident as Markdown: title, pinned fields, then every field in template order.
pub fn markdown(view: &IncidentView) -> String {
    let mut out = String::new();
    let title = if view.headline.title.trim().is_empty() {
        "Untitled incident".to_owned()
    } else {
        inline(&view.headline.title)
    };
    // Writing to a String cannot fail; the results are ignored for that reason throughout this module.
    let _ = writeln!(out, "# {title}\n");
    let mut meta = vec![inline(&view.template_name)];
    if let Some(n) = view.headline.number {
        meta.push(format!("#{n}"));
    }
    if let Some(at) = view.headline.created_at {
        let by = view
            .created_by
            .as_deref()
            .map(|b| format!(" by {}", inline(b)))
            .unwrap_or_default();
        meta.push(format!("declared {}{by}", format_time(at)));
    }
    let _ = writeln!(out, "_{}_\n", meta.join(" · "));
    if view.headline.drill {
        let _ = writeln!(
            out,
            "> **Drill:** this is a practice incident, not a real one.\n"
        );
    }
    if let Some(replay) = &view.replay {
        let _ = writeln!(out, "> **Replay:** this drill {}.\n", replay.describe());
    }
    for (field, pinned) in view.render_order() {
        if field.def.key == TITLE_KEY && !pinned {
            continue;
        }
        let marker = if pinned { " (pinned)" } else { "" };
        let _ = writeln!(out, "## {}{marker}\n", inline(&field.def.label));
        let body = field_body(view, field);
        out.push_str(body.trim_end());
        out.push_str("\n\n");
        if field.def.stamp
            && let Some(s) = &field.updated
        {
            let _ = writeln!(
                out,
                "_Last updated at {} by {}._\n",
                format_time(s.at),
                inline(&s.by)
            );
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

fn empty(field: &FieldView, fallback: &str) -> String {
    match &field.def.prompt {
        Some(p) => format!("_{}_", inline(p)),
        None => format!("_{fallback}_"),
    }
}

fn field_body(view: &IncidentView, field: &FieldView) -> String {
    let mut out = String::new();
    match &field.value {
        FieldValue::Text(t) if t.trim().is_empty() => out = empty(field, "Empty."),
        FieldValue::Text(t) if field.def.kind == FieldKind::Text => out = inline(t),
        FieldValue::Text(t) => out = t.trim_end().to_owned(),
        FieldValue::Choice(None) => out = empty(field, "Not set."),
        FieldValue::Choice(Some(v)) => {
            out = format!("**{}**", inline(v));
            if let Some(o) = field
                .def
                .options
                .iter()
                .find(|o| &o.key == v && o.label != o.key)
            {
                let _ = write!(out, ": {}", inline(&o.label));
            }
            if field.def.kind == FieldKind::Status
                && let Some(n) = view.headline.number
            {
                let _ = write!(out, " · incident #{n}");
            }
        }
        FieldValue::Flag(b) => out = if *b { "yes" } else { "no" }.to_owned(),
        FieldValue::Roles(_) => {
            for role in Role::ALL {
                let holder = match view.holder(*role) {
                    Some((person, false)) => inline(person),
                    Some((person, true)) => format!("{} (as commander)", inline(person)),
                    None => "_none_".to_owned(),
                };
                let _ = writeln!(out, "- **{}:** {holder}", role.label());
            }
        }
        FieldValue::Checklist(items) if items.is_empty() => out = empty(field, "None yet."),
        FieldValue::Checklist(items) => {
            for item in items {
                let mark = if item.done { "x" } else { " " };
                let _ = write!(out, "- [{mark}] {}", inline(&item.text));
                if let Some(owner) = &item.owner {
                    let _ = write!(out, " · owner: {}", inline(owner));
                }
                if let Some(bug) = &item.bug {
                    let _ = write!(out, " · bug: {}", inline(bug));
                }
                out.push('\n');
            }
        }
        FieldValue::Timeline(entries) if entries.is_empty() => {
            out = empty(field, "No entries yet.")
        }
        FieldValue::Timeline(entries) => timeline(&mut out, entries),
        FieldValue::Timestamps(stamps) => {
            for stage in Stage::ALL {
                let at = stamps
                    .get(stage)
                    .map_or_else(|| "_not yet_".to_owned(), |t| format_time(*t));
                let _ = writeln!(out, "- **{}:** {at}", stage.label());
            }
        }
        FieldValue::Deviations(list) if list.is_empty() => out = empty(field, "None."),
        FieldValue::Deviations(list) => {
            for deviation in list {
                let _ = writeln!(out, "{}", deviation_line(deviation));
            }
        }
        FieldValue::Changes(list) if list.is_empty() => out = empty(field, "No changes logged."),
        FieldValue::Changes(list) => {
            for change in list {
                let _ = writeln!(out, "{}", change_line(change));
            }
        }
        FieldValue::Questions(answers) => {
            for q in &field.def.options {
                let answer = match answers.get(&q.key) {
                    Some(true) => "**yes**",
                    Some(false) => "**no**",
                    None => "_unanswered_",
                };
                let _ = writeln!(out, "- {} {answer}", inline(&q.label));
            }
        }
    }
    out
}

/// A deviation as a task: reverted or not, what was changed, how to revert it, who and when (also the postmortem's
/// and the status update's line).
pub(crate) fn deviation_line(d: &Deviation) -> String {
    let mark = if d.reverted.is_some() { "x" } else { " " };
    let mut out = format!(
        "- [{mark}] {} · revert: {} · by {} at {}",
        inline(&d.what),
        inline(&d.revert),
        inline(&d.by),
        format_time(d.at)
    );
    if let Some(r) = &d.reverted {
        let _ = write!(
            out,
            " · reverted by {} at {}",
            inline(&r.by),
            format_time(r.at)
        );
        if let Some(note) = &r.note {
            let _ = write!(out, ": {}", inline(note));
        }
    }
    out
}

/// An operations log entry: when, who, on what, what, and the uncoordinated mark (also the postmortem's and the
/// status update's line).
pub(crate) fn change_line(c: &Change) -> String {
    format!(
        "- {} **{}** on {}: {}{}",
        format_time(c.at),
        inline(&c.by),
        inline(&c.target),
        inline(&c.what),
        if c.uncoordinated {
            " · **uncoordinated**"
        } else {
            ""
        }
    )
}

/// Entries newest first, grouped under `### <time> <author>` while consecutive entries share both.
fn timeline(out: &mut String, entries: &[Entry]) {
    let mut current: Option<(String, &str)> = None;
    for entry in entries {
        let header = (format_time(entry.at), entry.author.as_str());
        if current.as_ref() != Some(&header) {
            if current.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "### {} {}\n", header.0, inline(header.1));
            current = Some(header);
        }
        let mut lines = entry.text.trim().lines();
        let _ = writeln!(out, "- {}", lines.next().unwrap_or_default());
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
    }
}

/// Plain text made safe to embed in a Markdown line: it cannot start a block or open emphasis, links or HTML.
pub(super) fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::inline;

    #[test]
    fn inline_text_cannot_open_markup() {
        assert_eq!(
            inline("a *b* [c](d) <e>\n# f"),
            "a \\*b\\* \\[c\\](d) \\<e\\> \\# f"
        );
    }
}
