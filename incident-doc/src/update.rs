//! The Communications lead's periodic status update: what stakeholders get by email or chat, rendered from the
//! document ([`status_update`]), and the record of the last one sent ([`Incident::last_update`]), which
//! [`Operation::MarkUpdateSent`] writes.
//!
//! That record is the root key `lastUpdate` (`{at, by, heads}`: when, by whom, and the document heads the update
//! described). The next update's "what changed" compares the document with the one at those heads.
//!
//! [`Operation::MarkUpdateSent`]: crate::Operation::MarkUpdateSent

use std::fmt::Write;

use automerge::{ChangeHash, ROOT, ReadDoc};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Incident;
use crate::export::format_time;
use crate::read::Reader;
use crate::schema::{FieldKind, Role, keys};
use crate::view::{Entry, FieldValue, IncidentView};

/// The root key of the last update's record.
pub const LAST_UPDATE_KEY: &str = keys::LAST_UPDATE;

/// Timeline entries listed under "what changed" at most; older ones are counted.
const MAX_ENTRIES: usize = 15;

/// The record of the last status update sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastUpdate {
    /// When it was marked as sent.
    pub at: DateTime<Utc>,
    /// Who sent it.
    pub by: String,
    /// The document heads it described (empty if unknown): "what changed" is measured from them.
    #[serde(serialize_with = "hex_heads")]
    pub heads: Vec<ChangeHash>,
}

fn hex_heads<S: serde::Serializer>(heads: &[ChangeHash], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(heads.iter().map(ToString::to_string))
}

