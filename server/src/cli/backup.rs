//! `commandpost backup`, `restore` and `check`: the whole store to one portable file and back, and the integrity
//! check, for either backend (the format is `store/backup.rs`'s).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::config::{Config, parse_duration};
use crate::store::{Store, StoreError, backup};

/// The scheduled-backup flags of `serve`, each overriding the config file's key of the same name.
#[derive(Args, Debug, Default)]
pub(super) struct ScheduleArgs {
    /// Where scheduled backups go (created if missing).
    #[arg(long, env = "COMMANDPOST_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    /// Back the store up into --backup-dir this often: 6h, 30m, 1d, 90s, or seconds [default: never].
    #[arg(long, env = "COMMANDPOST_BACKUP_EVERY", value_parser = parse_duration)]
    backup_every: Option<std::time::Duration>,
    /// How many scheduled backups to keep [default: 7].
    #[arg(long, env = "COMMANDPOST_BACKUP_KEEP")]
    backup_keep: Option<usize>,
}

impl ScheduleArgs {
    /// Writes every flag that was given over `config`.
    pub(super) fn apply(self, config: &mut Config) {
        if let Some(dir) = self.backup_dir {
            config.backup_dir = Some(dir);
        }
        if let Some(every) = self.backup_every {
            config.backup_every = Some(every);
        }
        if let Some(keep) = self.backup_keep {
            config.backup_keep = keep;
        }
    }
}

/// Writes a backup of `store` to `out` and says how large it is.
pub async fn backup(store: &dyn Store, out: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    store
        .backup(out)
        .await
        .with_context(|| format!("backing up to {}", out.display()))?;
    let size = std::fs::metadata(out)?.len();
    eprintln!(
        "commandpost: wrote {} ({size} bytes) in {:.1?}",
        out.display(),
        started.elapsed()
    );
    Ok(())
}

/// Restores the backup `file` into `store`, refusing a store with data unless `force`.
pub async fn restore(store: &dyn Store, file: &Path, force: bool) -> anyhow::Result<()> {
    match store.restore(file, force).await {
        Err(StoreError::Conflict(why)) => anyhow::bail!(
            "{why}; restore fills an empty store only (give --force to replace everything in it)"
        ),
        result => result.with_context(|| format!("restoring {}", file.display())),
    }?;
    eprintln!("commandpost: restored {}", file.display());
    Ok(())
}

/// Checks `store` through a backup taken into a scratch file, so that one consistent moment of a running store
/// is judged; prints what is wrong and fails when anything is.
pub async fn check_store(store: &dyn Store) -> anyhow::Result<()> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("commandpost-check-{}.db", std::process::id())));
    store
        .backup(&scratch.0)
        .await
        .context("taking the snapshot to check")?;
    check_file(&scratch.0).await
}

/// Checks the backup `file`; prints what is wrong and fails when anything is.
pub async fn check_file(file: &Path) -> anyhow::Result<()> {
    let path = file.to_owned();
    let report = tokio::task::spawn_blocking(move || backup::check(&path))
        .await?
        .with_context(|| format!("checking {}", file.display()))?;
    for problem in &report.problems {
        println!("{problem}");
    }
    eprintln!(
        "commandpost: checked {} documents ({} chunks): {} problems",
        report.documents,
        report.chunks,
        report.problems.len()
    );
    anyhow::ensure!(
        report.problems.is_empty(),
        "the store is damaged: {} problems",
        report.problems.len()
    );
    Ok(())
}

/// A scratch file, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
