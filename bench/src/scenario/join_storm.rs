//! Join storm: K clients open an incident with H changes of history, arriving evenly over a few seconds (everyone
//! clicking the link posted in the incident channel); each one's time from connecting to holding the complete
//! document.
//!
//! A joining client here keeps the bytes it received and stops the clock when a sync message brings it to the
//! server's heads. Loading a long document costs a client far more than the server spends sending it, so clients
//! do not load what they received; instead they hash it, and the first client to receive each distinct byte
//! stream loads it and checks its heads (all clients of a run receive the same bytes, so one load checks all).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, Automerge, ChangeHash};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use wire::peer::Event;
use wire::{DocumentId, PeerId};

use super::{Run, Usages};
use crate::editor::Editor;
use crate::latency::{Clock, Histogram, Summary};
use crate::link::{Endpoint, Link, Traffic};

/// How long one client may take to get the document before the run fails.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// The storm's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Clients joining.
    pub clients: u32,
    /// Changes of history the incident has when they join.
    pub history: usize,
    /// Seconds over which the clients arrive, evenly spread.
    pub over_s: f64,
}

/// What a join storm measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The server.
    pub target: String,
    /// The settings.
    pub settings: Settings,
    /// Bytes of sync messages one client received to hold the whole document.
    pub document_bytes: usize,
    /// Connect → complete document, over every client.
    pub time_to_document: Summary,
    /// Distinct byte streams the clients received (1 when the server sends every client the same document), each
    /// loaded and checked.
    pub distinct_documents: usize,
    /// From the first client's arrival until the last one held the document.
    pub usage: Usages,
}

/// Runs the storm (with Yjs peers on a Yjs server, see [`super::yjs`]).
pub async fn run(run: &Run, settings: Settings) -> anyhow::Result<Report> {
    if run.target.is_yjs() {
        return super::yjs::join_storm(run, settings).await;
    }
    let access = run.target.access().await?;
    let incident = run.target.new_incident("Join storm").await?;
    let id = incident.id;
    let clock = Clock::start();
    let mut author = Editor::open(
        &access.editor,
        0,
        id,
        incident.seed,
        clock,
        run.traffic.clone(),
    )
    .await?;
    author.build_history(settings.history).await?;
    let heads = author.heads();

    let author_heads = heads.clone();
    let window = run.measure()?;
    let joined = storm(
        &settings,
        |index| {
            let (url, heads, traffic) = (access.viewer.clone(), heads.clone(), run.traffic.clone());
            async move { join(&url, index, id, &heads, traffic).await }
        },
        move |received| {
            Automerge::load(received)
                .map(|doc| doc.get_heads() == author_heads)
                .unwrap_or(false)
        },
    )
    .await?;
    let usage = run.measured(window)?;
    author.close().await;
    joined.report(
        run,
        settings,
        usage,
        "a client received a document whose heads are not the author's",
    )
}

/// One client: connects, asks for the document, and returns every chunk's bytes once a sync message brought it to
/// `heads`.
async fn join(
    endpoint: &Endpoint,
    index: u32,
    document: DocumentId,
    heads: &[ChangeHash],
    traffic: Arc<Traffic>,
) -> anyhow::Result<Vec<u8>> {
    let me = PeerId::from(format!("bench-joiner-{index}-{}", DocumentId::random()));
    let mut link = Link::connect(endpoint, me, traffic).await?;
    let first = AutoCommit::new()
        .sync()
        .generate_sync_message(&mut sync::State::new())
        .context("a new sync state always has a first message")?;
    link.send_sync(document, first.encode(), true).await?;
    let mut received = Vec::new();
    loop {
        // Presence and heads gossip are none of a joining client's business.
        let Event::Sync { message, .. } = link.recv().await? else {
            continue;
        };
        for chunk in message.changes.iter() {
            received.extend_from_slice(chunk);
        }
        if !message.changes.is_empty() && message.heads == heads {
            link.close().await;
            return Ok(received);
        }
    }
}

/// What the clients of a storm brought back.
pub(super) struct Joined {
    /// Bytes one client received to hold the whole document.
    pub(super) document_bytes: usize,
    /// Connect → complete document, over every client.
    pub(super) time_to_document: Summary,
    /// Whether each distinct byte stream (by its hash) passed the check.
    pub(super) checked: HashMap<u64, bool>,
}

impl Joined {
    /// The storm's report, once every distinct byte stream passed its check (else the run fails with `mismatch`).
    pub(super) fn report(
        self,
        run: &Run,
        settings: Settings,
        usage: Usages,
        mismatch: &str,
    ) -> anyhow::Result<Report> {
        ensure!(self.checked.values().all(|ok| *ok), "{mismatch}");
        Ok(Report {
            target: run.target.name().into(),
            document_bytes: self.document_bytes,
            time_to_document: self.time_to_document,
            distinct_documents: self.checked.len(),
            usage,
            settings,
        })
    }
}

/// Runs the clients, spread evenly over `settings.over_s`: `join(index)` gets client `index` the document's bytes,
/// which `verify` checks the first time these exact bytes are seen. Shared by the Automerge storm and the Yjs one
/// ([`super::yjs`]), which differ only in how a client joins and how its bytes are checked.
pub(super) async fn storm<J, Fut, V>(
    settings: &Settings,
    join: J,
    verify: V,
) -> anyhow::Result<Joined>
where
    J: Fn(u32) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<u8>>> + Send + 'static,
    V: Fn(&[u8]) -> bool + Send + Sync + 'static,
{
    let checked: Arc<Mutex<HashMap<u64, bool>>> = Arc::default();
    let times = Arc::new(Histogram::default());
    let verify = Arc::new(verify);
    let spacing = Duration::from_secs_f64(settings.over_s / f64::from(settings.clients.max(1)));
    let start = tokio::time::Instant::now();
    let mut joining = JoinSet::new();
    for index in 0..settings.clients {
        let joins = join(index);
        let (checked, times, verify) = (checked.clone(), times.clone(), verify.clone());
        joining.spawn(async move {
            tokio::time::sleep_until(start + spacing * index).await;
            let started = Instant::now();
            let received = tokio::time::timeout(CLIENT_LIMIT, joins)
                .await
                .with_context(|| format!("client {index} did not get the document in time"))??;
            times.record(started.elapsed());
            check(&received, &checked, &*verify)?;
            anyhow::Ok(received.len())
        });
    }
    let mut document_bytes = 0;
    while let Some(joined) = joining.join_next().await {
        document_bytes = joined.context("a client's task panicked")??;
    }
    let checked = std::mem::take(
        &mut *checked
            .lock()
            .map_err(|_| anyhow::anyhow!("a check panicked"))?,
    );
    Ok(Joined {
        document_bytes,
        time_to_document: times.summary(),
        checked,
    })
}

/// Checks a client's bytes with `verify` the first time these exact bytes are seen.
fn check(
    received: &[u8],
    checked: &Mutex<HashMap<u64, bool>>,
    verify: &dyn Fn(&[u8]) -> bool,
) -> anyhow::Result<()> {
    let mut hasher = DefaultHasher::new();
    received.hash(&mut hasher);
    let digest = hasher.finish();
    let seen = checked
        .lock()
        .map_err(|_| anyhow::anyhow!("a check panicked"))?
        .contains_key(&digest);
    if !seen {
        let ok = verify(received);
        checked
            .lock()
            .map_err(|_| anyhow::anyhow!("a check panicked"))?
            .insert(digest, ok);
    }
    Ok(())
}
