//! What the server acknowledged survives: the real `commandpost` binary runs in a child process, which is stopped
//! gracefully or killed with SIGKILL right after an acknowledgement, then restarted on the same data directory.
//! Timeline entries answered with 201, from one writer or several at once, and a sync edit whose acknowledgement the
//! client saw (the server's advertised heads cover it) are all there afterwards, the document loads, and the tokens
//! (the first-run admin token too) still work.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{DEADLINE, SyncClient, TestServer, append_until_refused, eventually, markdown_section};

/// The timeline entries of the incident as the server reads it now: id → text.
async fn timeline(
    server: &TestServer,
    token: &str,
    id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let view = server.incident_json(token, id).await;
    let entries = view["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["kind"] == "timeline"))
        .and_then(|f| f["value"].as_array())
        .context("the incident has a timeline")?;
    Ok(entries
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default().to_owned(),
                e["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Checks that the document loads every way the API offers it.
async fn loads(server: &TestServer, token: &str, id: &str) -> anyhow::Result<()> {
    for format in ["markdown", "html", "json", "automerge"] {
        let response = server
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/export?format={format}"),
                Some(token),
            )
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "export {format}: {}",
            response.status()
        );
    }
    let mut client = SyncClient::connect(&server.ws_url(token)).await?;
    client
        .open(id)
        .await
        .context("syncing the document after the restart")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_entries_survive_a_graceful_restart() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    let token = server.token("bot", "write").await;
    let id = server.declare(&token, "Graceful restart").await.id;
    let mut written = Vec::new();
    for n in 0..20 {
        let text = format!("entry {n} before the restart");
        written.push((server.append_timeline(&token, &id, &text).await, text));
    }
    server.stop_process().await;
    server.restart().await;

    let entries: HashSet<(String, String)> =
        timeline(&server, &token, &id).await?.into_iter().collect();
    for entry in &written {
        anyhow::ensure!(entries.contains(entry), "{entry:?} survived the restart");
    }
    anyhow::ensure!(
        entries.len() == written.len(),
        "nothing else appeared: {entries:?}"
    );
    // The first-run admin token and the tokens made through the API still work.
    let session: Value = server
        .request(Method::GET, "/api/session", Some(&server.admin_token))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        session == json!({"kind": "token", "name": "admin", "scope": "admin"}),
        "{session}"
    );
    loads(&server, &token, &id).await?;
    server
        .append_timeline(&token, &id, "after the restart")
        .await;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_acknowledged_right_before_kill_9_survives() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    let token = server.token("bot", "write").await;
    let id = server.declare(&token, "Killed right after a 201").await.id;
    for n in 0..5 {
        server
            .append_timeline(&token, &id, &format!("entry {n}"))
            .await;
    }
    let last = server.append_timeline(&token, &id, "the last words").await;
    server.kill9();
    server.restart().await;

    let entries = timeline(&server, &token, &id).await?;
    anyhow::ensure!(
        entries.contains(&(last.clone(), "the last words".to_owned())),
        "the entry acknowledged just before the kill is there: {entries:?}"
    );
    anyhow::ensure!(entries.len() == 6, "all six entries: {entries:?}");
    loads(&server, &token, &id).await?;
    // A new incident after the crash gets a number of its own.
    let first = server.incident_json(&token, &id).await["number"].as_i64();
    let next = server.declare(&token, "After the crash").await;
    anyhow::ensure!(
        next.number.is_some() && next.number != first,
        "{first:?} vs {:?}",
        next.number
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_kill_9_in_the_middle_of_a_stream() -> anyhow::Result<()>
{
    const WRITERS: usize = 4;
    /// Acknowledgements after which the server is killed, while the writers keep going.
    const KILL_AFTER: usize = 40;
    let mut server = TestServer::start_process().await;
    let token = server.token("bot", "write").await;
    let id = server.declare(&token, "Killed mid-stream").await.id;

    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        writers.push(tokio::spawn(append_until_refused(
            server.http().clone(),
            server.url(&format!("/api/incidents/{id}/timeline")),
            token.clone(),
            format!("writer {writer}"),
            acked.clone(),
        )));
    }
    eventually("enough acknowledged appends", DEADLINE, || {
        let acked = acked.load(Ordering::SeqCst);
        async move { (acked >= KILL_AFTER).then_some(()) }
    })
    .await?;
    server.kill9();
    let mut promised = Vec::new();
    for writer in writers {
        promised.extend(writer.await.context("a writer panicked")?);
    }
    anyhow::ensure!(
        promised.len() >= KILL_AFTER,
        "{} acknowledged",
        promised.len()
    );

    server.restart().await;
    let entries: HashSet<(String, String)> =
        timeline(&server, &token, &id).await?.into_iter().collect();
    let lost: Vec<_> = promised.iter().filter(|p| !entries.contains(p)).collect();
    anyhow::ensure!(
        lost.is_empty(),
        "{} of {} acknowledged entries were lost: {lost:?}",
        lost.len(),
        promised.len()
    );
    loads(&server, &token, &id).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_edit_the_server_acknowledged_survives_kill_9() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    let token = server.token("editor", "write").await;
    let id = server.declare(&token, "Sync edit then kill").await.id;
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&id).await?;
    // `splice` returns once the server's advertised heads cover the edit, which it sends only once it is durable.
    client
        .splice("summary", 0, 0, "Rolled back release 42.")
        .await?;
    client.splice("summary", 0, 0, "Mitigated. ").await?;
    let acknowledged = client.heads();
    anyhow::ensure!(
        client.server_heads().as_ref() == Some(&acknowledged),
        "the server advertised our heads: {:?} vs {acknowledged:?}",
        client.server_heads()
    );
    server.kill9();
    // The client notices the server is gone.
    let gone = client.sync_until(|_| false, Duration::from_secs(5)).await;
    anyhow::ensure!(gone.is_err(), "the sync connection ends with the server");
    server.restart().await;

    let mut document = server.document(&token, &id).await;
    let mut heads = document.doc_mut().get_heads();
    heads.sort();
    anyhow::ensure!(
        heads == acknowledged,
        "the server has exactly the acknowledged heads"
    );
    let markdown = server.markdown(&token, &id).await;
    anyhow::ensure!(
        markdown_section(&markdown, "Summary").as_deref()
            == Some("Mitigated. Rolled back release 42."),
        "the summary survived:\n{markdown}"
    );
    // A client reconnecting after the crash sees the edit and can go on editing.
    let mut again = SyncClient::connect(&server.ws_url(&token)).await?;
    again.open(&id).await?;
    anyhow::ensure!(again.text("summary") == "Mitigated. Rolled back release 42.");
    again.splice("summary", 0, 0, "Resolved. ").await?;
    server.stop().await;
    Ok(())
}
