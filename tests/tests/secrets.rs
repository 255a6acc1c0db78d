//! Tokens never reach the logs: the real binary runs with `RUST_LOG=trace` (every span and event of every crate),
//! tokens are used every way the server accepts them (the `Authorization` header on the API, the analytics routes
//! and the `/sync` upgrade, a `/sync` ticket, a token created and revoked over HTTP while its connection is open)
//! and sent where it refuses them (`?token=` on `/sync` and the analytics routes, refused and malformed requests),
//! and neither token, nor the ticket, appears anywhere in what the server wrote to stdout or stderr.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tests::{SyncClient, SyncTarget, ws};

/// The real command line, built by this crate.
const BINARY: &str = env!("CARGO_BIN_EXE_commandpost-under-test");

/// Runs `commandpost token create` on `data` and returns the token it prints.
async fn create_token(data: &Path, name: &str) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(BINARY)
        .args([
            "token",
            "create",
            "--name",
            name,
            "--scope",
            "admin",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("COMMANDPOST_DATABASE_URL")
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "token create: {output:?}");
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_appear_nowhere_in_the_servers_output_even_at_trace_level() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    // Made before the server starts, so that it has no first-run token to print.
    let token = create_token(&data, "keeper").await?;
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = tokio::process::Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "trace")
        .env_remove("COMMANDPOST_DATABASE_URL")
        .env_remove("COMMANDPOST_LISTEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .kill_on_drop(true)
        .spawn()?;
    let addr = tests::eventually("the server's address", tests::DEADLINE, || {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        async move {
            text.lines()
                .find_map(|l| l.strip_prefix("commandpost listening on http://"))
                .map(str::to_owned)
        }
    })
    .await?;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let request = http.get(format!("{base}{path}"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };

    // The header, on reads and writes.
    anyhow::ensure!(
        get("/api/session", Some(&token))
            .send()
            .await?
            .status()
            .is_success()
    );
    let declared: Value = http
        .post(format!("{base}/api/incidents"))
        .bearer_auth(&token)
        .json(&json!({"title": "Secrets"}))
        .send()
        .await?
        .json()
        .await?;
    let id = declared["id"]
        .as_str()
        .context("an incident id")?
        .to_owned();
    // The analytics routes take the header; a token in their query string is refused, not used.
    for path in ["/api/analytics/incidents?format=csv", "/insights"] {
        anyhow::ensure!(
            get(path, Some(&token)).send().await?.status().is_success(),
            "{path}"
        );
    }
    for path in [
        format!("/api/analytics/incidents?format=csv&token={token}"),
        format!("/insights?token={token}"),
    ] {
        anyhow::ensure!(get(&path, None).send().await?.status() == 400, "{path}");
    }
    // Refusals and malformed requests that carry it.
    let wrong = format!("{token}x");
    anyhow::ensure!(get("/api/session", Some(&wrong)).send().await?.status() == 401);
    let bad_json = http
        .post(format!("{base}/api/incidents/{id}/timeline"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await?;
    anyhow::ensure!(bad_json.status() == 400, "{}", bad_json.status());

    // /sync with a ticket: open, edit, then break the protocol; the ticket cannot be used twice.
    let ticket: Value = http
        .post(format!("{base}/api/sync-ticket"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().context("a ticket")?.to_owned();
    let with_ticket = SyncTarget {
        url: format!("ws://{addr}/sync?ticket={ticket}"),
        bearer: None,
    };
    let mut client = SyncClient::connect(&with_ticket).await?;
    client.open(&id).await?;
    client.splice("summary", 0, 0, "synced").await?;
    client
        .send_raw(ws::Message::Text("not the protocol".into()))
        .await?;
    client.expect_error_then_close().await?;
    anyhow::ensure!(SyncClient::connect(&with_ticket).await.is_err());
    // /sync with the token in the query: refused.
    let in_query = SyncTarget {
        url: format!("ws://{addr}/sync?token={token}"),
        bearer: None,
    };
    anyhow::ensure!(SyncClient::connect(&in_query).await.is_err());
    // /sync with the header.
    let with_header = SyncTarget {
        url: format!("ws://{addr}/sync"),
        bearer: Some(token.clone()),
    };
    let (socket, _) = tokio_tungstenite::connect_async(&with_header).await?;
    drop(socket);

    // A token made over HTTP, used on /sync, revoked while its connection is open.
    let created: Value = http
        .post(format!("{base}/api/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "short-lived", "scope": "write"}))
        .send()
        .await?
        .json()
        .await?;
    let second = created["token"]
        .as_str()
        .context("the new token")?
        .to_owned();
    let as_second = SyncTarget {
        url: format!("ws://{addr}/sync"),
        bearer: Some(second.clone()),
    };
    let mut doomed = SyncClient::connect(&as_second).await?;
    doomed.open(&id).await?;
    let revoked = http
        .delete(format!("{base}/api/tokens/short-lived"))
        .bearer_auth(&token)
        .send()
        .await?;
    anyhow::ensure!(revoked.status() == 204, "{}", revoked.status());
    doomed.expect_error_then_close().await?;
    anyhow::ensure!(SyncClient::connect(&as_second).await.is_err());

    // Give the last log lines a moment, then stop the server and read everything it wrote.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill()?;
    let _ = child.wait().await;
    let output = std::fs::read_to_string(&out_path)? + &std::fs::read_to_string(&err_path)?;
    // Trace level really was on (so the check below had something to look at).
    anyhow::ensure!(
        output.lines().count() > 200 && output.contains("TRACE"),
        "the server logged only {} lines",
        output.lines().count()
    );
    for (what, secret) in [
        ("the CLI-made token", &token),
        ("the HTTP-made token", &second),
        ("the sync ticket", &ticket),
    ] {
        // The random part alone, in case a log line cut or re-encoded the prefix.
        let body = secret.trim_start_matches("cp_").trim_start_matches("cpt_");
        if let Some(at) = output.find(body) {
            let from = output[..at].rfind('\n').map_or(0, |i| i + 1);
            let line = output[from..].lines().next().unwrap_or_default();
            anyhow::bail!("{what} appears in the server's output: {line}");
        }
    }
    Ok(())
}
