//! `commandpost export` and `commandpost import`: incidents to files and back, straight from and to the store.
//!
//! Export writes one file per incident and format, named `<number>-<id>.<ext>` so a directory listing sorts by
//! incident number and the id comes back on import. The Automerge file is the whole document with its history:
//! importing it stores exactly those bytes, so the restored incident has the same heads, and every point-in-time
//! read and history listing works on it as before. The other formats are the HTTP exports, rendered by the same
//! code (`crate::export`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use incident_doc::Incident;
use incident_doc::schema::Status;

use crate::document::summary_row;
use crate::export::{Format, render};
use crate::input::{parse_incident, parse_moment};
use crate::store::{ListFilter, Store};
use wire::DocumentId;

/// `--since`: a date (midnight UTC) or an RFC 3339 time.
pub(super) fn parse_since(value: &str) -> Result<DateTime<Utc>, String> {
    parse_moment(value)
        .ok_or_else(|| format!("{value:?} is neither a date like 2026-11-25 nor an RFC 3339 time"))
}

/// What to export.
pub(super) struct ExportRequest {
    /// The directory to write into (created if missing).
    pub out: PathBuf,
    /// The formats, each incident once per format.
    pub formats: Vec<Format>,
    /// Only incidents declared at or after this moment.
    pub since: Option<DateTime<Utc>>,
    /// Open incidents too, not only closed ones.
    pub all: bool,
}

/// Writes every matching incident, oldest first, showing progress on stderr; returns how many.
pub(super) async fn export(
    store: &Arc<dyn Store>,
    request: &ExportRequest,
) -> anyhow::Result<usize> {
    let filter = ListFilter {
        status: (!request.all).then_some(Status::Closed),
        ..ListFilter::default()
    };
    let mut listed = store.list(&filter).await?;
    listed.retain(|s| request.since.is_none_or(|since| s.created_at >= since));
    listed.reverse();
    std::fs::create_dir_all(&request.out)
        .with_context(|| format!("creating {}", request.out.display()))?;
    let mut progress = Progress::new(listed.len());
    let mut written = 0;
    for summary in &listed {
        // Deleted since the listing: nothing to export.
        let id = summary.id;
        let Some(stored) = store.load(id).await? else {
            progress.tick(0);
            continue;
        };
        let mut incident = stored
            .incident()
            .with_context(|| format!("incident {id} cannot be read"))?;
        let stem = match summary.number {
            Some(n) => format!("{n:05}-{id}"),
            None => format!("incident-{id}"),
        };
        let mut bytes = 0;
        let log = crate::export::chat_log(&**store, id).await?;
        for format in &request.formats {
            let body = render(&mut incident, id, *format, None)
                .and_then(|body| crate::export::with_chat_log(body, *format, &log, None))
                .with_context(|| format!("rendering incident {id} as {}", format.name()))?;
            let path = request.out.join(format!("{stem}.{}", format.extension()));
            write_atomically(&path, &body)?;
            bytes += body.len();
        }
        written += 1;
        progress.tick(bytes);
    }
    progress.finish(&request.out);
    Ok(written)
}

/// Writes through a temporary file and a rename, so an interrupted export never leaves a half-written file under
/// the final name.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// A progress bar on stderr when it is a terminal; otherwise a line every tenth of the way, for logs.
struct Progress {
    total: usize,
    done: usize,
    bytes: usize,
    started: Instant,
    terminal: bool,
    last_tenth: usize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            bytes: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn tick(&mut self, bytes: usize) {
        self.done += 1;
        self.bytes += bytes;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = WIDTH * self.done / self.total.max(1);
            let _ = write!(
                err,
                "\r[{}{}] {}/{} incidents",
                "#".repeat(filled),
                " ".repeat(WIDTH - filled),
                self.done,
                self.total
            );
        } else {
            let tenth = 10 * self.done / self.total.max(1);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let _ = writeln!(err, "exported {}/{} incidents", self.done, self.total);
            }
        }
    }

    fn finish(&self, out: &Path) {
        let mut err = std::io::stderr().lock();
        if self.terminal && self.total > 0 {
            let _ = writeln!(err);
        }
        let _ = writeln!(
            err,
            "exported {} incident{} ({:.1} MiB) to {} in {:.1} s",
            self.done,
            if self.done == 1 { "" } else { "s" },
            self.bytes as f64 / (1024.0 * 1024.0),
            out.display(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Restores the incident in `file` under `id` (by default the id in the file name, as `export` and the HTTP
/// export name files, else a new one); refuses an id that already exists. Returns the id.
pub(super) async fn import(
    store: &Arc<dyn Store>,
    file: &Path,
    id: Option<&str>,
) -> anyhow::Result<DocumentId> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut incident = Incident::load(&bytes)
        .with_context(|| format!("{} is not an Automerge document", file.display()))?;
    anyhow::ensure!(
        incident.view().is_supported(),
        "{} is not a commandpost incident (no supported schemaVersion)",
        file.display()
    );
    let id = match id {
        Some(id) => parse_incident(id).with_context(|| {
            format!(
                "{id:?} is not a document id: use the id the API and the UI show (base58, such as \
                 t3NSKfb4wJQdkb2QFC6ukUTpLFg) or its automerge: URL"
            )
        })?,
        None => id_from_name(file).unwrap_or_else(DocumentId::random),
    };
    anyhow::ensure!(
        store.load(id).await?.is_none(),
        "incident {id} already exists; delete it first or import under another --id"
    );
    let summary = summary_row(id, &mut incident, chrono::Utc::now());
    store.append(id, bytes, Some(summary)).await?;
    Ok(id)
}

/// The id in `00465-<id>.automerge` or `incident-<id>.automerge`.
fn id_from_name(file: &Path) -> Option<DocumentId> {
    let name = file.file_name()?.to_str()?;
    let stem = name.split('.').next()?;
    parse_incident(stem.rsplit('-').next()?)
}
