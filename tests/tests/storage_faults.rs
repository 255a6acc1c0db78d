//! The embedded store failing under a running server, and healing without a restart. Two real faults, both of
//! which work as root (these tests run as root, and root ignores file permissions, so `chmod` proves nothing):
//!
//! - **Unwritable**: `chattr +i` marks the database file, its write-ahead log, the log's index (`-shm`, which
//!   SQLite maps into memory: a write to it then raises SIGBUS instead of failing, so the server must see the fault
//!   coming) and the data directory immutable. Linux then refuses every write to them with EPERM, to root too and
//!   through file descriptors the server already holds, as a disk gone read-only would. `chattr -i` clears it. Needs a file system with inode flags (ext4, xfs,
//!   btrfs; the temporary directory here is on ext4) and CAP_LINUX_IMMUTABLE.
//! - **Full**: the data directory is moved onto a 16 MiB tmpfs, which a filler file then fills to the last byte
//!   (ENOSPC); deleting the filler clears it. Needs CAP_SYS_ADMIN to mount. A full disk refuses only what needs new
//!   space: a small write may still fit in space the write-ahead log took for a transaction that failed, and then it
//!   is stored and honestly acknowledged, so the drill posts until a write is refused.
//!
//! If a capability is missing the test fails saying so, rather than skipping. During the fault: `/healthz` answers
//! 503 `degraded` (its probe is a write), refused writes answer 503 with our JSON error promptly, a refused sync
//! edit is never acknowledged and its client is told why, and nothing refused shows up anywhere. Once it clears:
//! health comes back by itself, writes succeed on the same process, and after a restart every acknowledged change
//! is there and every refused one is not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{SyncClient, TestServer, eventually};

/// Timeline entries posted during a fault until one is refused; a full disk may take a few small ones first.
const MAX_ATTEMPTS: usize = 50;

/// How long a write may take to fail during the fault: it must answer, not hang.
const ANSWERS_WITHIN: Duration = Duration::from_secs(15);

/// Files made immutable while it lives; dropping it (even in a failing test) clears the flag again, so the
/// temporary directory can be removed.
struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    /// Makes the database, its write-ahead log, the log's mapped index and the data directory itself immutable.
    fn data_dir(dir: &Path) -> Immutable {
        let paths: Vec<PathBuf> = ["commandpost.db", "commandpost.db-wal", "commandpost.db-shm"]
            .iter()
            .map(|name| dir.join(name))
            .filter(|path| path.exists())
            .chain([dir.to_owned()])
            .collect();
        let guard = Immutable { paths };
        chattr("+i", &guard.paths).unwrap_or_else(|e| {
            panic!(
                "this test makes the data directory immutable with chattr +i, which needs root (CAP_LINUX_IMMUTABLE) \
                 and a file system with inode flags such as ext4: {e}"
            )
        });
        guard
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        if let Err(e) = chattr("-i", &self.paths) {
            eprintln!("clearing the immutable flag: {e}");
        }
    }
}

fn chattr(flag: &str, paths: &[PathBuf]) -> Result<(), String> {
    let mut args = vec![flag.to_owned()];
    args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
    run(
        "chattr",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// Posts a timeline entry; returns the status, the JSON body and how long the answer took.
async fn post_entry(
    server: &TestServer,
    token: &str,
    id: &str,
    text: &str,
) -> anyhow::Result<(StatusCode, Value, Duration)> {
    let started = Instant::now();
    let response = server
        .request(
            Method::POST,
            &format!("/api/incidents/{id}/timeline"),
            Some(token),
        )
        .json(&json!({ "text": text }))
        .send()
        .await?;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body, started.elapsed()))
}

/// How a fault may treat writes.
#[derive(Clone, Copy, PartialEq)]
enum Refuses {
    /// Every write fails (an unwritable file).
    Everything,
    /// Writes fail once they need new space; a small one may still fit in space SQLite's write-ahead log already
    /// holds from a failed transaction (a full disk). Whatever the server answers must then be true.
    WhatDoesNotFit,
}

