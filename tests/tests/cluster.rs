//! Several server nodes on one PostgreSQL (each test in a fresh schema of the `test` database):
//! - clients on two nodes edit one incident at once and converge; the cross-node latency (an edit sent to node 1
//!   until it reaches a client of node 2) is measured and printed (`--nocapture`; figures in BENCHMARKS.md);
//! - `kill -9` of a node in the middle of HTTP and sync writes loses nothing it acknowledged, and its clients carry
//!   on against the other node;
//! - PostgreSQL cut off mid-edit (a proxy between the node and the database): writes answer 503 and `/healthz`
//!   says degraded instead of hanging, and the node recovers by itself when the database is back, with every
//!   acknowledged write kept.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{Proxy, SyncClient, TestDatabase, TestServer, append_until_refused, eventually};

/// How long a cross-node edit may take before the test calls it lost. Not a performance bound: the measured
/// figures are printed and kept in BENCHMARKS.md.
const ARRIVES: Duration = Duration::from_secs(30);

fn node_config(url: &str) -> String {
    format!("database-url = \"{url}\"\n")
}

/// The `p`th percentile (0–100) of sorted samples, in milliseconds.
fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let index = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_two_nodes_converge_and_edits_cross_quickly() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let config = node_config(&db.url());
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    let bob = node2.token("bob", "write").await;
    let incident = node1
        .declare(&alice, "Checkout errors across regions")
        .await;

    let mut a = SyncClient::connect(&node1.ws_url(&alice)).await?;
    let mut b = SyncClient::connect(&node2.ws_url(&bob)).await?;
    a.set_author("alice");
    b.set_author("bob");
    a.open(&incident.id).await?;
    b.open(&incident.id).await?;

    // Both type at once, alice at the start and bob at the end, without waiting for each other.
    for i in 0..20 {
        a.splice_local("summary", 0, 0, &format!("<a{i}>"))?;
        let end = b.text("summary").chars().count();
        b.splice_local("summary", end, 0, &format!("<b{i}>"))?;
        a.flush().await?;
        b.flush().await?;
    }
    let everything = |c: &SyncClient| {
        let text = c.text("summary");
        (0..20).all(|i| text.contains(&format!("<a{i}>")) && text.contains(&format!("<b{i}>")))
    };
    a.sync_until(|c| c.acknowledged() && everything(c), ARRIVES)
        .await
        .context("alice converging")?;
    b.sync_until(|c| c.acknowledged() && everything(c), ARRIVES)
        .await
        .context("bob converging")?;
    a.sync_until(|c| everything(c), ARRIVES).await?;
    ensure!(
        a.text("summary") == b.text("summary"),
        "the two clients differ"
    );
    for node in [&node1, &node2] {
        let summary = node.incident_json(&alice, &incident.id).await;
        ensure!(
            summary
                .to_string()
                .contains(&a.text("summary").replace('"', "\\\"")),
            "a node serves another summary than its clients hold"
        );
    }

    // Latency: one edit at a time, from alice's send on node 1 until bob's copy on node 2 shows it.
    let mut samples = Vec::new();
    for i in 0..200 {
        let marker = format!("[{i}]");
        a.splice_local("summary", 0, 0, &marker)?;
        let sent = Instant::now();
        a.flush().await?;
        b.sync_until(|c| c.text("summary").contains(&marker), ARRIVES)
            .await
            .with_context(|| format!("edit {i} crossing nodes"))?;
        samples.push(sent.elapsed());
        a.sync_until_acknowledged(ARRIVES).await?;
    }
    samples.sort();
    println!(
        "cross-node edit latency over {} edits: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        percentile(&samples, 50),
        percentile(&samples, 90),
        percentile(&samples, 99),
        percentile(&samples, 100),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_loses_nothing_it_acknowledged() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let config = node_config(&db.url());
    let mut node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let writer = node1.token("writer", "write").await;
    let incident = node1.declare(&writer, "Node loss drill").await;

    // A bot appends over HTTP to node 1 as fast as it can, recording what got a 201.
    let bot = tokio::spawn(append_until_refused(
        reqwest::Client::new(),
        node1.url(&format!("/api/incidents/{}/timeline", incident.id)),
        writer.clone(),
        "bot".to_owned(),
        Arc::new(AtomicUsize::new(0)),
    ));

    // A sync client edits through node 1 too; `splice` returns once node 1 acknowledged the edit.
    let mut a = SyncClient::connect(&node1.ws_url(&writer)).await?;
    a.open(&incident.id).await?;
    let mut typed = String::new();
    for i in 0..15 {
        let word = format!("w{i} ");
        a.splice("summary", typed.chars().count(), 0, &word).await?;
        typed.push_str(&word);
    }
    node1.kill9();
    let acknowledged: Vec<String> = bot
        .await
        .context("the bot task")?
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    ensure!(
        !acknowledged.is_empty(),
        "the bot got no write acknowledged before the kill"
    );

    // The client moves to node 2: everything node 1 acknowledged is there, and editing carries on.
    let mut moved = SyncClient::connect(&node2.ws_url(&writer)).await?;
    moved.open(&incident.id).await?;
    ensure!(
        moved.text("summary").starts_with(&typed),
        "acknowledged sync edits lost: {:?} does not start with {typed:?}",
        moved.text("summary")
    );
    let markdown = node2.markdown(&writer, &incident.id).await;
    for entry in &acknowledged {
        ensure!(
            markdown.contains(entry),
            "acknowledged entry {entry:?} lost"
        );
    }
    moved
        .splice("summary", typed.chars().count(), 0, "after the failover")
        .await?;
    println!(
        "after kill -9 of node 1: {} acknowledged HTTP entries and {} sync edits all present on node 2",
        acknowledged.len(),
        15
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_a_clear_503_and_heals_by_itself() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let proxy = Proxy::start(TestDatabase::server_addr()).await?;
    let url = db.url_via(Some(proxy.addr));
    let node = TestServer::start_with(|config| config.database_url = Some(url)).await;
    let token = node.admin_token.clone();
    let incident = node.declare(&token, "Database outage drill").await;
    let path = format!("/api/incidents/{}/timeline", incident.id);
    let post = |text: String| {
        node.request(Method::POST, &path, Some(&token))
            .json(&json!({ "text": text }))
            .send()
    };
    let before = post("before the outage".into()).await?;
    ensure!(
        before.status() == StatusCode::CREATED,
        "{}",
        before.status()
    );

    proxy.cut();
    let started = Instant::now();
    let during = post("during the outage".into()).await?;
    let waited = started.elapsed();
    ensure!(
        during.status() == StatusCode::SERVICE_UNAVAILABLE,
        "a write during the outage answered {}",
        during.status()
    );
    ensure!(
        waited < Duration::from_secs(15),
        "the write hung {waited:?}"
    );
    let (status, body) = node.healthz().await;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE,
        "healthz during the outage: {status} {body}"
    );

    proxy.restore();
    eventually(
        "the node to heal by itself",
        Duration::from_secs(30),
        || async {
            let response = post("after the outage".into()).await.ok()?;
            (response.status() == StatusCode::CREATED).then_some(())
        },
    )
    .await?;
    let (status, _) = node.healthz().await;
    ensure!(
        status == StatusCode::OK,
        "healthz after the outage: {status}"
    );
    let markdown = node.markdown(&token, &incident.id).await;
    ensure!(
        markdown.contains("before the outage") && markdown.contains("after the outage"),
        "acknowledged entries missing after the outage:\n{markdown}"
    );
    println!("a write during the database outage answered 503 after {waited:?}");
    Ok(())
}