impl Incident {
    /// The document's heads as hex strings: what an update describes, in the form `MarkUpdateSent` takes.
    pub fn head_strings(&mut self) -> Vec<String> {
        self.doc_mut()
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The last status update marked as sent, if any.
    pub fn last_update(&self) -> Option<LastUpdate> {
        let r = Reader::new(self.doc(), None);
        let map = r.map(&ROOT, LAST_UPDATE_KEY)?;
        let heads = r
            .list(&map, "heads")
            .map(|list| {
                (0..self.doc().length(&list))
                    .filter_map(|i| r.str(&list, i)?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Some(LastUpdate {
            at: r.time(&map, "at")?,
            by: r.str(&map, "by").unwrap_or_default(),
            heads,
        })
    }
}

/// How a status update is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFormat {
    /// Plain text for email bodies and chat; Markdown fields are kept as written.
    Text,
    /// Markdown, for chat tools and wikis that render it.
    Markdown,
}

/// The status update: headline, status, severity, commander, summary, detailed status, what changed since the last
/// update (the document `before` as it was then), the command post and when the next update is due. `written_at` is
/// the moment printed on it.
pub fn status_update(
    view: &IncidentView,
    before: Option<(&LastUpdate, &IncidentView)>,
    written_at: DateTime<Utc>,
    format: UpdateFormat,
) -> String {
    let md = format == UpdateFormat::Markdown;
    let heading = |out: &mut String, text: &str| {
        let _ = if md {
            writeln!(out, "### {text}\n")
        } else {
            writeln!(out, "{text}:")
        };
    };
    let mut out = String::new();
    let h = &view.headline;
    let mut title = String::new();
    if h.drill {
        title.push_str("[DRILL] ");
    }
    if let Some(n) = h.number {
        let _ = write!(title, "#{n} ");
    }
    title.push_str(if h.title.trim().is_empty() {
        "Untitled incident"
    } else {
        h.title.trim()
    });
    // Writing to a String cannot fail; results are ignored for that reason throughout.
    let _ = if md {
        writeln!(
            out,
            "## {title}\n\n_Status update, {}_\n",
            format_time(written_at)
        )
    } else {
        writeln!(out, "{title}\nStatus update, {}\n", format_time(written_at))
    };
    if h.drill {
        let _ = writeln!(
            out,
            "This is a drill: a practice incident, not a real one.\n"
        );
    }
    let facts = [
        ("Status", h.status.as_deref().map(capitalized)),
        ("Severity", h.severity.clone()),
        (
            "Commander",
            view.holder(Role::Commander).map(|(p, _)| p.to_owned()),
        ),
        (
            "Communications",
            view.holder(Role::Communications).map(|(p, _)| p.to_owned()),
        ),
    ];
    let facts: Vec<String> = facts
        .iter()
        .map(|(label, value)| {
            let value = value.as_deref().unwrap_or("none");
            if md {
                format!("**{label}:** {value}")
            } else {
                format!("{label}: {value}")
            }
        })
        .collect();
    let _ = writeln!(out, "{}\n", facts.join(if md { " · " } else { "\n" }));
    // The Communications lead's two prose fields, under the template's labels: stakeholders read the summary
    // first, and the detailed status is where the current state and the next steps are.
    for key in ["summary", "detailedStatus"] {
        if let Some(field) = view.field(key)
            && let FieldValue::Text(text) = &field.value
            && !text.trim().is_empty()
        {
            heading(&mut out, &field.def.label);
            let _ = writeln!(out, "{}\n", text.trim());
        }
    }
    match before {
        Some((last, _)) => heading(
            &mut out,
            &format!("Changes since the last update ({})", format_time(last.at)),
        ),
        None => heading(&mut out, "Since the incident was declared"),
    }
    let changes = changes(view, before);
    if changes.is_empty() {
        let _ = writeln!(out, "- No changes.");
    }
    for change in &changes {
        let _ = writeln!(out, "- {change}");
    }
    out.push('\n');
    // What is still changed away from normal: stakeholders should know it has not been put back.
    if let Some(FieldValue::Deviations(list)) =
        view.field_of_kind(FieldKind::Deviations).map(|f| &f.value)
    {
        let open: Vec<_> = list.iter().filter(|d| d.reverted.is_none()).collect();
        if !open.is_empty() {
            heading(&mut out, "Deviations from normal, not yet reverted");
            for d in open {
                let _ = writeln!(out, "- {} (revert: {}; by {})", d.what, d.revert, d.by);
            }
            out.push('\n');
        }
    }
    if let Some(post) = text_of(view, "commandPost").filter(|s| !s.trim().is_empty()) {
        heading(&mut out, "Command post");
        let _ = writeln!(out, "{}\n", post.trim());
    }
    let closed = h.status.as_deref() == Some("closed");
    let next = view
        .fields
        .iter()
        .filter(|f| f.def.owner == Some(Role::Communications))
        .filter_map(|f| f.due_at)
        .min();
    let _ = match (closed, next) {
        (true, _) => writeln!(out, "This is the final update: the incident is closed."),
        (false, Some(due)) if md => writeln!(out, "**Next update due:** {}", format_time(due)),
        (false, Some(due)) => writeln!(out, "Next update due: {}", format_time(due)),
        (false, None) => writeln!(out, "Next update: when something changes."),
    };
    out
}

/// The lines of "what changed": headline facts, edited prose fields, checklist items done or added, and the
/// timeline entries written since (oldest first).
fn changes(view: &IncidentView, before: Option<(&LastUpdate, &IncidentView)>) -> Vec<String> {
    let mut out = Vec::new();
    let since = before.map(|(last, _)| last.at);
    if let Some((_, then)) = before {
        let moved =
            |label: &str, was: Option<String>, is: Option<String>, out: &mut Vec<String>| {
                if was != is {
                    let show = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
                    out.push(format!("{label}: {} → {}", show(was), show(is)));
                }
            };
        moved(
            "Status",
            then.headline.status.as_deref().map(capitalized),
            view.headline.status.as_deref().map(capitalized),
            &mut out,
        );
        moved(
            "Severity",
            then.headline.severity.clone(),
            view.headline.severity.clone(),
            &mut out,
        );
        for role in [Role::Commander, Role::Communications] {
            let holder = |v: &IncidentView| v.holder(role).map(|(p, _)| p.to_owned());
            moved(role.label(), holder(then), holder(view), &mut out);
        }
        for field in &view.fields {
            let was = then.field(&field.def.key).map(|f| &f.value);
            match (&field.value, was) {
                (FieldValue::Text(now), Some(FieldValue::Text(old)))
                    if field.def.kind == FieldKind::Markdown && now != old =>
                {
                    out.push(format!("{} updated.", field.def.label));
                }
                (FieldValue::Checklist(items), Some(FieldValue::Checklist(old))) => {
                    for item in items {
                        match old.iter().find(|o| o.id == item.id) {
                            None => out.push(format!("{} added: {}", field.def.label, item.text)),
                            Some(o) if item.done && !o.done => {
                                out.push(format!("{} done: {}", field.def.label, item.text));
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(FieldValue::Changes(list)) =
        view.field_of_kind(FieldKind::Changes).map(|f| &f.value)
    {
        for c in list
            .iter()
            .filter(|c| c.uncoordinated && since.is_none_or(|s| c.at > s))
        {
            out.push(format!(
                "Uncoordinated change by {} on {}: {}",
                c.by, c.target, c.what
            ));
        }
    }
    let mut entries: Vec<&Entry> = match view.field_of_kind(FieldKind::Timeline).map(|f| &f.value) {
        Some(FieldValue::Timeline(entries)) => entries
            .iter()
            .filter(|e| since.is_none_or(|s| e.at > s))
            .filter(|e| !e.text.starts_with("Status update sent"))
            .collect(),
        _ => Vec::new(),
    };
    // The view lists entries newest first; an update reads oldest first.
    let omitted = entries.len().saturating_sub(MAX_ENTRIES);
    entries.truncate(MAX_ENTRIES);
    entries.reverse();
    if omitted > 0 {
        out.push(format!(
            "{omitted} earlier timeline entries (see the incident)."
        ));
    }
    for e in entries {
        // One bullet per entry: a multi-line entry is joined into one line.
        let text: Vec<&str> = e
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        out.push(format!(
            "{} {}: {}",
            e.at.format("%H:%M UTC"),
            e.author,
            text.join(" ")
        ));
    }
    out
}

fn text_of(view: &IncidentView, key: &str) -> Option<String> {
    match view.field(key).map(|f| &f.value) {
        Some(FieldValue::Text(t)) => Some(t.clone()),
        _ => None,
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
