//! Trace replay: one editor types a real editing trace (the automerge-paper trace: 259,778 keystrokes that wrote
//! a LaTeX paper) into one field as fast as it can while V viewers watch; every viewer must end with the trace's
//! text. The same trace is also applied locally to an Automerge document in the same run (a yrs one for a Yjs
//! server, see [`super::yjs`]), so the server's throughput can be given as a ratio to what the CRDT alone does on
//! this machine.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc, Value};
use incident_doc::{Declaration, Editor as Author, Incident};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::war_room::Watcher;
use super::{Run, Usages, watch_document};
use crate::editor::{Editor, field_text};
use crate::latency::{Clock, Latencies, Summary};
use crate::viewer::Expected;

/// The field the trace is typed into.
pub(super) const FIELD: &str = "summary";

/// The trace replay's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Viewers watching.
    pub viewers: u32,
    /// Keystrokes replayed from the start of the trace (all of them when larger).
    pub limit: usize,
    /// How often the editor sends what it typed, ms: automerge-repo's own clients sync every 100 ms.
    pub flush_ms: u64,
}

/// The trace file's layout.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraceFile {
    /// The final text after every patch.
    end_content: String,
    /// Transactions, each with its patches.
    txns: Vec<Txn>,
}

/// One transaction of the trace.
#[derive(Deserialize)]
struct Txn {
    /// `[position, deleted, inserted]`, positions in Unicode characters.
    patches: Vec<(usize, isize, String)>,
}

/// A trace loaded into memory.
pub struct Trace {
    /// Every patch in order.
    pub(super) patches: Vec<(usize, isize, String)>,
    /// The text after all of them.
    pub(super) end: String,
}

impl Trace {
    /// Reads a gzipped trace file.
    pub fn load(path: &Path) -> anyhow::Result<Trace> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut json = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut json)
            .with_context(|| format!("unzipping {}", path.display()))?;
        let trace: TraceFile = serde_json::from_str(&json).context("reading the trace")?;
        Ok(Trace {
            patches: trace.txns.into_iter().flat_map(|t| t.patches).collect(),
            end: trace.end_content,
        })
    }
}

/// What a trace replay measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The server.
    pub target: String,
    /// The settings.
    pub settings: Settings,
    /// Keystrokes replayed.
    pub keystrokes: usize,
    /// Characters in the final text.
    pub final_chars: usize,
    /// Typing the trace into a local document of the server's CRDT (Automerge, or yrs for a Yjs server), one
    /// change or transaction per keystroke, seconds.
    pub local_typing_s: f64,
    /// The same as keystrokes a second.
    pub local_typing_per_s: f64,
    /// Applying those changes to a second local replica in the batches the editor sent, seconds: the least a
    /// server's replica must do.
    pub local_apply_s: f64,
    /// The same as changes a second.
    pub local_apply_per_s: f64,
    /// From the first keystroke until every viewer held the whole trace, seconds.
    pub server_s: f64,
    /// Keystrokes a second through the server to every viewer.
    pub server_per_s: f64,
    /// `server_per_s / local_typing_per_s`: the target is at least 0.5.
    pub ratio_to_local_typing: f64,
    /// `server_per_s / local_apply_per_s`.
    pub ratio_to_local_apply: f64,
    /// Sync messages the editor sent (batches).
    pub batches: usize,
    /// Editor commit → viewer holds the change.
    pub latency: Summary,
    /// Over the server run.
    pub usage: Usages,
    /// Server CPU per keystroke (applied once, fanned out to every viewer), microseconds.
    pub server_cpu_us_per_keystroke: Option<f64>,
}

/// Replays the trace.
pub async fn run(run: &Run, trace: &Trace, settings: Settings) -> anyhow::Result<Report> {
    if run.target.is_yjs() {
        return super::yjs::trace(run, trace, settings).await;
    }
    let patches = &trace.patches[..settings.limit.min(trace.patches.len())];
    ensure!(!patches.is_empty(), "the trace has no patches");

    // Automerge alone: type the trace into a fresh incident, one change per keystroke.
    let (local_typing, local, local_start) = type_locally(patches)?;
    let expected_text = field_text(&local, FIELD)?;
    if patches.len() == trace.patches.len() {
        ensure!(
            expected_text == trace.end,
            "typing the whole trace locally does not give its final text"
        );
    }

    let access = run.target.access().await?;
    let incident = run.target.new_incident("Trace replay").await?;
    let clock = Clock::start();
    let latencies = Arc::new(Latencies::new(
        clock,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ));
    let id = incident.id;
    let mut editor = Editor::open(
        &access.editor,
        0,
        id,
        incident.seed,
        clock,
        run.traffic.clone(),
    )
    .await?;
    let start_heads = editor.heads();
    let watchers = watch_document(run, &access, id, settings.viewers, &latencies).await?;

    let window = run.measure()?;
    let started = Instant::now();
    let flush_every = Duration::from_millis(settings.flush_ms);
    let mut last_flush = Instant::now();
    let mut batches = Vec::new();
    let mut unsent = 0;
    for (position, delete, insert) in patches {
        editor.splice(FIELD, *position, *delete, insert)?;
        unsent += 1;
        if last_flush.elapsed() >= flush_every {
            editor.flush().await?;
            editor.take_in_pending().await?;
            batches.push(unsent);
            unsent = 0;
            last_flush = Instant::now();
        }
    }
    if unsent > 0 {
        batches.push(unsent);
    }
    editor.settle().await?;
    ensure!(
        editor.text(FIELD)? == expected_text,
        "the editor's text differs from the trace's"
    );
    let _ = watchers.expected.send(Some(Expected {
        heads: editor.heads(),
        changes: editor.changes_since(&start_heads),
    }));
    let witness_text = witness_text(watchers.tasks, |witness: &Incident| {
        field_text(witness, FIELD).map(Some)
    })
    .await?;
    let server_s = started.elapsed().as_secs_f64();
    let usage = run.measured(window)?;
    editor.close().await;
    if settings.viewers > 0 {
        ensure!(
            witness_text.as_deref() == Some(expected_text.as_str()),
            "the witness viewer's text differs from the trace's"
        );
    }

    // Automerge alone again: a second replica takes the same changes in the batches the editor sent.
    let local_apply = apply_locally(&local_start, &local, &batches)?;

    Ok(Report::new(
        run,
        settings,
        Timed {
            keystrokes: patches.len(),
            final_chars: expected_text.chars().count(),
            local_typing,
            local_apply,
            server_s,
            batches: batches.len(),
            latency: latencies.total().summary(),
        },
        usage,
    ))
}