/// What the server answered to one write during the fault: a marker text and whether it was acknowledged.
struct Outcome {
    marker: String,
    acknowledged: bool,
}

/// Runs the drill on `server`: writes, then `inject` (whose result clears the fault when dropped), the checks
/// during the fault, the recovery and the restart.
async fn drill<F>(
    mut server: TestServer,
    refuses: Refuses,
    inject: impl FnOnce(&Path) -> F,
) -> anyhow::Result<()> {
    let token = server.token("responder", "write").await;
    let id = server.declare(&token, "Disk trouble").await.id;
    let (status, _, _) = post_entry(&server, &token, &id, "before the fault").await?;
    ensure!(status == StatusCode::CREATED, "before the fault: {status}");
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&id).await?;
    client.splice("summary", 0, 0, "Acknowledged edit.").await?;

    let fault = inject(&server.data_dir());

    // Health says so, before any write: the probe itself is a write.
    let (status, body) = server.healthz().await;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE
            && body["status"] == "degraded"
            && body["storage"] == "unavailable",
        "healthz during the fault: {status} {body}"
    );

    // A sync edit: when storage refuses it, it is never acknowledged, and the client hears that storage is
    // unavailable, is disconnected, and keeps its change.
    client.splice_local("summary", 0, 0, "Sent during the fault. ")?;
    let mut outcomes = Vec::new();
    let outcome = client
        .sync_until_acknowledged(Duration::from_secs(30))
        .await;
    if let Err(error) = &outcome {
        let error = format!("{error:#}");
        ensure!(
            error.contains("storage unavailable"),
            "the client was told why: {error}"
        );
        ensure!(!client.acknowledged(), "the client still holds its change");
    }
    outcomes.push(Outcome {
        marker: "Sent during the fault".to_owned(),
        acknowledged: outcome.is_ok(),
    });
    // Writes answer promptly: 503 with our error body, or (only where the fault allows it) a true 201. Timeline
    // entries are posted until one is refused.
    for n in 0..MAX_ATTEMPTS {
        let marker = format!("during the fault {n}.");
        let (status, body, took) = post_entry(&server, &token, &id, &marker).await?;
        ensure!(took < ANSWERS_WITHIN, "the write took {took:?}");
        let refused = status == StatusCode::SERVICE_UNAVAILABLE;
        ensure!(
            refused && body["error"]["code"] == "unavailable" || status == StatusCode::CREATED,
            "a write during the fault answered {status} {body}"
        );
        outcomes.push(Outcome {
            marker,
            acknowledged: !refused,
        });
        if refused {
            break;
        }
    }
    ensure!(
        outcomes.last().is_some_and(|o| !o.acknowledged),
        "{MAX_ATTEMPTS} writes during the fault were all acknowledged"
    );
    let declared = server
        .request(Method::POST, "/api/incidents", Some(&token))
        .json(&json!({"title": "Declared during the fault"}))
        .send()
        .await?;
    ensure!(
        matches!(
            declared.status(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CREATED
        ),
        "declaring during the fault answered {}",
        declared.status()
    );
    outcomes.push(Outcome {
        marker: "Declared during the fault".to_owned(),
        acknowledged: declared.status() == StatusCode::CREATED,
    });

    if refuses == Refuses::Everything {
        for outcome in &outcomes {
            ensure!(
                !outcome.acknowledged,
                "{:?} was acknowledged although nothing can be written",
                outcome.marker
            );
        }
    }

    // Nothing refused is visible: the document as the server serves it now is what storage has.
    if let Ok(response) = server
        .request(Method::GET, &format!("/api/incidents/{id}"), Some(&token))
        .send()
        .await
        && response.status() == StatusCode::OK
    {
        let view = response.text().await?;
        for outcome in outcomes.iter().filter(|o| !o.acknowledged) {
            ensure!(
                !view.contains(&outcome.marker),
                "{:?} was refused but is visible: {view}",
                outcome.marker
            );
        }
    }

    drop(fault);
    // Health comes back by itself, and writes work on the same process.
    eventually("healthz to recover", Duration::from_secs(20), || async {
        let (status, _) = server.healthz().await;
        (status == StatusCode::OK).then_some(())
    })
    .await
    .with_context(|| format!("server log:\n{}", server.log()))?;
    let (status, body, _) = post_entry(&server, &token, &id, "after the fault").await?;
    ensure!(
        status == StatusCode::CREATED,
        "after the fault: {status} {body}"
    );
    let mut again = SyncClient::connect(&server.ws_url(&token)).await?;
    again.open(&id).await?;
    ensure!(
        again.text("summary").contains("Acknowledged edit."),
        "the acknowledged sync edit is there: {:?}",
        again.text("summary")
    );
    again.splice("summary", 0, 0, "Healed. ").await?;

    // And on disk: what was acknowledged, and nothing that was refused.
    server.stop_process().await;
    server.restart().await;
    let markdown = server.markdown(&token, &id).await;
    let listed = server
        .request(Method::GET, "/api/incidents", Some(&token))
        .send()
        .await?
        .text()
        .await?;
    let stored = format!("{markdown}\n{listed}");
    for kept in [
        "before the fault",
        "after the fault",
        "Healed. ",
        "Acknowledged edit.",
    ] {
        ensure!(stored.contains(kept), "{kept:?} is missing:\n{stored}");
    }
    for outcome in &outcomes {
        ensure!(
            stored.contains(&outcome.marker) == outcome.acknowledged,
            "{:?} was {} but is {} after the restart:\n{stored}",
            outcome.marker,
            if outcome.acknowledged {
                "acknowledged"
            } else {
                "refused"
            },
            if outcome.acknowledged {
                "missing"
            } else {
                "stored"
            },
        );
    }
    let refused = outcomes.iter().filter(|o| !o.acknowledged).count();
    println!(
        "storage fault drill: {refused} of {} writes refused with 503 during the fault, every answer true \
         after recovery and restart",
        outcomes.len()
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_is_a_clear_503_and_heals_without_a_restart() -> anyhow::Result<()> {
    drill(
        TestServer::start_process().await,
        Refuses::Everything,
        Immutable::data_dir,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_503_and_heals_without_a_restart() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    // Move the data onto a small file system of its own, which the drill then fills up.
    server.stop_process().await;
    let mount = Tmpfs::replace(&server.data_dir());
    server.restart().await;
    let result = drill(server, Refuses::WhatDoesNotFit, Filler::fill).await;
    drop(mount);
    result
}

/// A 16 MiB tmpfs mounted over a data directory, holding a copy of what was there; unmounted when dropped.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn replace(dir: &Path) -> Tmpfs {
        let saved = dir.with_extension("before-mount");
        std::fs::rename(dir, &saved).expect("moving the data directory aside");
        std::fs::create_dir(dir).expect("creating the mount point");
        run("mount", &["-t", "tmpfs", "-o", "size=16m", "tmpfs", &dir.to_string_lossy()]).unwrap_or_else(|e| {
            panic!("this test mounts a small tmpfs to fill it up, which needs root (CAP_SYS_ADMIN): {e}")
        });
        let mount = Tmpfs { at: dir.to_owned() };
        for entry in std::fs::read_dir(&saved).expect("reading the data directory") {
            let from = entry.expect("a directory entry").path();
            std::fs::copy(&from, dir.join(from.file_name().expect("a file name")))
                .expect("copying the data");
        }
        mount
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &["-l", &self.at.to_string_lossy()]) {
            eprintln!("unmounting {}: {e}", self.at.display());
        }
    }
}

/// A file that takes every free byte of the data directory's file system; removing it (on drop) frees the space.
struct Filler {
    path: PathBuf,
}

impl Filler {
    fn fill(dir: &Path) -> Filler {
        use std::io::Write;
        let path = dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("creating the filler");
        let block = vec![0xA5u8; 64 * 1024];
        // Write until the file system refuses: ENOSPC is the point.
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..512]).is_ok() {}
        let _ = file.sync_all();
        Filler { path }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
