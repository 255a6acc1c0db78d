//! Bearer tokens stay out of URLs (proxies and access logs keep URLs). Browsers, which cannot set headers on a
//! WebSocket, open `/sync` with a ticket from `POST /api/sync-ticket`:
//! - a ticket opens one connection, as its token (name and scope), counted against the token's connection cap and
//!   closed when the token is revoked; used, expired, unknown tickets and the unused tickets of a revoked token get a
//!   401 with our JSON error before any upgrade, and of two upgrades racing for one ticket exactly one wins; a token
//!   holds at most as many unused tickets as it may hold connections (429 past that);
//! - a read token's ticket syncs read-only, as the token would;
//! - `?token=` on `/sync`, `/insights` and `/api/analytics/incidents` is refused with 400 `token_in_url`, even
//!   beside a valid header, and nothing is served;
//! - `Authorization: Bearer` on the upgrade keeps working for other clients;
//! - the stock JavaScript client fetches a ticket and syncs over it, and cannot get in with a spent one;
//! - on two nodes sharing PostgreSQL, a ticket issued by one node is accepted by the other, once.

use anyhow::{Context, bail, ensure};
use chrono::{Duration as TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::auth::hash_token;
use server::config::Config;
use tests::js_client::{JS_AUTHOR, JsClient};
use tests::{DEADLINE, SyncClient, SyncTarget, TestDatabase, TestServer, ws};

/// What the server answered to an upgrade it refused: the status and our JSON error body.
async fn refused_upgrade(target: &SyncTarget) -> anyhow::Result<(u16, Value)> {
    match tokio_tungstenite::connect_async(target).await {
        Ok((_, response)) => bail!("upgraded ({})", response.status()),
        Err(ws::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let body: Value = serde_json::from_slice(body)
                .with_context(|| format!("a JSON error body: {}", String::from_utf8_lossy(body)))?;
            Ok((response.status().as_u16(), body))
        }
        Err(other) => bail!("the upgrade failed without an HTTP answer: {other}"),
    }
}

/// Fails unless the upgrade to `target` is refused with 401 `invalid_ticket`.
async fn expect_invalid_ticket(target: &SyncTarget, what: &str) -> anyhow::Result<()> {
    let (status, body) = refused_upgrade(target)
        .await
        .with_context(|| what.to_owned())?;
    ensure!(
        status == 401 && body["error"]["code"] == "invalid_ticket",
        "{what}: {status} {body}"
    );
    Ok(())
}

/// The answer of `POST /api/sync-ticket` as `token`.
async fn ask_ticket(
    server: &TestServer,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = server
        .request(Method::POST, "/api/sync-ticket", token)
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_connection_as_its_token() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Ticket office").await;

    let (status, answer) = ask_ticket(&server, Some(&alice)).await?;
    ensure!(status == StatusCode::OK, "{status} {answer}");
    ensure!(answer["expiresIn"] == 30, "{answer}");
    let ticket = answer["ticket"].as_str().context("a ticket")?.to_owned();
    ensure!(!ticket.contains(&alice), "the ticket is not the token");

    // The connection is alice's: her edit lands, stamped and accepted as a writer's.
    let target = server.ticket_url(&ticket);
    let mut client = SyncClient::connect(&target).await?;
    client.set_author("alice");
    client.open(&incident.id).await?;
    ensure!(
        !client.server_is_read_only(),
        "a write token's ticket may write"
    );
    client
        .splice("summary", 0, 0, "Opened with a ticket.")
        .await?;
    let exported = tests::markdown_section(&server.markdown(&alice, &incident.id).await, "Summary");
    ensure!(
        exported.as_deref() == Some("Opened with a ticket."),
        "{exported:?}"
    );

    // Once: the same ticket again is refused before any upgrade, while the first connection carries on.
    expect_invalid_ticket(&target, "the ticket used a second time").await?;
    expect_invalid_ticket(&server.ticket_url("cpt_NeverIssued"), "an unknown ticket").await?;
    expect_invalid_ticket(&server.ticket_url(""), "an empty ticket").await?;
    client.splice("summary", 0, 0, "Still here. ").await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_upgrades_racing_for_one_ticket_exactly_one_wins() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    for round in 0..3 {
        let target = server.ticket_url(&server.sync_ticket(&alice).await);
        let attempts = (0..8).map(|_| {
            let target = target.clone();
            tokio::spawn(async move { tokio_tungstenite::connect_async(&target).await })
        });
        let mut upgraded = Vec::new();
        for attempt in futures_util::future::join_all(attempts).await {
            match attempt.context("an upgrade task")? {
                Ok((socket, _)) => upgraded.push(socket),
                Err(ws::Error::Http(response)) => {
                    ensure!(
                        response.status() == 401,
                        "round {round}: {}",
                        response.status()
                    );
                }
                Err(other) => bail!("round {round}: {other}"),
            }
        }
        ensure!(
            upgraded.len() == 1,
            "round {round}: {} upgrades",
            upgraded.len()
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    // A ticket past its 30 s, put where the server keeps tickets (waiting 30 s would say the same, slowly).
    let store = server::open_store(&Config {
        data_dir: server.data_dir(),
        ..Config::default()
    })?;
    let now = Utc::now();
    let expired = "cpt_ExpiredTicketForTheTest";
    let created = store
        .create_ticket(
            &hash_token(expired),
            &hash_token(&alice),
            now - TimeDelta::seconds(31),
            now - TimeDelta::seconds(1),
            8,
        )
        .await?;
    ensure!(created, "the expired ticket is stored");
    let fresh = "cpt_FreshTicketForTheTest";
    let created = store
        .create_ticket(
            &hash_token(fresh),
            &hash_token(&alice),
            now,
            now + TimeDelta::seconds(30),
            8,
        )
        .await?;
    ensure!(created, "the fresh ticket is stored");
    expect_invalid_ticket(&server.ticket_url(expired), "an expired ticket").await?;
    // The same store, a ticket within its time: accepted, so the refusal above was the expiry.
    SyncClient::connect(&server.ticket_url(fresh)).await?;
    store.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_voids_its_tickets_and_closes_their_connections() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let leaver = server.token("leaver", "write").await;
    let incident = server.declare(&server.admin_token, "Revocation").await;
    let mut connected =
        SyncClient::connect(&server.ticket_url(&server.sync_ticket(&leaver).await)).await?;
    connected.open(&incident.id).await?;
    let unused = server.ticket_url(&server.sync_ticket(&leaver).await);

    server.revoke("leaver").await;
    let message = connected.expect_error_then_close().await?;
    ensure!(message.contains("revoked"), "{message}");
    expect_invalid_ticket(&unused, "an unused ticket of a revoked token").await?;
    let (status, body) = ask_ticket(&server, Some(&leaver)).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "a revoked token gets no ticket: {status} {body}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_and_their_connections_count_against_the_tokens_cap() -> anyhow::Result<()> {
    const MAX: usize = 2;
    let server = TestServer::start_with(|config| config.max_connections_per_token = MAX).await;
    let bot = server.token("busy-bot", "read").await;
    let _header = SyncClient::connect(&server.ws_url(&bot)).await?;
    let _ticket = SyncClient::connect(&server.ticket_url(&server.sync_ticket(&bot).await)).await?;
    let (status, body) =
        refused_upgrade(&server.ticket_url(&server.sync_ticket(&bot).await)).await?;
    ensure!(
        status == 429 && body["error"]["code"] == "too_many_requests",
        "a third connection, by ticket: {status} {body}"
    );
    // Unused tickets are capped the same way: as many as the token may hold connections.
    for _ in 0..MAX {
        server.sync_ticket(&bot).await;
    }
    let (status, body) = ask_ticket(&server, Some(&bot)).await?;
    ensure!(
        status == StatusCode::TOO_MANY_REQUESTS && body["error"]["code"] == "too_many_requests",
        "a ticket past the cap: {status} {body}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_tokens_ticket_syncs_read_only() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let writer = server.token("writer", "write").await;
    let reader = server.token("reader", "read").await;
    let incident = server.declare(&writer, "Scopes").await;

    let mut client =
        SyncClient::connect(&server.ticket_url(&server.sync_ticket(&reader).await)).await?;
    client.open(&incident.id).await?;
    ensure!(
        client.server_is_read_only(),
        "the ticket carries the read scope"
    );
    // Sent anyway, as a hostile client would: the server applies none of it.
    client.ignore_read_only();
    client.splice("summary", 0, 0, "FORBIDDEN").await?;
    let hostile = client.heads();
    client.round_trip().await?;
    let mut stored = server.document(&writer, &incident.id).await;
    ensure!(
        hostile
            .iter()
            .all(|hash| stored.doc_mut().get_change_by_hash(hash).is_none()),
        "the server holds none of the reader's changes"
    );
    let summary = tests::markdown_section(&server.markdown(&writer, &incident.id).await, "Summary");
    ensure!(
        !summary.unwrap_or_default().contains("FORBIDDEN"),
        "the summary is unchanged"
    );
    // No ticket without a token, or with one the server never issued.
    for token in [None, Some("cp_NotATokenTheServerEverIssued")] {
        let (status, body) = ask_ticket(&server, token).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED && body["error"]["code"] == "unauthorized",
            "{token:?}: {status} {body}"
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_urls_are_refused_and_the_header_still_works() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Query strings").await;
    let before = server.markdown(&alice, &incident.id).await;

    // In the query of /sync: refused before the upgrade, with or without a header or a ticket beside it.
    let bare = format!("ws://{}/sync?token={alice}", server.addr);
    for (what, target) in [
        (
            "alone",
            SyncTarget {
                url: bare.clone(),
                bearer: None,
            },
        ),
        (
            "beside the header",
            SyncTarget {
                url: bare.clone(),
                bearer: Some(alice.clone()),
            },
        ),
        (
            "beside a ticket",
            SyncTarget {
                url: format!("{bare}&ticket={}", server.sync_ticket(&alice).await),
                bearer: None,
            },
        ),
    ] {
        let (status, body) = refused_upgrade(&target).await?;
        ensure!(
            status == 400 && body["error"]["code"] == "token_in_url",
            "{what}: {status} {body}"
        );
    }
    // A ticket and a header at once is ambiguous: refused, and the ticket is not spent by it.
    let ticket = server.sync_ticket(&alice).await;
    let both = SyncTarget {
        url: format!("ws://{}/sync?ticket={ticket}", server.addr),
        bearer: Some(alice.clone()),
    };
    let (status, body) = refused_upgrade(&both).await?;
    ensure!(
        status == 400 && body["error"]["code"] == "bad_request",
        "{status} {body}"
    );
    SyncClient::connect(&server.ticket_url(&ticket)).await?;

    // The analytics routes: refused, even beside a valid header, and nothing is served.
    for path in [
        format!("/api/analytics/incidents?format=csv&token={alice}"),
        format!("/insights?token={alice}"),
    ] {
        for header in [None, Some(alice.as_str())] {
            let response = server.request(Method::GET, &path, header).send().await?;
            let status = response.status();
            let body: Value = response.json().await.context("a JSON error")?;
            ensure!(
                status == StatusCode::BAD_REQUEST && body["error"]["code"] == "token_in_url",
                "{path} with header {}: {status} {body}",
                header.is_some()
            );
        }
    }

    // The header on the upgrade, as bots and the Rust client send it, keeps working.
    let mut client = SyncClient::connect(&server.ws_url(&alice)).await?;
    client.open(&incident.id).await?;
    ensure!(
        server.markdown(&alice, &incident.id).await == before,
        "no refused request changed anything"
    );
    client.splice("summary", 0, 0, "By header.").await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_js_client_syncs_over_a_ticket_and_not_with_a_spent_one() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    // The client stamps its edits with its author, which must be the token's name.
    let alice = server.token(JS_AUTHOR, "write").await;
    let incident = server.declare(&alice, "Stock client").await;

    // With the token in its environment, the client asks for a ticket and opens /sync?ticket=…
    let mut js = JsClient::spawn(
        &server.ws_url(&alice),
        &incident.url,
        json!([{"op": "splice", "field": "summary", "pos": 0, "del": 0, "text": "From JS, by ticket."}]),
    )
    .await?;
    js.expect("ready").await?;
    js.expect("spliced").await?;
    js.expect("flushed").await?;
    js.expect("done").await?;
    ensure!(js.exit().await?.success(), "the JS client failed");
    let exported = tests::markdown_section(&server.markdown(&alice, &incident.id).await, "Summary");
    ensure!(
        exported.as_deref() == Some("From JS, by ticket."),
        "{exported:?}"
    );

    // Handed a spent ticket, the stock client never gets the document.
    let spent = server.sync_ticket(&alice).await;
    SyncClient::connect(&server.ticket_url(&spent)).await?;
    let mut js = JsClient::spawn(&server.ticket_url(&spent), &incident.url, json!([])).await?;
    let refused = js.expect("error").await?;
    ensure!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("Unexpected server response: 401")),
        "{refused}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_from_one_node_opens_sync_on_the_other_once() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let config = format!("database-url = \"{}\"\n", db.url());
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    let incident = node1.declare(&alice, "Behind a load balancer").await;

    let ticket = node1.sync_ticket(&alice).await;
    let mut client = SyncClient::connect(&node2.ticket_url(&ticket)).await?;
    client.open(&incident.id).await?;
    client.splice("summary", 0, 0, "Via node 2.").await?;
    for node in [&node1, &node2] {
        expect_invalid_ticket(&node.ticket_url(&ticket), "a ticket already used on node 2").await?;
    }
    let arrived = tests::eventually("node 1 has the edit", DEADLINE, || {
        let summary = node1.markdown(&alice, &incident.id);
        async move {
            let summary = tests::markdown_section(&summary.await, "Summary");
            (summary.as_deref() == Some("Via node 2.")).then_some(())
        }
    })
    .await;
    ensure!(arrived.is_ok(), "{arrived:?}");
    client.close().await?;
    node2.stop().await;
    node1.stop().await;
    Ok(())
}
