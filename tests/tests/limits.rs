//! The configurable limits, each pushed past on a server configured small: document size (over HTTP and over
//! `/sync`: refused with a clear error, nothing stored), open `/sync` connections per token (429), edits per second
//! per connection (throttled, nothing lost) and the idle timeout (a silent client is told and closed while one
//! that answers pings stays). Every rejection shows in `/metrics`. Frame and body sizes are covered by
//! `malformed_frames.rs` and `http_errors.rs`.

use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tests::{SyncClient, TestServer, ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_at_its_size_limit_refuses_more_changes_and_stores_none() -> anyhow::Result<()> {
    const LIMIT: usize = 48 * 1024;
    let server = TestServer::start_with(|config| config.max_document_bytes = LIMIT).await;
    let token = server.token("writer", "write").await;
    let full = server.declare(&token, "Growing").await.id;
    let other = server.declare(&token, "Unaffected").await.id;

    // HTTP appends grow it until the server refuses with 422; the refusal changes nothing.
    let entry = "log line ".repeat(200);
    let mut accepted = 0;
    let refusal = loop {
        anyhow::ensure!(accepted < 200, "no refusal after {accepted} appends");
        let heads = server.heads(&token, &full).await;
        let response = server
            .request(
                Method::POST,
                &format!("/api/incidents/{full}/timeline"),
                Some(&token),
            )
            .json(&serde_json::json!({ "text": entry }))
            .send()
            .await?;
        if response.status() == StatusCode::CREATED {
            accepted += 1;
            continue;
        }
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(
            server.heads(&token, &full).await == heads,
            "the refused append changed the document"
        );
        break (status, body);
    };
    anyhow::ensure!(
        refusal.0 == StatusCode::UNPROCESSABLE_ENTITY
            && refusal.1["error"]["code"] == "unprocessable"
            && refusal.1["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("size limit")),
        "after {accepted} appends: {refusal:?}"
    );
    anyhow::ensure!(
        accepted >= 3,
        "only {accepted} appends fit in {LIMIT} bytes"
    );

    // Over /sync, a change that would take it further is refused before it is merged: an error, a close, and
    // the document as it was. Reading it is still fine.
    let before = server.heads(&token, &full).await;
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&full).await?;
    client.splice_local("summary", 0, 0, &"x".repeat(4096))?;
    client.flush().await?;
    let error = client.expect_error_then_close().await?;
    anyhow::ensure!(error.contains("size limit"), "{error}");
    anyhow::ensure!(
        server.heads(&token, &full).await == before,
        "the refused sync change was stored"
    );
    // Other documents take edits as before.
    let mut bystander = SyncClient::connect(&server.ws_url(&token)).await?;
    bystander.open(&other).await?;
    bystander.splice("summary", 0, 0, "still writable").await?;
    anyhow::ensure!(
        server
            .metric("commandpost_limit_rejections_total{limit=\"document\"}")
            .await?
            >= 2,
        "both refusals counted"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opens_at_most_its_share_of_sync_connections() -> anyhow::Result<()> {
    const MAX: usize = 3;
    let server = TestServer::start_with(|config| config.max_connections_per_token = MAX).await;
    let token = server.token("busy-bot", "read").await;
    let other = server.token("someone-else", "read").await;
    let mut open = Vec::new();
    for _ in 0..MAX {
        open.push(SyncClient::connect(&server.ws_url(&token)).await?);
    }
    match tokio_tungstenite::connect_async(server.ws_url(&token)).await {
        Err(ws::Error::Http(response)) => {
            anyhow::ensure!(response.status().as_u16() == 429, "{}", response.status());
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or(b""))?;
            anyhow::ensure!(body["error"]["code"] == "too_many_requests", "body {body}");
        }
        other => anyhow::bail!("connection {} past the limit: {other:?}", MAX + 1),
    }
    // Another token is counted apart, and closing one connection frees a place.
    SyncClient::connect(&server.ws_url(&other)).await?;
    open.pop().context("an open client")?.close().await?;
    tests::eventually("a freed place", tests::DEADLINE, || {
        let url = server.ws_url(&token);
        async move { SyncClient::connect(&url).await.ok() }
    })
    .await?;
    anyhow::ensure!(
        server
            .metric("commandpost_limit_rejections_total{limit=\"connections\"}")
            .await?
            >= 1,
        "the refusal is counted"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_edits_faster_than_its_rate_is_slowed_and_loses_nothing()
-> anyhow::Result<()> {
    const RATE: u32 = 20;
    const BURST: u32 = 5;
    const EDITS: usize = 45;
    let server = TestServer::start_with(|config| {
        config.max_edits_per_sec = RATE;
        config.edit_burst = BURST;
    })
    .await;
    let token = server.token("fast-bot", "write").await;
    let id = server.declare(&token, "Flooded").await.id;
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&id).await?;
    let started = Instant::now();
    for _ in 0..EDITS {
        client.splice_local("summary", 0, 0, "e")?;
        // Each local change goes out as its own sync message, without waiting for the server.
        client.flush().await?;
    }
    client
        .sync_until_acknowledged(Duration::from_secs(30))
        .await?;
    let took = started.elapsed();
    // 45 messages at 20/s after a burst of 5 need at least 2 s.
    let floor = Duration::from_secs_f64((EDITS - BURST as usize) as f64 / f64::from(RATE) * 0.9);
    anyhow::ensure!(took >= floor, "{EDITS} edits took only {took:?}");
    let summary = tests::markdown_section(&server.markdown(&token, &id).await, "Summary")
        .context("the summary")?;
    anyhow::ensure!(summary == "e".repeat(EDITS), "summary {summary:?}");
    let throttled = server.metric("commandpost_edits_throttled_total").await?;
    anyhow::ensure!(
        throttled as usize >= EDITS - BURST as usize - 2,
        "{throttled} throttled"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_and_one_that_answers_pings_stays() -> anyhow::Result<()> {
    let server = TestServer::start_with(|config| {
        config.ping_interval_secs = 1;
        config.idle_timeout_secs = 2;
    })
    .await;
    let token = server.token("watcher", "read").await;
    let mut silent = SyncClient::connect(&server.ws_url(&token)).await?;
    let mut alive = SyncClient::connect(&server.ws_url(&token)).await?;
    // The live client reads (so its socket library answers the pings) for twice the idle timeout.
    let until = Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    while Instant::now() < until {
        match alive.recv_raw(Duration::from_millis(200)).await {
            Ok(Some(ws::Message::Ping(_))) => pings += 1,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => anyhow::bail!("the live client was closed after {pings} pings"),
        }
    }
    anyhow::ensure!(pings >= 2, "{pings} pings in 4 s");
    alive
        .round_trip()
        .await
        .context("the live client still syncs")?;
    // The silent one read nothing, so it answered no ping: the server told it and closed it. (Reading now makes
    // its socket library answer the queued pings on a closed socket, which may reset the connection before the
    // error is read, so the error's text is checked when it arrives and the close always.)
    loop {
        match silent.recv_message(tests::DEADLINE).await {
            Ok(Some(wire::Message::Error { message })) => {
                anyhow::ensure!(message.contains("idle"), "{message}");
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => anyhow::bail!("the silent connection is still open: {e:#}"),
        }
    }
    anyhow::ensure!(
        server
            .metric("commandpost_limit_rejections_total{limit=\"idle\"}")
            .await?
            >= 1,
        "the idle close is counted"
    );
    server.stop().await;
    Ok(())
}
