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
