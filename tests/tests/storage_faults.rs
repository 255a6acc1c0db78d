//! The embedded store failing under a running server, and healing without a restart.
//!
//! The fault is real and works as root (these tests run as root, and root ignores file permissions, so `chmod`
//! proves nothing): `chattr +i` marks the database file, its write-ahead log and the data directory immutable.
//! Linux then refuses every write to them with EPERM, to root too and through file descriptors the server already
//! holds, exactly as a disk that went read-only would. `chattr -i` clears the fault. It needs a file system with
//! inode flags (ext4, xfs, btrfs: the temporary directory here is on ext4) and CAP_LINUX_IMMUTABLE; if either is
//! missing the test fails saying so, rather than skipping.
//!
//! While the fault lasts: writes answer 503 with our JSON error, `/healthz` answers 503 `degraded`, a sync edit is
//! never acknowledged and its client is told why, and nothing that was refused shows up anywhere (no silent loss,
//! and no phantom either). Once it clears: health comes back by itself, writes succeed on the same process, and
//! after a restart exactly the acknowledged changes are there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{SyncClient, TestServer, eventually};

/// How long a write may take to fail during the fault: it must answer, not hang.
const ANSWERS_WITHIN: Duration = Duration::from_secs(15);

/// Files made immutable while it lives; dropping it (even in a failing test) clears the flag again, so the
/// temporary directory can be removed.
struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    /// Makes the database, its write-ahead log and the data directory itself immutable.
    fn data_dir(dir: &Path) -> Immutable {
        let paths: Vec<PathBuf> = ["commandpost.db", "commandpost.db-wal"]
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

    /// Clears the fault.
    fn clear(self) {}
}

impl Drop for Immutable {
    fn drop(&mut self) {
        if let Err(e) = chattr("-i", &self.paths) {
            eprintln!("clearing the immutable flag: {e}");
        }
    }
}

fn chattr(flag: &str, paths: &[PathBuf]) -> Result<(), String> {
    let output = Command::new("chattr")
        .arg(flag)
        .args(paths)
        .output()
        .map_err(|e| format!("running chattr: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_is_a_clear_503_and_heals_without_a_restart() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    let token = server.token("responder", "write").await;
    let id = server.declare(&token, "Disk trouble").await.id;
    let (status, _, _) = post_entry(&server, &token, &id, "before the fault").await?;
    ensure!(status == StatusCode::CREATED, "before the fault: {status}");
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&id).await?;
    client.splice("summary", 0, 0, "Acknowledged edit.").await?;

    let fault = Immutable::data_dir(&server.data_dir());

    // Writes answer 503 with our error body, promptly.
    let (status, body, took) = post_entry(&server, &token, &id, "during the fault").await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE,
        "a write during the fault answered {status} {body}"
    );
    ensure!(
        body["error"]["code"] == "unavailable",
        "the error body: {body}"
    );
    ensure!(took < ANSWERS_WITHIN, "the write took {took:?}");
    let declared = server
        .request(Method::POST, "/api/incidents", Some(&token))
        .json(&json!({"title": "Declared during the fault"}))
        .send()
        .await?;
    ensure!(
        declared.status() == StatusCode::SERVICE_UNAVAILABLE,
        "declaring during the fault answered {}",
        declared.status()
    );

    // Health says so.
    let (status, body) = server.healthz().await;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE
            && body["status"] == "degraded"
            && body["storage"] == "unavailable",
        "healthz during the fault: {status} {body}"
    );

    // A sync edit is never acknowledged; the client hears that storage is unavailable and is disconnected, and
    // keeps its change.
    client.splice_local("summary", 0, 0, "Never stored. ")?;
    let outcome = client
        .sync_until_acknowledged(Duration::from_secs(10))
        .await;
    let error = format!(
        "{:#}",
        outcome
            .err()
            .context("the edit was acknowledged during the fault")?
    );
    ensure!(
        error.contains("storage unavailable"),
        "the client was told why: {error}"
    );
    ensure!(
        !client.acknowledged(),
        "the client still holds its unacknowledged change"
    );

    // Nothing refused is visible: the document as the server serves it now is what storage has.
    if let Ok(response) = server
        .request(Method::GET, &format!("/api/incidents/{id}"), Some(&token))
        .send()
        .await
        && response.status() == StatusCode::OK
    {
        let view = response.text().await?;
        ensure!(
            !view.contains("during the fault") && !view.contains("Never stored"),
            "a refused change is visible: {view}"
        );
    }

    fault.clear();
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
        again.text("summary").starts_with("Acknowledged edit."),
        "the acknowledged sync edit is there: {:?}",
        again.text("summary")
    );
    again.splice("summary", 0, 0, "Healed. ").await?;

    // And on disk: exactly what was acknowledged.
    server.stop_process().await;
    server.restart().await;
    let markdown = server.markdown(&token, &id).await;
    for kept in [
        "before the fault",
        "after the fault",
        "Healed. ",
        "Acknowledged edit.",
    ] {
        ensure!(markdown.contains(kept), "{kept:?} is missing:\n{markdown}");
    }
    for refused in [
        "during the fault",
        "Never stored",
        "Declared during the fault",
    ] {
        ensure!(
            !markdown.contains(refused),
            "{refused:?} was refused but stored:\n{markdown}"
        );
    }
    let listed = server
        .request(Method::GET, "/api/incidents", Some(&token))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        !listed.contains("Declared during the fault"),
        "the refused declaration is listed: {listed}"
    );
    server.stop().await;
    Ok(())
}
