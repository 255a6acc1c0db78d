//! Scheduled backups: with `backup-every` and `backup-dir` set, the server writes a backup of its store (the format of
//! `store/backup.rs`, as `commandpost backup` does) every period, keeps the newest `backup-keep` of them, and shows
//! in `/metrics` when the last one was written, its size and how many failed. Every node of a PostgreSQL cluster
//! would back up the same database, so a cluster sets it on one node (or schedules `commandpost backup` instead).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// The file names of scheduled backups: `commandpost-<UTC time>.backup`, so that names sort by age.
const PREFIX: &str = "commandpost-";
/// See [`PREFIX`].
const SUFFIX: &str = ".backup";

/// What `backup-dir`, `backup-every` and `backup-keep` ask for.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Where the backups go.
    pub dir: PathBuf,
    /// How often.
    pub every: Duration,
    /// How many stay.
    pub keep: usize,
}

impl Schedule {
    /// The scheduled backups `backup-every` asks for, if any; refused without `backup-dir`, which has no default
    /// (backups beside the store would be lost with its disk).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Schedule>> {
        let Some(every) = config.backup_every else {
            return Ok(None);
        };
        let Some(dir) = config.backup_dir.clone() else {
            anyhow::bail!(
                "backup-every is set without backup-dir: name the directory the backups go to"
            );
        };
        anyhow::ensure!(
            config.backup_keep > 0,
            "backup-keep must keep at least one backup"
        );
        Ok(Some(Schedule {
            dir,
            every,
            keep: config.backup_keep,
        }))
    }
}

/// Starts the task that backs `store` up on `schedule` until `stop`; the first backup is one period after start.
pub fn spawn(
    store: Arc<dyn Store>,
    schedule: Schedule,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(schedule.every) => {}
            }
            match back_up(store.as_ref(), &schedule).await {
                Ok((path, bytes)) => {
                    metrics.backups_written.inc();
                    metrics.backup_last_success.set(Utc::now().timestamp());
                    metrics
                        .backup_bytes
                        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                    tracing::info!(path = %path.display(), bytes, "scheduled backup written");
                }
                Err(error) => {
                    metrics.backups_failed.inc();
                    tracing::warn!(error = format!("{error:#}"), "scheduled backup failed");
                }
            }
        }
    })
}

/// Writes one backup into the directory, then deletes the oldest beyond `keep`; returns its path and size.
async fn back_up(store: &dyn Store, schedule: &Schedule) -> anyhow::Result<(PathBuf, u64)> {
    use anyhow::Context;
    std::fs::create_dir_all(&schedule.dir)
        .with_context(|| format!("creating {}", schedule.dir.display()))?;
    let name = format!(
        "{PREFIX}{}{SUFFIX}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let path = schedule.dir.join(name);
    store.backup(&path).await?;
    let bytes = std::fs::metadata(&path)?.len();
    prune(&schedule.dir, schedule.keep).context("deleting old backups")?;
    Ok((path, bytes))
}

/// Deletes all but the newest `keep` scheduled backups in `dir` (never other files).
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    backups.sort();
    let old = backups.len().saturating_sub(keep);
    for path in &backups[..old] {
        std::fs::remove_file(path)?;
    }
    Ok(())
}
