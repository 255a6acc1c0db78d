//! Concurrent editing over `/sync` converges: two, then twenty Rust automerge-repo clients splice the same summary at
//! random positions in rounds, every round's edits made before any of them is synced, and every client ends with the
//! same text, which is also what the server's Markdown export shows. Nothing is lost or duplicated: every inserted
//! marker is there exactly once. And a client with a read-scope token, even one that ignores the server's read-only
//! flag and sends its changes anyway, never changes the server's copy nor what the other clients see. Every edit is
//! acknowledged, even when the server handles a change and the client's next message in one batch.

use std::sync::Arc;

use anyhow::Context;
use automerge::ChangeHash;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tests::{DEADLINE, SyncClient, TestServer, markdown_section};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// The field every client edits.
const FIELD: &str = "summary";

/// Its heading in the Markdown export.
const LABEL: &str = "Summary";

/// What the summary holds before the clients start.
const SEED: &str = "Checkout fails for some EU customers.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_editing_one_summary_concurrently_converge() -> anyhow::Result<()> {
    edit_concurrently_and_converge(2, 6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_editing_one_summary_concurrently_converge() -> anyhow::Result<()> {
    edit_concurrently_and_converge(20, 3).await
}

/// `clients` clients each insert a unique marker at a random position, `rounds` times, all at once; then each deletes
/// and inserts around a random position once more. After each phase all copies (the clients' and the server's) must
/// be the same document.
async fn edit_concurrently_and_converge(clients: usize, rounds: usize) -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("editor", "write").await;
    let incident = server.declare(&token, "Checkout errors").await;
    let seeded = server
        .operations(
            &token,
            &incident.id,
            json!([{"op": "setText", "field": FIELD, "text": SEED}]),
        )
        .await;
    anyhow::ensure!(
        seeded.status().is_success(),
        "seeding the summary: {}",
        seeded.status()
    );

    // A failure prints its seed; CONVERGENCE_SEED=<seed> replays the same positions and insertions.
    let seed: u64 = std::env::var("CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CONVERGENCE_SEED={seed}");
    let mut connected = Vec::new();
    for _ in 0..clients {
        let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
        client.open(&incident.url).await?;
        anyhow::ensure!(
            client.text(FIELD) == SEED,
            "a new client sees the seeded summary"
        );
        connected.push(client);
    }

    // Phase 1: insert-only rounds, so every marker must survive exactly once.
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = JoinSet::new();
    for (index, mut client) in connected.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ index as u64);
            for round in 0..rounds {
                // Everyone edits the copy they have, before seeing anyone else's edit of this round.
                barrier.wait().await;
                let boundaries = outside_markers(&client.text(FIELD));
                let pos = boundaries[rng.random_range(0..boundaries.len())];
                client.splice_local(FIELD, pos, 0, &marker(index, round))?;
                barrier.wait().await;
                client
                    .sync_until_acknowledged(DEADLINE)
                    .await
                    .with_context(|| format!("client {index}, round {round}"))?;
            }
            anyhow::Ok((index, client))
        });
    }
    let mut clients_back = join_all(tasks).await?;
    let text = converged(&server, &token, &incident.id, &mut clients_back).await?;
    for index in 0..clients {
        for round in 0..rounds {
            let marker = marker(index, round);
            anyhow::ensure!(
                text.matches(&marker).count() == 1,
                "marker {marker} is in the converged text exactly once: {text:?}"
            );
        }
    }
    let mut unmarked = text.clone();
    for index in 0..clients {
        for round in 0..rounds {
            unmarked = unmarked.replace(&marker(index, round), "");
        }
    }
    anyhow::ensure!(unmarked == SEED, "only insertions were made: {unmarked:?}");

    // Phase 2: concurrent deletions and insertions at random places, which may overlap.
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = JoinSet::new();
    for (index, mut client) in clients_back.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ ((index as u64) << 8));
            barrier.wait().await;
            let len = client.text(FIELD).chars().count();
            let pos = rng.random_range(0..len);
            let delete = rng.random_range(1..=3).min(len - pos);
            let insert: String = (0..rng.random_range(0..4))
                .map(|_| rng.random_range(b'a'..=b'z') as char)
                .collect();
            client.splice_local(FIELD, pos, delete, &insert)?;
            barrier.wait().await;
            client
                .sync_until_acknowledged(DEADLINE)
                .await
                .with_context(|| format!("client {index}, deletion round"))?;
            anyhow::Ok((index, client))
        });
    }
    let mut clients_back = join_all(tasks).await?;
    let text = converged(&server, &token, &incident.id, &mut clients_back).await?;
    anyhow::ensure!(text != SEED, "the edits changed the summary");

    for client in clients_back {
        client.close().await?;
    }
    server.stop().await;
    Ok(())
}

