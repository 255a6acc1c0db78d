//! Many incidents (commandpost only: it needs the HTTP API and the `/healthz` count of loaded documents): store
//! thousands of incidents, load a thousand, and measure what each loaded idle incident and each idle viewer
//! connection costs in server memory; then check that idle incidents unload.
//!
//! Two phases with a server restart between them, because declaring an incident loads it: after declaring ten
//! thousand, the allocator keeps the memory they used, and later loads reuse it without growing the resident
//! set, which would make every loaded incident look free. [`store`] declares the incidents and writes their ids
//! to a file; [`run`], against a fresh server process on the same data, loads some and measures. The server must
//! run with a short `unload-after-secs` (scripts/bench.sh uses 20 s), so the scenario can watch the incidents
//! unload once the viewers leave.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wire::DocumentId;

use super::{Run, open_all};
use crate::latency::{Clock, Latencies};
use crate::process::Process;
use crate::viewer::Viewer;

/// HTTP requests in flight at once while declaring.
const HTTP_AT_ONCE: usize = 32;

/// Reads in flight at once while loading. `GET /api/incidents/{id}` is a heavy read, which the server admits
/// `max-heavy-reads` at a time (at least one, the number of cores by default) with as many again waiting, and
/// refuses beyond that with 503: two at once are never refused.
const LOADS_AT_ONCE: usize = 2;

/// How long incidents may take to unload before the run fails.
const UNLOAD_LIMIT: Duration = Duration::from_secs(300);

/// Memory is read this long after a phase, once the server's tasks have settled.
const SETTLE: Duration = Duration::from_secs(2);

/// The measuring phase's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Incidents stored (by [`store`]).
    pub store: u32,
    /// Incidents loaded.
    pub load: u32,
    /// Idle viewer connections opened, each on one loaded incident.
    pub viewers: u32,
}

/// What the storing phase leaves for the measuring one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The incidents' ids.
    pub ids: Vec<String>,
    /// Incidents declared a second (each durable before its 201).
    pub declared_per_s: f64,
}

/// What it measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The server.
    pub target: String,
    /// The settings.
    pub settings: Settings,
    /// Incidents declared a second over the HTTP API (each durable before its 201).
    pub declared_per_s: f64,
    /// Server RSS with every incident stored and none loaded, MiB.
    pub rss_none_loaded_mib: f64,
    /// Server RSS with `load` incidents loaded and idle, MiB.
    pub rss_loaded_mib: f64,
    /// Server RSS with the viewers connected too, MiB.
    pub rss_viewers_mib: f64,
    /// Server RSS after the viewers left and the incidents unloaded, MiB.
    pub rss_unloaded_mib: f64,
    /// Memory per loaded idle incident, KiB.
    pub kib_per_loaded_incident: f64,
    /// Memory per idle viewer connection (its socket, its tasks, its sync state), KiB.
    pub kib_per_viewer: f64,
    /// Seconds from the last viewer leaving until no incident was loaded.
    pub unload_s: f64,
}

/// `/healthz`'s answer, as far as we need it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// Documents in memory.
    documents_loaded: u64,
}

/// `POST /api/incidents`' answer, as far as we need it.
#[derive(Deserialize)]
struct Declared {
    /// The document id.
    id: String,
}

/// Declares `count` incidents over the HTTP API.
pub async fn store(run: &Run, count: u32) -> anyhow::Result<Stored> {
    let target = &run.target;
    let started = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let declared: Declared = target
                .api_post(
                    "/api/incidents",
                    json!({"title": format!("Stored incident {i}")}),
                )
                .await?;
            anyhow::Ok(declared.id)
        })
        .buffer_unordered(HTTP_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    Ok(Stored {
        ids,
        declared_per_s: f64::from(count) / started.elapsed().as_secs_f64(),
    })
}

/// Measures on a server that holds `stored` and has loaded none of it yet.
pub async fn run(run: &Run, stored: &Stored, load: u32, viewers: u32) -> anyhow::Result<Report> {
    let server = run
        .server
        .clone()
        .context("many-incidents measures server memory: give --server-pid")?;
    let target = &run.target;
    let settings = Settings {
        store: stored.ids.len() as u32,
        load,
        viewers,
    };
    let ids = &stored.ids;
    let declared_per_s = stored.declared_per_s;
    wait_loaded(run, |n| n == 0).await?;
    let rss_none = settle_rss(&server).await?;

    let loading = &ids[..(settings.load as usize).min(ids.len())];
    futures_util::stream::iter(loading)
        .map(|id| async move {
            target
                .api_get::<serde_json::Value>(&format!("/api/incidents/{id}"))
                .await
        })
        .buffer_unordered(LOADS_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rss_loaded = settle_rss(&server).await?;
    let loaded = health(run).await?.documents_loaded;
    if loaded < loading.len() as u64 {
        bail!(
            "only {loaded} of {} incidents were still loaded when memory was read: the server's \
             unload-after-secs is too short for this machine",
            loading.len()
        );
    }

    let access = target.access().await?;
    let latencies = Arc::new(Latencies::new(
        Clock::start(),
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let documents: Vec<DocumentId> = loading
        .iter()
        .map(|id| id.parse())
        .collect::<Result<_, _>>()
        .context("a declared id")?;
    let viewers = open_all(settings.viewers, |i| {
        let (url, traffic, latencies) = (
            access.viewer.clone(),
            run.traffic.clone(),
            latencies.clone(),
        );
        let document = documents[i as usize % documents.len()];
        async move { Viewer::open(&url, i, document, latencies, traffic, false).await }
    })
    .await?;
    let rss_viewers = settle_rss(&server).await?;
    for viewer in viewers {
        viewer.close().await;
    }
    let left = Instant::now();
    wait_loaded(run, |n| n == 0).await?;
    let unload_s = left.elapsed().as_secs_f64();
    let rss_unloaded = settle_rss(&server).await?;

    Ok(Report {
        target: target.name().into(),
        declared_per_s,
        rss_none_loaded_mib: crate::process::mib(rss_none),
        rss_loaded_mib: crate::process::mib(rss_loaded),
        rss_viewers_mib: crate::process::mib(rss_viewers),
        rss_unloaded_mib: crate::process::mib(rss_unloaded),
        kib_per_loaded_incident: rss_loaded.saturating_sub(rss_none) as f64
            / f64::from(settings.load.max(1)),
        kib_per_viewer: rss_viewers.saturating_sub(rss_loaded) as f64
            / f64::from(settings.viewers.max(1)),
        unload_s,
        settings,
    })
}

/// The server's health answer.
async fn health(run: &Run) -> anyhow::Result<Health> {
    run.target.api_get("/healthz").await
}

/// Waits until the number of loaded documents satisfies `done`.
async fn wait_loaded(run: &Run, done: impl Fn(u64) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + UNLOAD_LIMIT;
    loop {
        let loaded = health(run).await?.documents_loaded;
        if done(loaded) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{loaded} documents still loaded after {UNLOAD_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The server's RSS once it has had [`SETTLE`] to finish what it was doing.
async fn settle_rss(server: &Process) -> anyhow::Result<u64> {
    tokio::time::sleep(SETTLE).await;
    server.rss_kib()
}
