//! CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux), for the server
//! under test and for the load generator itself; the integration tests' load smoke test and bulk export benchmark
//! read them through here too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// How often a [`Meter`] samples memory, to catch the peak of its own window (`VmHWM` is the whole life's).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A process to watch: a pid, or `self`.
#[derive(Debug, Clone)]
pub struct Process(String);

impl Process {
    /// The process with id `pid`.
    pub fn pid(pid: u32) -> Process {
        Process(pid.to_string())
    }

    /// This process.
    pub fn me() -> Process {
        Process("self".into())
    }

    /// The pid as text (`self` for this process).
    pub fn id(&self) -> &str {
        &self.0
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .with_context(|| format!("reading /proc/{}/stat", self.0))?;
        // After the command name in parentheses (which may hold spaces) come state, ppid, …; utime and stime are
        // the 12th and 13th fields from there.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
            bail!("no CPU times in /proc/{}/stat", self.0);
        };
        // Linux fixes USER_HZ at 100 for user space.
        Ok((user + system) as f64 / 100.0)
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS")
    }

    /// The largest resident memory over the process's life (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM")
    }

    /// A `kB` line of `/proc/<pid>/status`.
    fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0))
            .with_context(|| format!("reading /proc/{}/status", self.0))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/{}/status", self.0))
    }
}

/// Watches a process over a window of a run: CPU used in it and memory at its ends and peak.
pub struct Meter {
    /// The process.
    process: Process,
    /// When the window opened.
    started: Instant,
    /// CPU seconds at the start.
    cpu_start: f64,
    /// RSS at the start.
    rss_start: u64,
    /// Largest RSS sampled so far.
    peak: Arc<AtomicU64>,
    /// The sampling task, stopped by [`Meter::finish`].
    sampler: tokio::task::JoinHandle<()>,
}

/// What a [`Meter`] saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    /// Length of the window, seconds.
    pub seconds: f64,
    /// CPU seconds used in the window (user + system).
    pub cpu_s: f64,
    /// Resident memory at the start, MiB.
    pub rss_start_mib: f64,
    /// Resident memory at the end, MiB.
    pub rss_end_mib: f64,
    /// Largest resident memory sampled in the window, MiB.
    pub rss_peak_mib: f64,
}

impl Meter {
    /// Opens a window on `process`.
    pub fn start(process: Process) -> anyhow::Result<Meter> {
        let rss_start = process.rss_kib()?;
        let peak = Arc::new(AtomicU64::new(rss_start));
        let sampler = {
            let (process, peak) = (process.clone(), peak.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    tick.tick().await;
                    let Ok(rss) = process.rss_kib() else { return };
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
            })
        };
        Ok(Meter {
            cpu_start: process.cpu_seconds()?,
            process,
            started: Instant::now(),
            rss_start,
            peak,
            sampler,
        })
    }

    /// Closes the window.
    pub fn finish(self) -> anyhow::Result<Usage> {
        self.sampler.abort();
        let rss_end = self.process.rss_kib()?;
        let peak = self.peak.load(Ordering::Relaxed).max(rss_end);
        Ok(Usage {
            seconds: self.started.elapsed().as_secs_f64(),
            cpu_s: self.process.cpu_seconds()? - self.cpu_start,
            rss_start_mib: mib(self.rss_start),
            rss_end_mib: mib(rss_end),
            rss_peak_mib: mib(peak),
        })
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The machine's 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    text.split_whitespace()
        .next()
        .and_then(|first| first.parse().ok())
        .context("no load average in /proc/loadavg")
}
