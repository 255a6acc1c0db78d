//! Idle documents leave memory and come back intact: with a one-second unload delay, a document nobody syncs is
//! unloaded (`/healthz` counts it out), and the next sync request or HTTP call loads it again from storage with
//! every change made before, including sync edits; a document someone is still syncing stays loaded.

use std::time::Duration;

use tests::{DEADLINE, SyncClient, TestServer, eventually, markdown_section};

/// How many documents the server holds in memory, as `/healthz` reports it.
async fn loaded(server: &TestServer) -> Option<u64> {
    server.healthz().await.1["documentsLoaded"].as_u64()
}

/// Waits until the server holds no document in memory.
async fn all_unloaded(server: &TestServer) -> anyhow::Result<()> {
    eventually("every document to unload", DEADLINE, || async {
        (loaded(server).await == Some(0)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_document_reloads_with_every_change() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| config.unload_after_secs = 1).await;
    let token = server.token("editor", "write").await;
    let id = server.declare(&token, "Unload and reload").await.id;

    let mut first = SyncClient::connect(&server.ws_url(&token)).await?;
    first.open(&id).await?;
    first
        .splice("summary", 0, 0, "Edited before the unload.")
        .await?;
    let heads = first.heads();
    first.close().await?;
    all_unloaded(&server).await?;

    // A sync request loads it again, with the edit.
    let mut second = SyncClient::connect(&server.ws_url(&token)).await?;
    second.open(&id).await?;
    anyhow::ensure!(
        second.heads() == heads,
        "the reloaded document has every change"
    );
    anyhow::ensure!(
        second.text("summary") == "Edited before the unload.",
        "{:?}",
        second.text("summary")
    );
    second.splice("summary", 0, 0, "Again. ").await?;
    second.close().await?;
    all_unloaded(&server).await?;

    // An HTTP call loads it too, and the sync edits are there.
    let entry = server
        .append_timeline(&token, &id, "appended after the second unload")
        .await;
    let markdown = server.markdown(&token, &id).await;
    anyhow::ensure!(
        markdown_section(&markdown, "Summary").as_deref()
            == Some("Again. Edited before the unload."),
        "{markdown}"
    );
    anyhow::ensure!(
        markdown.contains("appended after the second unload"),
        "{markdown}"
    );
    all_unloaded(&server).await?;

    let mut third = SyncClient::connect(&server.ws_url(&token)).await?;
    third.open(&id).await?;
    let view = third.incident().view();
    anyhow::ensure!(
        serde_json::to_string(&view)?.contains(&entry),
        "the timeline entry {entry} reached the sync client"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_with_a_peer_stays_loaded() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| config.unload_after_secs = 1).await;
    let token = server.token("editor", "write").await;
    let watched = server.declare(&token, "Watched").await.id;
    server.declare(&token, "Idle").await;
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&watched).await?;
    // The idle one unloads while the watched one stays: this is the moment both are decided.
    eventually("the idle document to unload", DEADLINE, || async {
        (loaded(&server).await == Some(1)).then_some(())
    })
    .await?;
    // Staying loaded is an absence of change, so it can only be observed over time: well past the delay.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    anyhow::ensure!(
        loaded(&server).await == Some(1),
        "the watched document stayed loaded"
    );
    client.splice("summary", 0, 0, "Still here.").await?;
    client.close().await?;
    all_unloaded(&server).await?;
    server.stop().await;
    Ok(())
}