/// Waits for every viewer to hold the whole trace (a viewer that fails fails the run), closing each, and returns
/// the witness's text as `text` reads it from the witness's replica: one loop for Automerge viewers and Yjs ones
/// ([`super::yjs`]).
pub(super) async fn witness_text<V: Watcher>(
    mut watching: JoinSet<anyhow::Result<V>>,
    text: impl Fn(&V::Witness) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Option<String>> {
    let mut witness_text = None;
    while let Some(joined) = watching.join_next().await {
        let viewer = joined.context("a viewer's task panicked")??;
        if witness_text.is_none()
            && let Some(witness) = viewer.witness()
        {
            witness_text = text(&witness)?;
        }
        viewer.close().await;
    }
    Ok(witness_text)
}

/// What one replay timed, from which [`Report::new`] derives the rest.
pub(super) struct Timed {
    pub(super) keystrokes: usize,
    pub(super) final_chars: usize,
    pub(super) local_typing: Duration,
    pub(super) local_apply: Duration,
    pub(super) server_s: f64,
    pub(super) batches: usize,
    pub(super) latency: Summary,
}

impl Report {
    /// Derives the rates and ratios from what was timed, so that the Automerge replay and the Yjs one
    /// ([`super::yjs`]) compute them alike.
    pub(super) fn new(run: &Run, settings: Settings, timed: Timed, usage: Usages) -> Report {
        let n = timed.keystrokes as f64;
        let local_typing_per_s = n / timed.local_typing.as_secs_f64();
        let local_apply_per_s = n / timed.local_apply.as_secs_f64();
        let server_per_s = n / timed.server_s;
        Report {
            target: run.target.name().into(),
            keystrokes: timed.keystrokes,
            final_chars: timed.final_chars,
            local_typing_s: timed.local_typing.as_secs_f64(),
            local_typing_per_s,
            local_apply_s: timed.local_apply.as_secs_f64(),
            local_apply_per_s,
            server_s: timed.server_s,
            server_per_s,
            ratio_to_local_typing: server_per_s / local_typing_per_s,
            ratio_to_local_apply: server_per_s / local_apply_per_s,
            batches: timed.batches,
            latency: timed.latency,
            server_cpu_us_per_keystroke: usage.server.as_ref().map(|s| s.cpu_s * 1e6 / n),
            usage,
            settings,
        }
    }
}

/// Types `patches` into the summary of a fresh incident, one change per keystroke; the time, the document, and
/// the document as it was before typing.
fn type_locally(
    patches: &[(usize, isize, String)],
) -> anyhow::Result<(Duration, Incident, Vec<u8>)> {
    let template = incident_doc::template::builtin()
        .into_iter()
        .find(|t| t.id == incident_doc::DEFAULT_TEMPLATE)
        .context("the default template is built in")?;
    let mut incident = Incident::create(
        &template,
        &Declaration {
            name: "Trace replay".into(),
            number: None,
        },
        &Author::new("bench", chrono::Utc::now()),
        None,
    )?;
    let start = incident.save();
    let doc = incident.doc_mut();
    let Some((Value::Object(ObjType::Text), text)) = doc.get(ROOT, FIELD)? else {
        anyhow::bail!("the incident has no {FIELD} Text");
    };
    let started = Instant::now();
    for (position, delete, insert) in patches {
        doc.splice_text(&text, *position, *delete, insert)?;
        doc.commit();
    }
    Ok((started.elapsed(), incident, start))
}

/// Applies the keystroke changes of `typed` (everything after its first change, the creation) to a replica
/// loaded from `start` (its creation), in batches of the given sizes; the time taken.
fn apply_locally(start: &[u8], typed: &Incident, batches: &[usize]) -> anyhow::Result<Duration> {
    let mut typed = typed.doc().clone();
    let first = typed
        .get_changes(&[])
        .first()
        .map(|c| c.hash())
        .context("the typed document has changes")?;
    let changes = typed.get_changes(&[first]);
    let mut replica = Incident::load(start)?;
    let mut rest = changes.as_slice();
    let started = Instant::now();
    for &size in batches {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        replica.doc_mut().apply_changes(batch.iter().cloned())?;
        rest = tail;
    }
    Ok(started.elapsed())
}
