//! Hostile or broken input on `/sync` costs only the connection that sent it: for each kind of bad frame (not CBOR,
//! CBOR but not a map, wrong field types, an unknown message type, broken Automerge bytes in a valid frame, an
//! unknown protocol version, a message before `join`, a spoofed `senderId`, a text frame, frames over the size
//! limit, …) the server answers with an `error` message that says what is wrong and closes the connection. Meanwhile
//! a client on another document keeps syncing, `/healthz` stays ok, and the document under attack is unchanged.
//!
//! Two inputs are legal in form and get the protocol's own answer rather than an error: a change whose dependency
//! the server never saw is held, not applied, and asked for (`need`), as automerge's sync protocol does for
//! changes that arrive before their ancestors; and a flood of tiny valid frames the server ignores (heads gossip,
//! subscription changes) is served at the pace the server reads, while others sync on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;
use ciborium::Value as Cbor;
use tests::{SyncClient, TestServer, ws};
use wire::{DocumentId, Message, PeerId};

/// The frame limit of the server under test, small so that oversized frames are cheap.
const MAX_FRAME: usize = 64 * 1024;

/// How far a connection gets before the bad frame.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The socket is open, no `join` was sent.
    Connected,
    /// The handshake is done.
    Joined,
    /// The handshake is done and the client holds the attacked document.
    Opened,
}

/// One attack: a name, how far the connection gets first, and what the error message must mention.
#[derive(Debug, Clone, Copy)]
enum Attack {
    EmptyFrame,
    NotCbor,
    CborButNotAMap,
    TrailingBytes,
    DeeplyNested,
    MissingType,
    UnknownType,
    WrongFieldTypes,
    InvalidDocumentId,
    EmptySyncData,
    NotASyncMessage,
    TruncatedSyncMessage,
    CorruptedSyncMessage,
    UnknownProtocolVersion,
    MessageBeforeJoin,
    SpoofedSender,
    TextFrame,
    OversizedFrame,
    FrameOverTheHardLimit,
    VersionsNotAList,
    NoProtocolVersions,
    JoinWithoutSender,
}

impl Attack {
    const ALL: [Attack; 22] = [
        Attack::EmptyFrame,
        Attack::NotCbor,
        Attack::CborButNotAMap,
        Attack::TrailingBytes,
        Attack::DeeplyNested,
        Attack::MissingType,
        Attack::UnknownType,
        Attack::WrongFieldTypes,
        Attack::InvalidDocumentId,
        Attack::EmptySyncData,
        Attack::NotASyncMessage,
        Attack::TruncatedSyncMessage,
        Attack::CorruptedSyncMessage,
        Attack::UnknownProtocolVersion,
        Attack::MessageBeforeJoin,
        Attack::SpoofedSender,
        Attack::TextFrame,
        Attack::OversizedFrame,
        Attack::FrameOverTheHardLimit,
        Attack::VersionsNotAList,
        Attack::NoProtocolVersions,
        Attack::JoinWithoutSender,
    ];

    fn stage(self) -> Stage {
        match self {
            Attack::UnknownProtocolVersion
            | Attack::MessageBeforeJoin
            | Attack::VersionsNotAList
            | Attack::NoProtocolVersions
            | Attack::JoinWithoutSender => Stage::Connected,
            Attack::TruncatedSyncMessage | Attack::CorruptedSyncMessage | Attack::SpoofedSender => {
                Stage::Opened
            }
            _ => Stage::Joined,
        }
    }

