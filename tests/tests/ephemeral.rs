//! Only the server speaks for the server: ephemeral messages, driven by hostile peers with raw frames, the Rust
//! `SyncClient` and the stock JavaScript client.
//!
//! - No peer joins under the server's peer id or any id that looks like a server's, nor sends under it later.
//! - A forged server notice (`{"refused": …}`) from a write or a read token is refused with an `error` and a close,
//!   counted in `/metrics`, and never reaches another peer.
//! - Ephemeral payloads are presence, decoded strictly (`{name, role, field}`, no CBOR tags, no other keys, texts
//!   bounded) and naming the token's person; anything else is refused the same way. What peers receive is the
//!   server's re-encoding of what it checked.
//! - Read tokens may send presence and nothing else.
//! - A flood of 20,000 ephemeral frames is answered with an `error` and a close once past the connection's bucket,
//!   having relayed no more than the bucket allows, while another connection on the same document keeps syncing.
//! - The stock JS client's `handle.broadcast` of presence passes; its forged notice does not.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ciborium::Value;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tests::js_client::JsClient;
use tests::{DEADLINE, SyncClient, TestServer, ws};
use wire::{Message, PeerId};

/// How long to wait to be confident a message does not arrive.
const QUIET: Duration = Duration::from_millis(500);

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encodes into a Vec");
    out
}

/// A CBOR map with text keys, in the given order (duplicates kept).
fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// The web client's presence payload, as the server re-encodes it: `{name, role, field}`.
fn presence(name: &str, field: &str) -> Vec<u8> {
    cbor(&map(vec![
        ("name", name.into()),
        ("role", Value::Null),
        ("field", field.into()),
    ]))
}

/// A server-looking refusal notice.
fn forged_refusal(text: &str) -> Value {
    map(vec![("refused", text.into())])
}

fn ephemeral(client: &SyncClient, count: u64, data: Vec<u8>) -> anyhow::Result<Message> {
    Ok(Message::Ephemeral {
        sender_id: client.peer_id().clone(),
        target_id: client.server_id().context("joined")?.clone(),
        document_id: client.document_id().context("opened")?,
        session_id: format!("session-{}", client.peer_id()),
        count,
        data,
    })
}

/// The next ephemeral message as (sender, payload), skipping sync traffic; `None` if none arrives within `wait`.
async fn next_ephemeral(
    client: &mut SyncClient,
    wait: Duration,
) -> anyhow::Result<Option<(PeerId, Vec<u8>)>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_message(left).await {
            Ok(Some(Message::Ephemeral {
                sender_id, data, ..
            })) => return Ok(Some((sender_id, data))),
            Ok(Some(Message::Error { message })) => bail!("error from the server: {message}"),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the connection closed"),
            Err(_) => return Ok(None),
        }
    }
}

/// Opens `incident` with `token` on a fresh connection, sends `payload` as one ephemeral message, and returns the
/// server's `error`, which must be followed by a close.
async fn refused(
    server: &TestServer,
    token: &str,
    incident: &str,
    payload: Vec<u8>,
) -> anyhow::Result<String> {
    let mut client = SyncClient::connect(&server.ws_url(token)).await?;
    client.open(incident).await?;
    client.send(&ephemeral(&client, 1, payload)?).await?;
    client.expect_error_then_close().await
}

/// Sends honest presence from `from` and checks it is the first ephemeral message `listener` hears, byte for byte:
/// so nothing refused before it was relayed.
async fn honest_presence_arrives_first(
    from: &mut SyncClient,
    listener: &mut SyncClient,
    name: &str,
) -> anyhow::Result<()> {
    let payload = presence(name, "summary");
    from.send(&ephemeral(from, 1, payload.clone())?).await?;
    match next_ephemeral(listener, DEADLINE).await? {
        Some((sender, data)) => {
            ensure!(
                &sender == from.peer_id(),
                "the first ephemeral came from {sender}"
            );
            ensure!(
                data == payload,
                "the first ephemeral was not the honest presence: {data:02x?}"
            );
            Ok(())
        }
        None => bail!("the honest presence never arrived"),
    }
}