/// A text no random edit can produce by accident, unique to one client's round.
fn marker(client: usize, round: usize) -> String {
    format!("<c{client}r{round}>")
}

/// The positions (in code points) of `text` that are not inside a marker, where a new marker may go without
/// breaking an older one.
fn outside_markers(text: &str) -> Vec<usize> {
    let mut depth = 0usize;
    let mut positions = vec![0];
    for (pos, c) in text.chars().enumerate() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 0 {
            positions.push(pos + 1);
        }
    }
    positions
}

/// Waits for every client task and gives the clients back in order. The first failure aborts the others (which
/// would otherwise wait at the barrier forever) and is returned.
async fn join_all(
    mut tasks: JoinSet<anyhow::Result<(usize, SyncClient)>>,
) -> anyhow::Result<Vec<SyncClient>> {
    let mut clients = Vec::new();
    let deadline = tokio::time::Instant::now() + 2 * DEADLINE;
    loop {
        let next = tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .context("the clients did not finish in time")?;
        let Some(joined) = next else { break };
        match joined.context("a client task panicked")? {
            Ok(client) => clients.push(client),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    clients.sort_by_key(|(index, _)| *index);
    Ok(clients.into_iter().map(|(_, client)| client).collect())
}

/// Every edit was acknowledged, so the server holds them all: syncs each client up to the server's heads, then
/// checks that every copy is the same document with the same summary, equal to the Markdown export's. Returns the
/// summary.
async fn converged(
    server: &TestServer,
    token: &str,
    id: &str,
    clients: &mut [SyncClient],
) -> anyhow::Result<String> {
    let server_heads: Vec<ChangeHash> = server.heads(token, id).await;
    for client in clients.iter_mut() {
        client
            .sync_until(|c| c.has_changes(&server_heads), DEADLINE)
            .await?;
    }
    let markdown = server.markdown(token, id).await;
    let exported = markdown_section(&markdown, LABEL).context("the export has a summary")?;
    let text = clients[0].text(FIELD);
    for (index, client) in clients.iter_mut().enumerate() {
        anyhow::ensure!(
            client.heads() == server_heads,
            "client {index} has exactly the server's changes"
        );
        anyhow::ensure!(
            client.text(FIELD) == text,
            "client {index} has the same summary as client 0:\n{:?}\n{text:?}",
            client.text(FIELD)
        );
    }
    anyhow::ensure!(
        exported == text.trim_end(),
        "the Markdown export shows the converged summary:\n{exported:?}\n{text:?}"
    );
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_scope_clients_edits_are_never_applied() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let writer_token = server.token("writer", "write").await;
    let reader_token = server.token("reader", "read").await;
    let incident = server.declare(&writer_token, "Checkout errors").await;
    server
        .operations(
            &writer_token,
            &incident.id,
            json!([{"op": "setText", "field": FIELD, "text": SEED}]),
        )
        .await;

    let mut writer = SyncClient::connect(&server.ws_url(&writer_token)).await?;
    writer.open(&incident.id).await?;
    let mut reader = SyncClient::connect(&server.ws_url(&reader_token)).await?;
    reader.open(&incident.id).await?;
    anyhow::ensure!(reader.text(FIELD) == SEED, "a reader can read");
    anyhow::ensure!(
        reader.server_is_read_only(),
        "the server tells a read-scope peer that it will not apply its changes"
    );
    let before = server.heads(&writer_token, &incident.id).await;

    // A well-behaved reader's edit stays local: the read-only flag stops automerge from sending it.
    reader.splice(FIELD, 0, 0, "POLITE ").await?;
    // A hostile reader sends its changes anyway: an insertion and a deletion of everything else.
    reader.ignore_read_only();
    let len = reader.text(FIELD).chars().count();
    reader.splice(FIELD, 0, len, "FORBIDDEN").await?;
    anyhow::ensure!(
        reader.text(FIELD) == "FORBIDDEN",
        "the edit is made locally"
    );
    // Once the server has handled those frames, its copy must be as it was.
    reader.round_trip().await?;
    anyhow::ensure!(
        server.heads(&writer_token, &incident.id).await == before,
        "the server's copy is unchanged"
    );
    let exported = markdown_section(&server.markdown(&writer_token, &incident.id).await, LABEL);
    anyhow::ensure!(
        exported.as_deref() == Some(SEED),
        "the export is unchanged: {exported:?}"
    );

    // The writer edits after the reader's attempt; the writer sees only its own edit, the reader sees it too.
    let len = writer.text(FIELD).chars().count();
    writer.splice(FIELD, len, 0, " Rolled back.").await?;
    let after = server.heads(&writer_token, &incident.id).await;
    writer
        .sync_until(|c| c.has_changes(&after), DEADLINE)
        .await?;
    anyhow::ensure!(
        writer.text(FIELD) == format!("{SEED} Rolled back."),
        "the writer never sees the reader's edits: {:?}",
        writer.text(FIELD)
    );
    reader
        .sync_until(|c| c.text(FIELD).contains("Rolled back."), DEADLINE)
        .await?;
    anyhow::ensure!(
        server.heads(&writer_token, &incident.id).await == after,
        "nothing the reader sent was applied meanwhile"
    );

    // A writer that connects now gets the server's copy, which never had the reader's edits.
    let mut late = SyncClient::connect(&server.ws_url(&writer_token)).await?;
    late.open(&incident.id).await?;
    anyhow::ensure!(
        late.text(FIELD) == format!("{SEED} Rolled back."),
        "late: {:?}",
        late.text(FIELD)
    );
    server.stop().await;
    Ok(())
}

/// Regression: the server answered sync messages once per batch, after all of them. When a client's change and its
/// next message (repeating its heads) arrived in one batch, automerge took the second as proof that the client knew
/// the server's heads, so no answer went out and the client never learned that the server held its change (the JS
/// client's "flushed" wait hangs the same way). Each round sends the two back to back, so some land in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_followed_at_once_by_a_repeat_of_the_heads_is_still_acknowledged()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("editor", "write").await;
    let incident = server.declare(&token, "Batched sync messages").await;
    let mut client = SyncClient::connect(&server.ws_url(&token)).await?;
    client.open(&incident.id).await?;
    let doc: wire::DocumentId = incident.id.parse()?;
    let server_id = client.server_id().context("joined")?.clone();
    for round in 0..30 {
        client.splice_local(FIELD, 0, 0, &format!("{round} "))?;
        let change = client.next_sync_data().context("a change to send")?;
        client.sync_state_mut().context("opened")?.in_flight = false;
        let repeat = client.next_sync_data().context("a repeat of our heads")?;
        for data in [change, repeat] {
            client
                .send(&wire::Message::Sync {
                    sender_id: client.peer_id().clone(),
                    target_id: server_id.clone(),
                    document_id: doc,
                    data,
                })
                .await?;
        }
        client
            .sync_until_acknowledged(std::time::Duration::from_secs(30))
            .await
            .with_context(|| format!("round {round}"))?;
    }
    server.stop().await;
    Ok(())
}