    /// A word the server's error message must contain, so that it explains the problem.
    fn explanation(self) -> &'static str {
        match self {
            Attack::EmptyFrame | Attack::NotCbor => "CBOR",
            Attack::CborButNotAMap => "not a CBOR map",
            Attack::TrailingBytes => "trailing bytes",
            Attack::DeeplyNested => "nests deeper",
            Attack::MissingType => "missing field type",
            Attack::UnknownType => "unknown message type",
            Attack::WrongFieldTypes => "must be",
            Attack::InvalidDocumentId => "invalid document id",
            Attack::EmptySyncData => "must not be empty",
            Attack::NotASyncMessage
            | Attack::TruncatedSyncMessage
            | Attack::CorruptedSyncMessage => "invalid sync message",
            Attack::UnknownProtocolVersion => "protocol version",
            Attack::MessageBeforeJoin => "must be join",
            Attack::SpoofedSender => "senderId",
            Attack::TextFrame => "text frames",
            Attack::OversizedFrame | Attack::FrameOverTheHardLimit => "limit",
            Attack::VersionsNotAList => "supportedProtocolVersions",
            Attack::NoProtocolVersions => "protocol version",
            Attack::JoinWithoutSender => "senderId",
        }
    }
}

/// Encodes a CBOR value.
fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

/// A CBOR map with text keys.
fn map(entries: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Cbor::Text(k.to_owned()), v))
            .collect(),
    )
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.to_owned())
}

