//! Exports: an incident rendered as a file (Markdown, HTML, the postmortem draft, the JSON read model or the
//! Automerge document), as it is now or as it was at a past moment.
//!
//! The HTTP export route and `commandpost export` both render through [`render`], so a file written by the CLI
//! holds the same bytes as the route's answer. Nothing here knows HTTP or the store: each caller turns an
//! [`ExportError`] into its own answer.

use std::fmt;
use std::str::FromStr;

use automerge::{AutomergeError, ChangeHash};
use chrono::{DateTime, Utc};
use incident_doc::{Incident, IncidentView, export};
use serde_json::{Value, json};

use crate::store::chat_log::ChatLine;
use wire::DocumentId;

/// A file format of the export route (`format=`) and of `commandpost export` (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The Automerge document with its whole history (what `import` restores).
    Automerge,
    /// The Markdown export.
    Markdown,
    /// The HTML export.
    Html,
    /// The JSON read model.
    Json,
    /// The postmortem draft (Markdown).
    Postmortem,
}

impl Format {
    /// The name in `format=` and `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Automerge => "automerge",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Json => "json",
            Format::Postmortem => "postmortem",
        }
    }

    /// The file name's ending, so that files open in the right program.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Automerge => "automerge",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Json => "json",
            Format::Postmortem => "postmortem.md",
        }
    }

    /// The media type the export route answers with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Markdown | Format::Postmortem => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::Automerge => "application/octet-stream",
        }
    }
}

impl FromStr for Format {
    type Err = ExportError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            Format::Markdown,
            Format::Html,
            Format::Json,
            Format::Automerge,
            Format::Postmortem,
        ]
        .into_iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| ExportError::UnknownFormat(name.to_owned()))
    }
}

/// Why an incident could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The caller named a format there is none of.
    #[error("unknown format {0:?} (expected markdown, html, json, automerge or postmortem)")]
    UnknownFormat(String),
    /// The moment asked for comes before the incident's first change.
    #[error("the incident did not exist yet at {}{}", .at.to_rfc3339(), Declared(*.declared))]
    NotYet {
        /// The moment asked for.
        at: DateTime<Utc>,
        /// When the incident was declared, if it says.
        declared: Option<DateTime<Utc>>,
    },
    /// Automerge refused to fork the document at heads it gave itself: a bug or corruption.
    #[error("forking a document at its own heads: {0}")]
    Fork(#[from] AutomergeError),
    /// The read model did not serialize: a bug.
    #[error("serializing the read model: {0}")]
    Json(#[from] serde_json::Error),
}

/// The ` (it was declared at …)` that tells someone asking too early when to ask instead.
struct Declared(Option<DateTime<Utc>>);

impl fmt::Display for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " (it was declared at {})", at.to_rfc3339()),
            None => Ok(()),
        }
    }
}

/// Renders incident `id` (as it was at `at`, or now) in `format`. Runs on a snapshot off the document actor, or
/// on a document the CLI loaded.
pub fn render(
    incident: &mut Incident,
    id: DocumentId,
    format: Format,
    at: Option<DateTime<Utc>>,
) -> Result<Vec<u8>, ExportError> {
    let mut past;
    let incident = match at {
        Some(at) => {
            let heads = heads_at(incident, at)?;
            past = fork_at(incident, &heads)?;
            &mut past
        }
        None => incident,
    };
    Ok(match format {
        Format::Automerge => incident.save(),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&with_ids(id, &incident.view()))?;
            text.push('\n');
            text.into_bytes()
        }
        Format::Html => export::html(&incident.view()).into_bytes(),
        Format::Postmortem => {
            let view = incident.view();
            export::postmortem(&view, &incident.record(None)).into_bytes()
        }
        Format::Markdown => export::markdown(&incident.view()).into_bytes(),
    })
}

/// The most lines of a channel log the Markdown, HTML and JSON exports carry (ten hours of a channel saying ten
/// lines a second); a longer log is cut at its newest lines, with a note.
pub const EXPORT_LOG_LINES: usize = 360_000;

/// The most lines the postmortem draft's appendix quotes; the rest is in the exports and `GET …/chat`.
pub const POSTMORTEM_LOG_LINES: usize = 300;

/// An incident's channel log for its exports, oldest first (at most [`EXPORT_LOG_LINES`], the newest).
pub async fn chat_log(
    store: &dyn crate::store::Store,
    id: DocumentId,
) -> Result<Vec<ChatLine>, crate::store::StoreError> {
    let mut lines: Vec<ChatLine> = Vec::new();
    let mut before = None;
    while lines.len() < EXPORT_LOG_LINES {
        let page = store.chat_log(id, before, 1000).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let full = page.len() == 1000;
        lines.extend(page);
        if !full {
            break;
        }
    }
    lines.truncate(EXPORT_LOG_LINES);
    lines.reverse();
    Ok(lines)
}

