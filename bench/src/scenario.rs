//! The workloads. Each takes a [`Run`] (the server and how to watch it) and its own settings, and returns a
//! serialisable report; `commandpost-bench report` turns reports into the tables of BENCHMARKS.md.

pub mod join_storm;
pub mod many_incidents;
pub mod trace;
pub mod war_room;
pub mod yjs;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::latency::Latencies;
use crate::link::Traffic;
use crate::process::{Meter, Process};
use crate::target::{Access, Target};
use crate::viewer::{Expected, Viewer};

/// How many peers connect at once while a scenario sets up. The servers' listen backlogs (128 for tokio's
/// default, and Node's 511) drop SYNs beyond it, and a dropped SYN costs a one-second retransmission.
const CONNECT_AT_ONCE: usize = 64;

/// What every scenario needs: the server, the process to measure, the byte counters.
pub struct Run {
    /// The server under test.
    pub target: Target,
    /// Its process, for CPU and memory; `None` measures nothing on the server side.
    pub server: Option<Process>,
    /// Bytes sent and received by every peer of the run.
    pub traffic: Arc<Traffic>,
    /// Shell commands run as the measured window opens and closes (`{pid}` stands for the server's pid), to
    /// profile exactly that window: `perf record -p {pid}`, `callgrind_control -i on {pid}`.
    pub hooks: Hooks,
}

/// Commands around the measured window; see [`Run::hooks`].
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Run (to completion) when the window opens.
    pub start: Option<String>,
    /// Run (to completion) when it closes.
    pub stop: Option<String>,
}

impl Hooks {
    /// Runs `command` through `sh -c` with `{pid}` replaced; a failing hook fails the run.
    fn run(command: Option<&String>, server: Option<&Process>) -> anyhow::Result<()> {
        let Some(command) = command else {
            return Ok(());
        };
        let pid = server.map(Process::id).unwrap_or_default();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(command.replace("{pid}", pid))
            .status()
            .with_context(|| format!("running {command:?}"))?;
        anyhow::ensure!(status.success(), "{command:?} failed: {status}");
        Ok(())
    }
}

/// CPU and memory of the server and of the load generator over a measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usages {
    /// The server, when its pid was given.
    pub server: Option<crate::process::Usage>,
    /// The load generator (all peers).
    pub bench: crate::process::Usage,
    /// Bytes the peers received per second (server → peers).
    pub bytes_in_per_s: f64,
    /// Bytes the peers sent per second (peers → server).
    pub bytes_out_per_s: f64,
    /// The machine's 1-minute load average as the window opened: above a few tenths, other work shared the
    /// cores and the figures are upper bounds.
    #[serde(default)]
    pub load_average: f64,
}

/// Meters for a window: server, load generator and traffic.
pub struct Window {
    /// The server's meter.
    server: Option<Meter>,
    /// Ours.
    bench: Meter,
    /// Traffic counters at the start.
    traffic: (u64, u64),
    /// The 1-minute load average before the window opened.
    load_average: f64,
}

impl Run {
    /// Starts measuring.
    pub fn measure(&self) -> anyhow::Result<Window> {
        let load_average = crate::process::load_average()?;
        Hooks::run(self.hooks.start.as_ref(), self.server.as_ref())?;
        Ok(Window {
            load_average,
            server: self.server.clone().map(Meter::start).transpose()?,
            bench: Meter::start(Process::me())?,
            traffic: (
                self.traffic.received.load(Ordering::Relaxed),
                self.traffic.sent.load(Ordering::Relaxed),
            ),
        })
    }

    /// Stops measuring.
    pub fn measured(&self, window: Window) -> anyhow::Result<Usages> {
        let bench = window.bench.finish()?;
        Hooks::run(self.hooks.stop.as_ref(), self.server.as_ref())?;
        let seconds = bench.seconds.max(1e-9);
        let received = self.traffic.received.load(Ordering::Relaxed) - window.traffic.0;
        let sent = self.traffic.sent.load(Ordering::Relaxed) - window.traffic.1;
        Ok(Usages {
            server: window.server.map(Meter::finish).transpose()?,
            bench,
            bytes_in_per_s: received as f64 / seconds,
            bytes_out_per_s: sent as f64 / seconds,
            load_average: window.load_average,
        })
    }
}

/// Viewers watching a document, each in a task of its own until it holds what it is told to expect.
pub struct Watchers {
    /// Tells every viewer what to expect once the editors are done.
    pub expected: tokio::sync::watch::Sender<Option<Expected>>,
    /// The viewers' tasks; each ends with its viewer once it holds the expected document.
    pub tasks: JoinSet<anyhow::Result<Viewer>>,
}

/// Opens `count` viewers of document `id` that time every change they receive into `latencies` and follow it in
/// tasks of their own. Viewer 0 is the witness: it keeps what it receives, to check the text itself at the end.
pub async fn watch_document(
    run: &Run,
    access: &Access,
    id: wire::DocumentId,
    count: u32,
    latencies: &Arc<Latencies>,
) -> anyhow::Result<Watchers> {
    let viewers = open_all(count, |i| {
        let (url, traffic, latencies) = (
            access.viewer.clone(),
            run.traffic.clone(),
            latencies.clone(),
        );
        async move { Viewer::open(&url, i, id, latencies, traffic, i == 0).await }
    })
    .await?;
    let (expected, expected_rx) = tokio::sync::watch::channel(None);
    let mut tasks = JoinSet::new();
    for mut viewer in viewers {
        let expected = expected_rx.clone();
        tasks.spawn(async move {
            viewer.follow(expected).await?;
            anyhow::Ok(viewer)
        });
    }
    Ok(Watchers { expected, tasks })
}

/// Runs `open(i)` for every `i` in `0..count`, at most [`CONNECT_AT_ONCE`] at a time; the results in index order.
pub async fn open_all<T, F, Fut>(count: u32, open: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut opened: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut pending = JoinSet::new();
    let mut next = 0;
    while next < count || !pending.is_empty() {
        while next < count && pending.len() < CONNECT_AT_ONCE {
            let future = open(next);
            let index = next;
            pending.spawn(async move { (index, future.await) });
            next += 1;
        }
        if let Some(joined) = pending.join_next().await {
            let (index, result) = joined.context("a peer's task panicked")?;
            opened[index as usize] = Some(result.with_context(|| format!("peer {index}"))?);
        }
    }
    opened
        .into_iter()
        .map(|o| o.context("every peer was opened"))
        .collect()
}