/// Sends the attack's bad frame on a connection at the attack's stage.
async fn send_attack(attack: Attack, client: &mut SyncClient, target: &str) -> anyhow::Result<()> {
    let me = client.peer_id().as_str().to_owned();
    let server = client
        .server_id()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    let doc: DocumentId = target.parse()?;
    let binary = |bytes: Vec<u8>| ws::Message::Binary(bytes.into());
    let sync_with = |data: Cbor| {
        cbor(&map(vec![
            ("type", text("sync")),
            ("senderId", text(&me)),
            ("targetId", text(&server)),
            ("documentId", text(target)),
            ("data", data),
        ]))
    };
    let frame = match attack {
        Attack::EmptyFrame => binary(Vec::new()),
        Attack::NotCbor => binary(vec![0xff, 0x00, 0x13, 0x37]),
        Attack::CborButNotAMap => binary(cbor(&Cbor::Array(vec![text("join"), text(&me)]))),
        Attack::TrailingBytes => {
            let mut bytes = cbor(&map(vec![("type", text("leave")), ("senderId", text(&me))]));
            bytes.extend_from_slice(&[0x00, 0x01]);
            binary(bytes)
        }
        Attack::DeeplyNested => {
            let mut value = text("deep");
            for _ in 0..100 {
                value = Cbor::Array(vec![value]);
            }
            binary(cbor(&map(vec![("type", text("sync")), ("data", value)])))
        }
        Attack::MissingType => binary(cbor(&map(vec![("senderId", text(&me))]))),
        Attack::UnknownType => binary(cbor(&map(vec![
            ("type", text("frobnicate")),
            ("senderId", text(&me)),
        ]))),
        Attack::WrongFieldTypes => binary(cbor(&map(vec![
            ("type", text("sync")),
            ("senderId", text(&me)),
            ("targetId", text(&server)),
            ("documentId", Cbor::Integer(42.into())),
            ("data", text("should be bytes")),
        ]))),
        Attack::InvalidDocumentId => binary(cbor(&map(vec![
            ("type", text("request")),
            ("senderId", text(&me)),
            ("targetId", text(&server)),
            ("documentId", text("not-a-document-id")),
            ("data", Cbor::Bytes(vec![0x42, 0x00])),
        ]))),
        Attack::EmptySyncData => binary(sync_with(Cbor::Bytes(Vec::new()))),
        Attack::NotASyncMessage => binary(sync_with(Cbor::Bytes(b"hello, server".to_vec()))),
        Attack::TruncatedSyncMessage => {
            let data = change_carrying_sync_data(client)?;
            binary(sync_with(Cbor::Bytes(data[..data.len() / 2].to_vec())))
        }
        Attack::CorruptedSyncMessage => {
            let mut data = change_carrying_sync_data(client)?;
            let len = data.len();
            for byte in &mut data[len / 2..] {
                *byte ^= 0x5a;
            }
            binary(sync_with(Cbor::Bytes(data)))
        }
        Attack::UnknownProtocolVersion => binary(
            Message::Join {
                sender_id: PeerId::from(me.as_str()),
                supported_protocol_versions: vec!["2".to_owned(), "0.9".to_owned()],
                metadata: None,
            }
            .encode(),
        ),
        Attack::MessageBeforeJoin => {
            let data = change_carrying_sync_data(client)
                .unwrap_or_else(|_| vec![0x42, 0x00, 0x00, 0x00, 0x00]);
            binary(sync_with(Cbor::Bytes(data)))
        }
        Attack::SpoofedSender => {
            // A valid sync message carrying a real change, claiming to come from another peer.
            let data = change_carrying_sync_data(client)?;
            binary(
                Message::Sync {
                    sender_id: PeerId::from("someone-else"),
                    target_id: PeerId::from(server.as_str()),
                    document_id: doc,
                    data,
                }
                .encode(),
            )
        }
        Attack::TextFrame => ws::Message::Text(r#"{"type":"join"}"#.into()),
        Attack::OversizedFrame => binary(vec![0xa0; MAX_FRAME + 1]),
        Attack::FrameOverTheHardLimit => binary(vec![0xa0; MAX_FRAME * 3]),
        Attack::VersionsNotAList => binary(cbor(&map(vec![
            ("type", text("join")),
            ("senderId", text(&me)),
            ("supportedProtocolVersions", text("1")),
        ]))),
        Attack::NoProtocolVersions => binary(
            Message::Join {
                sender_id: PeerId::from(me.as_str()),
                supported_protocol_versions: Vec::new(),
                metadata: None,
            }
            .encode(),
        ),
        Attack::JoinWithoutSender => binary(cbor(&map(vec![
            ("type", text("join")),
            ("supportedProtocolVersions", Cbor::Array(vec![text("1")])),
        ]))),
    };
    client.send_raw(frame).await
}

/// A valid sync message for the attacked document that carries a real change (an edit of the summary), made on the
/// attacker's copy; the server must never apply it.
fn change_carrying_sync_data(client: &mut SyncClient) -> anyhow::Result<Vec<u8>> {
    if !client.holds_document() {
        anyhow::bail!("the client does not hold the document");
    }
    client.splice_local("summary", 0, 0, "ATTACK ")?;
    client
        .next_sync_data()
        .context("a local change gives a sync message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_frame_gets_an_error_and_a_close_while_others_sync_on() -> anyhow::Result<()>
{
    let server = TestServer::start_with(|config| config.max_frame_bytes = MAX_FRAME).await;
    let token = server.token("editor", "write").await;
    let attacked = server.declare(&token, "Under attack").await.id;
    let bystanders_doc = server.declare(&token, "Unrelated incident").await.id;
    let before = server.heads(&token, &attacked).await;

    // A bystander on another document edits without pause for as long as the attacks last.
    let stop = Arc::new(AtomicBool::new(false));
    let edits = Arc::new(AtomicUsize::new(0));
    let mut bystander = SyncClient::connect(&server.ws_url(&token)).await?;
    bystander.open(&bystanders_doc).await?;
    let bystander_task = {
        let stop = stop.clone();
        let edits = edits.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                bystander.splice("summary", 0, 0, "x").await?;
                edits.fetch_add(1, Ordering::SeqCst);
            }
            anyhow::Ok(bystander)
        })
    };

    let mut failures = Vec::new();
    for attack in Attack::ALL {
        let edits_before = edits.load(Ordering::SeqCst);
        let mut attacker = SyncClient::connect_unjoined(&server.ws_url(&token)).await?;
        match attack.stage() {
            Stage::Connected => {}
            Stage::Joined => attacker.join().await?,
            Stage::Opened => {
                attacker.join().await?;
                attacker.open(&attacked).await?;
            }
        }
        send_attack(attack, &mut attacker, &attacked).await?;
        match attacker.expect_error_then_close().await {
            Ok(message) if message.contains(attack.explanation()) => {}
            Ok(message) => failures.push(format!(
                "{attack:?}: the error {message:?} does not mention {:?}",
                attack.explanation()
            )),
            Err(e) => failures.push(format!("{attack:?}: {e:#}")),
        }
        // The server is still healthy and the bystander still makes progress, after every attack.
        let (status, health) = server.healthz().await;
        if !status.is_success() || health["status"] != "ok" {
            failures.push(format!("{attack:?}: /healthz {status} {health}"));
        }
        tests::eventually("the bystander's next edit", tests::DEADLINE, || {
            let done = edits.load(Ordering::SeqCst);
            async move { (done > edits_before).then_some(()) }
        })
        .await
        .with_context(|| format!("after {attack:?}"))?;
    }
    stop.store(true, Ordering::SeqCst);
    let mut bystander = bystander_task.await.context("the bystander panicked")??;
    anyhow::ensure!(
        failures.is_empty(),
        "attacks not handled as expected:\n{}",
        failures.join("\n")
    );

    // The attacked document is exactly as it was, and a legitimate client can still open and edit it.
    anyhow::ensure!(
        server.heads(&token, &attacked).await == before,
        "the attacked document changed"
    );
    let mut honest = SyncClient::connect(&server.ws_url(&token)).await?;
    honest.open(&attacked).await?;
    anyhow::ensure!(
        !honest.text("summary").contains("ATTACK"),
        "no attack edit got in"
    );
    honest.splice("summary", 0, 0, "Still fine.").await?;
    // The bystander's edits all arrived.
    let done = edits.load(Ordering::SeqCst);
    bystander
        .sync_until(|c| c.acknowledged(), tests::DEADLINE)
        .await?;
    let summary =
        tests::markdown_section(&server.markdown(&token, &bystanders_doc).await, "Summary")
            .context("the bystander's summary")?;
    anyhow::ensure!(
        summary == "x".repeat(done),
        "{done} edits, summary {summary:?}"
    );

    let errors = server.metric("commandpost_protocol_errors_total").await?;
    anyhow::ensure!(
        errors >= Attack::ALL.len() as u64,
        "{errors} protocol errors counted"
    );
    // Both oversized frames count as limit rejections too.
    let frames = server
        .metric("commandpost_limit_rejections_total{limit=\"frame\"}")
        .await?;
    anyhow::ensure!(frames == 2, "{frames} frame-limit rejections counted");
    println!("malformed frames tried: {}", Attack::ALL.len());
    server.stop().await;
    Ok(())
}

