//! Inputs the fuzz targets (`fuzz/`) found, replayed against a real server over real sockets: each must leave the
//! server answering, the document usable and other clients unaffected.

use std::time::Duration;

use anyhow::{Context, ensure};
use tests::{SyncClient, TestServer};
use wire::Message;

/// A sync message whose `have` claims a last sync at a change the server never saw. Automerge answers it with a
/// reset each time it is asked, and the document actor used to ask until nothing was left: one 74-byte frame from
/// any token holder pinned a core and grew memory without bound, and the document stopped answering everyone.
const UNKNOWN_LAST_SYNC: &[u8] =
    include_bytes!("../../fuzz/corpus/sync_message/regression-unknown-last-sync");

/// How long the document may take to answer others after the hostile frame: it answers in milliseconds; before the
/// fix it never did.
const STILL_ANSWERS: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_last_sync_the_server_never_saw_does_not_hang_the_document() -> anyhow::Result<()>
{
    // A child process: were the document to spin again, the test fails on its deadlines and the process is killed,
    // instead of a spinning task holding up this test's runtime.
    let server = TestServer::start_process().await;
    let token = server.token("mallory", "write").await;
    let id = server.declare(&token, "Reset storm").await.id;

    let mut hostile = SyncClient::connect(&server.ws_url(&token)).await?;
    let server_id = hostile.server_id().context("joined")?.clone();
    hostile
        .send(&Message::Request {
            sender_id: hostile.peer_id().clone(),
            target_id: server_id,
            document_id: id.parse()?,
            data: UNKNOWN_LAST_SYNC.to_vec(),
        })
        .await?;
    // The server answers (a reset: start over) instead of spinning.
    let answer = hostile.recv_message(STILL_ANSWERS).await?;
    ensure!(
        matches!(answer, Some(Message::Sync { .. })),
        "the server answered {answer:?}"
    );

    // The document still serves everyone else: an HTTP write and a sync client's edit are acknowledged.
    tokio::time::timeout(
        STILL_ANSWERS,
        server.append_timeline(&token, &id, "after the reset storm"),
    )
    .await
    .context("the document stopped answering HTTP writes")?;
    let mut other = SyncClient::connect(&server.ws_url(&token)).await?;
    tokio::time::timeout(STILL_ANSWERS, async {
        other.open(&id).await?;
        other.splice("summary", 0, 0, "Still here.").await
    })
    .await
    .context("the document stopped answering sync clients")??;
    server.stop().await;
    Ok(())
}