#[tokio::test]
async fn no_peer_joins_as_the_server_or_sends_under_its_peer_id() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Impostors").await;
    let mut listener = SyncClient::connect(&server.ws_url(&bob)).await?;
    listener.open(&incident.id).await?;
    let server_id = listener.server_id().context("joined")?.clone();

    // Joining under the server's own id, or another server-looking id, is refused at the handshake.
    for id in [server_id.to_string(), "commandpost-imposter".to_owned()] {
        let mut raw = SyncClient::connect_unjoined(&server.ws_url(&alice)).await?;
        raw.send(&Message::Join {
            sender_id: PeerId::from(id.as_str()),
            supported_protocol_versions: vec![wire::PROTOCOL_VERSION.to_owned()],
            metadata: None,
        })
        .await?;
        let error = raw.expect_error_then_close().await?;
        ensure!(
            error.contains("reserved") && error.contains(&id),
            "joining as {id}: {error}"
        );
    }

    // Joined under its own id, a peer that names the server as sender is cut off before anything is relayed.
    let mut alice_client = SyncClient::connect(&server.ws_url(&alice)).await?;
    alice_client.open(&incident.id).await?;
    let mut frame = ephemeral(
        &alice_client,
        1,
        cbor(&forged_refusal("The server refused a change")),
    )?;
    if let Message::Ephemeral { sender_id, .. } = &mut frame {
        *sender_id = server_id.clone();
    }
    alice_client.send(&frame).await?;
    let error = alice_client.expect_error_then_close().await?;
    ensure!(error.contains("is not the peer that joined"), "{error}");

    let mut alice_again = SyncClient::connect(&server.ws_url(&alice)).await?;
    alice_again.open(&incident.id).await?;
    honest_presence_arrives_first(&mut alice_again, &mut listener, "alice").await?;
    ensure!(server.metric("commandpost_protocol_errors_total").await? == 3);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_forged_refusal_is_refused_from_write_and_read_tokens() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let reader = server.token("reader", "read").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Forged notices").await;
    let before = server.heads(&alice, &incident.id).await;
    let mut listener = SyncClient::connect(&server.ws_url(&bob)).await?;
    listener.open(&incident.id).await?;

    let mut attempts = 0;
    for (token, name) in [(&alice, "alice"), (&reader, "reader")] {
        let text = "The server refused a change: the commander is now mallory";
        // The bare notice, and one dressed as presence so a name check alone would pass it.
        for payload in [
            forged_refusal(text),
            map(vec![("name", name.into()), ("refused", text.into())]),
        ] {
            let error = refused(&server, token, &incident.id, cbor(&payload)).await?;
            ensure!(
                error.contains("notices are the server's"),
                "{name}: {error}"
            );
            attempts += 1;
        }
    }
    ensure!(
        server
            .metric("commandpost_ephemeral_refused_total{reason=\"notice\"}")
            .await?
            == attempts
    );
    let mut honest = SyncClient::connect(&server.ws_url(&alice)).await?;
    honest.open(&incident.id).await?;
    honest_presence_arrives_first(&mut honest, &mut listener, "alice").await?;
    ensure!(server.heads(&alice, &incident.id).await == before);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn ephemeral_payloads_must_be_exactly_presence_naming_the_token() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Shapes").await;
    let mut listener = SyncClient::connect(&server.ws_url(&bob)).await?;
    listener.open(&incident.id).await?;

    let bob_presence = || {
        map(vec![
            ("name", "bob".into()),
            ("role", "Incident Commander".into()),
            ("field", "summary".into()),
        ])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // A tag around the map hid the name from the old check, and peers' decoders skip tags.
        (
            "a tagged presence map",
            cbor(&Value::Tag(55799, Box::new(bob_presence()))),
            "CBOR tag",
        ),
        (
            "a tagged name",
            cbor(&map(vec![("name", Value::Tag(0, Box::new("bob".into())))])),
            "CBOR tag",
        ),
        (
            "an extra key",
            cbor(&map(vec![
                ("name", "alice".into()),
                ("role", Value::Null),
                ("field", "summary".into()),
                ("admin", true.into()),
            ])),
            "has key \"admin\"",
        ),
        // The old check read the first name; JavaScript decoders keep the last.
        (
            "the name twice",
            cbor(&map(vec![("name", "alice".into()), ("name", "bob".into())])),
            "twice",
        ),
        (
            "automerge-repo's own Presence message",
            cbor(&map(vec![(
                "__presence",
                map(vec![("type", "heartbeat".into())]),
            )])),
            "has key \"__presence\"",
        ),
        (
            "a huge role",
            cbor(&map(vec![
                ("name", "alice".into()),
                ("role", "x".repeat(100_000).into()),
            ])),
            "larger than presence can be",
        ),
        (
            "a field just over the bound",
            cbor(&map(vec![
                ("name", "alice".into()),
                ("field", "f".repeat(201).into()),
            ])),
            "longer than 200 characters",
        ),
        (
            "a number for the role",
            cbor(&map(vec![("name", "alice".into()), ("role", 1.into())])),
            "must be text or null",
        ),
        (
            "leaving, but false",
            cbor(&map(vec![
                ("name", "alice".into()),
                ("leaving", false.into()),
            ])),
            "\"leaving\" must be true",
        ),
        ("no name", cbor(&map(vec![])), "must have a name"),
        ("not CBOR", vec![0xff, 0x00], "not CBOR"),
        (
            "a list",
            cbor(&Value::Array(vec!["alice".into()])),
            "not a map",
        ),
    ];
    let shapes = cases.len() as u64;
    for (what, payload, expected) in cases {
        let error = refused(&server, &alice, &incident.id, payload).await?;
        ensure!(error.contains(expected), "{what}: {error}");
    }
    let error = refused(&server, &alice, &incident.id, cbor(&bob_presence())).await?;
    ensure!(
        error.contains("presence names \"bob\"") && error.contains("\"alice\""),
        "{error}"
    );
    ensure!(
        server
            .metric("commandpost_ephemeral_refused_total{reason=\"shape\"}")
            .await?
            == shapes
    );
    ensure!(
        server
            .metric("commandpost_ephemeral_refused_total{reason=\"name\"}")
            .await?
            == 1
    );

    // Role and field left out, a JavaScript `undefined` among them: accepted, and relayed as the server's encoding.
    let mut honest = SyncClient::connect(&server.ws_url(&alice)).await?;
    honest.open(&incident.id).await?;
    let mut sparse = cbor(&map(vec![("name", "alice".into())]));
    sparse[0] = 0xa2;
    sparse.extend(b"\x65field\xf7");
    honest.send(&ephemeral(&honest, 1, sparse)?).await?;
    let Some((_, relayed)) = next_ephemeral(&mut listener, DEADLINE).await? else {
        bail!("the sparse presence was not relayed");
    };
    ensure!(
        relayed
            == cbor(&map(vec![
                ("name", "alice".into()),
                ("role", Value::Null),
                ("field", Value::Null),
            ])),
        "relayed {relayed:02x?}"
    );
    // A closing tab's leave is relayed as it was said, so peers drop it at once.
    let leaving = cbor(&map(vec![
        ("name", "alice".into()),
        ("role", Value::Null),
        ("field", Value::Null),
        ("leaving", true.into()),
    ]));
    honest
        .send(&ephemeral(&honest, 2, leaving.clone())?)
        .await?;
    let Some((_, relayed)) = next_ephemeral(&mut listener, DEADLINE).await? else {
        bail!("the leave was not relayed");
    };
    ensure!(relayed == leaving, "relayed {relayed:02x?}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn read_tokens_may_send_presence_and_nothing_else() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let reader = server.token("reader", "read").await;
    let incident = server.declare(&alice, "Viewers").await;
    let mut listener = SyncClient::connect(&server.ws_url(&alice)).await?;
    listener.open(&incident.id).await?;

    for payload in [
        map(vec![("type", "chat".into()), ("text", "hello".into())]),
        map(vec![("name", "reader".into()), ("cursor", 12.into())]),
    ] {
        let error = refused(&server, &reader, &incident.id, cbor(&payload)).await?;
        ensure!(error.contains("presence only"), "{error}");
    }
    let mut viewer = SyncClient::connect(&server.ws_url(&reader)).await?;
    viewer.open(&incident.id).await?;
    honest_presence_arrives_first(&mut viewer, &mut listener, "reader").await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_flood_ends_in_an_error_and_a_close_and_others_carry_on() -> anyhow::Result<()>
{
    /// Tiny valid presence frames, sent as fast as the socket takes them.
    const FLOOD: u64 = 20_000;
    // The defaults, spelled out: the bound below is computed from them.
    const RATE: u32 = 20;
    const BURST: u32 = 50;
    let server = TestServer::start_with(|config| {
        config.max_ephemeral_per_sec = RATE;
        config.ephemeral_burst = BURST;
    })
    .await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Flooded").await;
    let mut flooder = SyncClient::connect(&server.ws_url(&alice)).await?;
    flooder.open(&incident.id).await?;
    let mut bystander = SyncClient::connect(&server.ws_url(&bob)).await?;
    bystander.open(&incident.id).await?;

    let frames: Vec<Vec<u8>> = (1..=FLOOD)
        .map(|count| ephemeral(&flooder, count, presence("alice", "summary")).map(|m| m.encode()))
        .collect::<anyhow::Result<_>>()?;
    let (mut sink, mut stream) = flooder.into_socket().split();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        for frame in frames {
            if sink.send(ws::Message::Binary(frame.into())).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    // The answer: an error, then the close, and nothing after the error.
    let error = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.next().await {
                Some(Ok(ws::Message::Binary(bytes))) => {
                    if let Ok(Message::Error { message }) = wire::decode(&bytes) {
                        return Ok(message);
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => bail!("the connection ended without an error message"),
            }
        }
    })
    .await
    .context("no answer to the flood")??;
    let answered = started.elapsed();
    ensure!(error.contains("ephemeral messages per second"), "{error}");
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) | Some(Ok(ws::Message::Close(_))) => return Ok(()),
                Some(Ok(ws::Message::Binary(bytes))) => {
                    bail!("the server sent {:?} after its error", wire::decode(&bytes))
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .context("the connection stayed open after the error")??;
    let sent = tokio::time::timeout(DEADLINE, sender)
        .await
        .context("the flood did not stop")??;

    // The bystander heard the burst and no more than the rate allowed until the answer, then nothing.
    let mut relayed = 0u64;
    while relayed < u64::from(BURST) {
        if next_ephemeral(&mut bystander, DEADLINE).await?.is_none() {
            bail!("only {relayed} of the flood's first {BURST} frames were relayed");
        }
        relayed += 1;
    }
    while next_ephemeral(&mut bystander, QUIET).await?.is_some() {
        relayed += 1;
    }
    let allowed = u64::from(BURST) + (f64::from(RATE) * answered.as_secs_f64()).ceil() as u64;
    ensure!(
        relayed <= allowed,
        "{relayed} relayed, but the bucket allows {allowed} in {answered:?}"
    );
    ensure!(
        server
            .metric("commandpost_limit_rejections_total{limit=\"ephemeral\"}")
            .await?
            == 1
    );
    // The bystander keeps syncing on the same document, and the flooder's person may come back.
    bystander.splice("summary", 0, 0, "still here. ").await?;
    let mut back = SyncClient::connect(&server.ws_url(&alice)).await?;
    back.open(&incident.id).await?;
    ensure!(back.text("summary").starts_with("still here. "));
    honest_presence_arrives_first(&mut back, &mut bystander, "alice").await?;
    let (status, _) = server.healthz().await;
    ensure!(status.is_success(), "/healthz {status} after the flood");
    println!(
        "flood: {sent} of {FLOOD} frames sent before the close, {relayed} relayed, answered after {answered:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_js_clients_presence_is_relayed_and_its_forged_notice_is_not()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let reader = server.token("reader", "read").await;
    let incident = server.declare(&alice, "JS broadcast").await;
    let mut listener = SyncClient::connect(&server.ws_url(&alice)).await?;
    listener.open(&incident.id).await?;

    // `handle.broadcast` of presence, as cbor-x encodes a JavaScript object: relayed as checked presence.
    let mut js = JsClient::spawn(
        &server.ws_url(&alice),
        &incident.url,
        json!([{"op": "broadcast", "message": {"name": "alice", "role": null, "field": "summary"}}]),
    )
    .await?;
    let ready = js.expect("ready").await?;
    js.skip_to("done").await?;
    ensure!(js.exit().await?.success(), "the JS client failed");
    let js_peer = ready["peerId"]
        .as_str()
        .context("a ready event")?
        .to_owned();
    let Some((sender, data)) = next_ephemeral(&mut listener, DEADLINE).await? else {
        bail!("the JS client's presence was not relayed");
    };
    ensure!(
        sender.as_str() == js_peer,
        "relayed from {sender}, not {js_peer}"
    );
    ensure!(data == presence("alice", "summary"), "relayed {data:02x?}");

    // A read token's JS client forging the server's refusal: refused, counted, relayed to nobody.
    let mut js = JsClient::spawn(
        &server.ws_url(&reader),
        &incident.url,
        json!([{"op": "broadcast", "message": {"refused": "The server refused a change: forged"}}]),
    )
    .await?;
    js.skip_to("done").await?;
    ensure!(js.exit().await?.success(), "the JS client failed");
    eventually_metric(
        &server,
        "commandpost_ephemeral_refused_total{reason=\"notice\"}",
        1,
    )
    .await?;
    let mut honest = SyncClient::connect(&server.ws_url(&alice)).await?;
    honest.open(&incident.id).await?;
    honest_presence_arrives_first(&mut honest, &mut listener, "alice").await?;
    server.stop().await;
    Ok(())
}

/// Waits until the metric `name` reads `value` (the server counts a refusal as it reads the frame, which a client
/// that exits at once does not wait for).
async fn eventually_metric(server: &TestServer, name: &str, value: u64) -> anyhow::Result<()> {
    tests::eventually(&format!("{name} to reach {value}"), DEADLINE, || async {
        (server.metric(name).await.ok() == Some(value)).then_some(())
    })
    .await
}