/// Sends `change` (raw bytes) to the server in a hand-made sync message claiming `heads`, on `client`'s connection.
async fn send_changes(
    client: &mut SyncClient,
    id: &str,
    heads: Vec<automerge::ChangeHash>,
    change: Vec<u8>,
) -> anyhow::Result<()> {
    let message = automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![change].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let target = client.server_id().context("joined")?.clone();
    client
        .send(&Message::Sync {
            sender_id: client.peer_id().clone(),
            target_id: target,
            document_id: id.parse()?,
            data: message.encode(),
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_dependency_never_came_is_held_asked_for_and_never_applied()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("editor", "write").await;
    let id = server.declare(&token, "Missing ancestors").await.id;
    let before = server.heads(&token, &id).await;
    let mut attacker = SyncClient::connect(&server.ws_url(&token)).await?;
    attacker.open(&id).await?;
    // Two changes, the second built on the first; only the second is sent.
    attacker.splice_local("summary", 0, 0, "first ")?;
    attacker.splice_local("summary", 0, 0, "ORPHAN ")?;
    let doc = attacker.incident_mut().doc_mut();
    let heads = doc.get_heads();
    let orphan = doc
        .get_change_by_hash(&heads[0])
        .context("the second change")?;
    let missing = orphan.deps().to_vec();
    let orphan = orphan.raw_bytes().to_vec();
    let ancestor = doc
        .get_change_by_hash(&missing[0])
        .context("the first change")?
        .raw_bytes()
        .to_vec();
    send_changes(&mut attacker, &id, heads, orphan).await?;
    // The server answers on the same connection, asking for exactly the change it lacks.
    let asked = loop {
        match attacker.recv_message(tests::DEADLINE).await? {
            Some(Message::Sync { data, .. }) => {
                let answer = automerge::sync::Message::decode(&data)?;
                if !answer.need.is_empty() {
                    break answer.need;
                }
            }
            Some(Message::Error { message }) => anyhow::bail!("an error instead: {message}"),
            Some(_) => {}
            None => anyhow::bail!("the server closed the connection"),
        }
    };
    anyhow::ensure!(asked == missing, "asked for {asked:?}, lacking {missing:?}");
    attacker.close().await?;
    // Nothing was applied or stored.
    anyhow::ensure!(
        server.heads(&token, &id).await == before,
        "the orphan was applied"
    );
    // Nor is it kept: once its sender left, the missing ancestor arriving on another connection brings in the
    // ancestor alone.
    let mut late = SyncClient::connect(&server.ws_url(&token)).await?;
    late.open(&id).await?;
    send_changes(&mut late, &id, missing.clone(), ancestor).await?;
    late.round_trip().await?;
    let summary = tests::markdown_section(&server.markdown(&token, &id).await, "Summary")
        .context("the summary")?;
    anyhow::ensure!(
        summary.starts_with("first") && !summary.contains("ORPHAN"),
        "the held change was kept: {summary:?}"
    );
    // The document takes honest edits.
    let mut honest = SyncClient::connect(&server.ws_url(&token)).await?;
    honest.open(&id).await?;
    honest.splice("summary", 0, 0, "Honest. ").await?;
    let summary = tests::markdown_section(&server.markdown(&token, &id).await, "Summary")
        .context("the summary")?;
    anyhow::ensure!(
        summary.starts_with("Honest.") && !summary.contains("ORPHAN"),
        "{summary:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_frames_costs_only_its_sender() -> anyhow::Result<()> {
    /// Tiny valid frames sent as fast as the socket takes them.
    const FLOOD: usize = 20_000;
    let server = TestServer::start().await;
    let token = server.token("editor", "write").await;
    let flooded = server.declare(&token, "Flooded").await.id;
    let quiet = server.declare(&token, "Quiet").await.id;
    let before = server.heads(&token, &flooded).await;
    let mut flooder = SyncClient::connect(&server.ws_url(&token)).await?;
    flooder.open(&flooded).await?;
    let mut bystander = SyncClient::connect(&server.ws_url(&token)).await?;
    bystander.open(&quiet).await?;

    let me = flooder.peer_id().clone();
    // Ephemeral messages are not in the mix: they have a bucket of their own, which ends a flood with an error and
    // a close (tests/tests/ephemeral.rs).
    let frames: Vec<Vec<u8>> = (0..FLOOD)
        .map(|n| match n % 2 {
            // Heads gossip the server ignores.
            0 => cbor(&map(vec![
                ("type", text("remote-heads-changed")),
                ("senderId", text(me.as_str())),
                ("targetId", text("x")),
                ("documentId", text(&flooded)),
                ("newHeads", Cbor::Map(Vec::new())),
            ])),
            _ => cbor(&map(vec![
                ("type", text("remote-subscription-change")),
                ("senderId", text(me.as_str())),
                ("targetId", text("x")),
            ])),
        })
        .collect();
    let flood = tokio::spawn(async move {
        for frame in frames {
            flooder.send_raw(ws::Message::Binary(frame.into())).await?;
        }
        anyhow::Ok(flooder)
    });
    // While the flood lasts, the bystander keeps editing and the server stays healthy.
    let mut edits = 0;
    while !flood.is_finished() || edits < 3 {
        bystander.splice("summary", 0, 0, "b").await?;
        edits += 1;
        let (status, _) = server.healthz().await;
        anyhow::ensure!(status.is_success(), "/healthz {status} during the flood");
    }
    let mut flooder = flood.await.context("the flood task panicked")??;
    // The flooder's connection is still served (its frames were valid) and the document is untouched.
    flooder
        .round_trip()
        .await
        .context("the flooder after its flood")?;
    anyhow::ensure!(
        server.heads(&token, &flooded).await == before,
        "the flood changed the document"
    );
    anyhow::ensure!(
        server.metric("commandpost_protocol_errors_total").await? == 0,
        "valid frames are not protocol errors"
    );
    println!("flood: {FLOOD} tiny frames; the bystander made {edits} acknowledged edits meanwhile");
    server.stop().await;
    Ok(())
}