/// `body` (an export in `format`) with the channel log added, as it stood at `at` (or now): a "Channel log"
/// section in Markdown and HTML, the `chatLog` key in JSON, an appendix of the log's first
/// [`POSTMORTEM_LOG_LINES`] lines, with its extent, in the postmortem draft. An empty log changes nothing, so
/// exports of incidents without a channel are what they always were. The log is people's text: in Markdown it sits
/// in a fence longer than any backtick run in it, in HTML it is escaped, so nothing in it renders as markup.
pub fn with_chat_log(
    body: Vec<u8>,
    format: Format,
    log: &[ChatLine],
    at: Option<DateTime<Utc>>,
) -> Result<Vec<u8>, ExportError> {
    let log: Vec<&ChatLine> = log
        .iter()
        .filter(|l| at.is_none_or(|at| l.at <= at))
        .collect();
    if log.is_empty() || format == Format::Automerge {
        return Ok(body);
    }
    let cut = log.len() >= EXPORT_LOG_LINES;
    Ok(match format {
        Format::Automerge => body,
        Format::Json => {
            let mut value: Value = serde_json::from_slice(&body)?;
            if let Some(map) = value.as_object_mut() {
                map.insert("chatLog".into(), serde_json::to_value(&log)?);
            }
            let mut text = serde_json::to_string_pretty(&value)?;
            text.push('\n');
            text.into_bytes()
        }
        Format::Markdown => {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.push_str("\n## Channel log\n\n");
            if cut {
                text.push_str(
                    "(the newest lines only: the log is longer than an export carries)\n\n",
                );
            }
            text.push_str(&fenced(&log));
            text.into_bytes()
        }
        Format::Postmortem => {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            let (first, last) = (log[0], log[log.len() - 1]);
            text.push_str(&format!(
                "\n## Appendix: channel log\n\n{} lines in {} ({}), {} to {}; lines promoted to the timeline                  appear there. ",
                log.len(),
                last.channel,
                last.network.label(),
                incident_doc::export::format_time(first.at),
                incident_doc::export::format_time(last.at),
            ));
            if log.len() > POSTMORTEM_LOG_LINES {
                text.push_str(&format!(
                    "The first {POSTMORTEM_LOG_LINES} are quoted; the whole log is in the incident's exports.\n\n"
                ));
            } else {
                text.push_str("The whole log:\n\n");
            }
            let quoted: Vec<&ChatLine> = log.iter().take(POSTMORTEM_LOG_LINES).copied().collect();
            text.push_str(&fenced(&quoted));
            text.into_bytes()
        }
        Format::Html => {
            let text = String::from_utf8_lossy(&body).into_owned();
            let mut section = String::from("<section>\n<h2>Channel log</h2>\n<pre>");
            for line in &log {
                section.push_str(&export::escape_html(&log_line(line)));
                section.push('\n');
            }
            section.push_str("</pre>\n</section>\n");
            match text.rfind("</main>") {
                Some(end) => format!("{}{section}{}", &text[..end], &text[end..]).into_bytes(),
                None => format!("{text}{section}").into_bytes(),
            }
        }
    })
}

/// One log line for people: `2026-11-25 04:02 UTC alice (U024BE7LH): text`, later lines of the text indented.
fn log_line(line: &ChatLine) -> String {
    let who = match &line.person {
        Some(person) if *person != line.speaker => format!("{person} ({})", line.speaker),
        _ => line.speaker.clone(),
    };
    format!(
        "{} {who}: {}",
        incident_doc::export::format_time(line.at),
        line.text.replace('\n', "\n    ")
    )
}

/// The lines in a Markdown fence longer than any run of backticks in them.
fn fenced(lines: &[&ChatLine]) -> String {
    let body: Vec<String> = lines.iter().map(|l| log_line(l)).collect();
    let body = body.join("\n");
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{body}\n{fence}\n")
}

/// The heads of the document at `at`, or [`ExportError::NotYet`] when the incident did not exist yet.
fn heads_at(incident: &mut Incident, at: DateTime<Utc>) -> Result<Vec<ChangeHash>, ExportError> {
    incident.heads_at(at).ok_or_else(|| ExportError::NotYet {
        at,
        declared: incident.view().headline.created_at,
    })
}

/// The document as it was at `heads`, as an incident of its own: every read of it is then a read of the present.
///
/// Reading the document itself at past heads makes Automerge build a clock for every lookup, walking the history
/// back from `heads` until it meets a change whose clock it cached; a writer that never merges the others' changes
/// leaves no such change on its branch, and a view at past heads then walks that whole branch once per lookup
/// (300 ms instead of 19 for 5,000 changes). The fork costs one walk whatever the history's shape (47 ms there,
/// BENCHMARKS.md).
pub fn fork_at(incident: &mut Incident, heads: &[ChangeHash]) -> Result<Incident, ExportError> {
    let doc = incident.doc_mut().fork_at(heads)?;
    let mut past = Incident::empty(None);
    *past.doc_mut() = doc;
    Ok(past)
}

/// The read model with the incident's id and `automerge:` URL, which the model itself does not hold: the JSON
/// export and `GET /api/incidents/{id}` answer the same object.
pub fn with_ids(id: DocumentId, view: &IncidentView) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or_else(|_| json!({}));
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), json!(id.to_string()));
        map.insert("url".into(), json!(id.url()));
    }
    value
}

/// The status update of `incident` written at `now` ("what changed" measured from the last update sent), and the
/// heads it describes, comma-separated: what `GET /api/incidents/{id}/update` answers and `!update` says in chat.
pub fn status_update(
    incident: &mut Incident,
    now: DateTime<Utc>,
    format: incident_doc::update::UpdateFormat,
) -> Result<(String, String), ExportError> {
    let view = incident.view();
    let last = incident.last_update();
    let then = match &last {
        Some(last) => {
            // Heads recorded with the update, else the document as it was when it was marked sent.
            let heads = if !last.heads.is_empty() && incident.has_heads(&last.heads) {
                Some(last.heads.clone())
            } else {
                incident.heads_at(last.at)
            };
            Some(match heads {
                Some(heads) => fork_at(incident, &heads)?.view(),
                None => view.clone(),
            })
        }
        None => None,
    };
    let before = last.as_ref().zip(then.as_ref());
    let body = incident_doc::update::status_update(&view, before, now, format);
    Ok((body, incident.head_strings().join(",")))
}
