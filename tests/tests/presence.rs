//! Presence over `/sync`: ephemeral messages reach the other peers of the document (with the sender's peer id and
//! the payload untouched) and nobody else, a repeated `(session, count)` is dropped, and a presence payload that
//! names someone other than the token's owner is refused with an `error` while the other peers carry on.

use std::time::Duration;

use anyhow::{Context, bail};
use tests::{SyncClient, TestServer};
use wire::{DocumentId, Message};

/// How long to wait for a message that must arrive.
const ARRIVES: Duration = Duration::from_secs(20);
/// How long to wait to be confident a message does not arrive.
const QUIET: Duration = Duration::from_millis(400);

/// The web client's presence payload: a CBOR map `{name, role, field}`.
fn presence(name: &str, field: &str) -> Vec<u8> {
    let value = ciborium::Value::Map(vec![
        ("name".into(), name.into()),
        ("role".into(), ciborium::Value::Null),
        ("field".into(), field.into()),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).expect("CBOR encodes into a Vec");
    out
}

fn ephemeral(
    client: &SyncClient,
    doc: DocumentId,
    count: u64,
    data: Vec<u8>,
) -> anyhow::Result<Message> {
    Ok(Message::Ephemeral {
        sender_id: client.peer_id().clone(),
        target_id: client.server_id().context("joined")?.clone(),
        document_id: doc,
        session_id: format!("session-{}", client.peer_id()),
        count,
        data,
    })
}

/// The next ephemeral message, skipping sync traffic; `None` if none arrives within `wait`.
async fn next_ephemeral(
    client: &mut SyncClient,
    wait: Duration,
) -> anyhow::Result<Option<Message>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_message(left).await {
            Ok(Some(message @ Message::Ephemeral { .. })) => return Ok(Some(message)),
            Ok(Some(Message::Error { message })) => bail!("error from the server: {message}"),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the connection closed"),
            Err(_) => return Ok(None),
        }
    }
}

#[tokio::test]
async fn presence_is_relayed_to_the_documents_peers_and_bound_to_the_token() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Presence").await;
    let other = server.declare(&alice, "Elsewhere").await;
    let doc: DocumentId = incident.id.parse()?;

    let mut a = SyncClient::connect(&server.ws_url(&alice)).await?;
    let mut b = SyncClient::connect(&server.ws_url(&bob)).await?;
    let mut outsider = SyncClient::connect(&server.ws_url(&bob)).await?;
    a.open(&incident.id).await?;
    b.open(&incident.id).await?;
    outsider.open(&other.id).await?;

    let payload = presence("alice", "summary");
    a.send(&ephemeral(&a, doc, 1, payload.clone())?).await?;
    match next_ephemeral(&mut b, ARRIVES).await? {
        Some(Message::Ephemeral {
            sender_id,
            target_id,
            document_id,
            data,
            ..
        }) => {
            assert_eq!(&sender_id, a.peer_id());
            assert_eq!(&target_id, b.peer_id());
            assert_eq!(document_id, doc);
            assert_eq!(data, payload);
        }
        other => bail!("bob did not hear alice's presence: {other:?}"),
    }
    assert!(
        next_ephemeral(&mut outsider, QUIET).await?.is_none(),
        "presence leaked to another document"
    );
    assert!(
        next_ephemeral(&mut a, QUIET).await?.is_none(),
        "presence echoed to its sender"
    );

    // The same (session, count) again is a duplicate and is dropped.
    a.send(&ephemeral(&a, doc, 1, payload.clone())?).await?;
    assert!(
        next_ephemeral(&mut b, QUIET).await?.is_none(),
        "a duplicate was relayed"
    );

    // Bob's token claiming to be alice is refused and cut off; alice's connection carries on.
    b.send(&ephemeral(&b, doc, 1, presence("alice", "status"))?)
        .await?;
    let error = b.expect_error_then_close().await?;
    assert!(
        error.contains("presence names \"alice\"") && error.contains("\"bob\""),
        "{error}"
    );
    a.send(&ephemeral(&a, doc, 2, presence("alice", "timeline"))?)
        .await?;
    a.round_trip().await?;
    Ok(())
}
