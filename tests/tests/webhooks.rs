//! Outgoing webhooks against a real HTTP receiver on a loopback port:
//! - every event type arrives once, signed (HMAC-SHA256 over `timestamp.body`, checked here independently), with
//!   changes made over HTTP and over `/sync` alike; refused deliveries are retried; the summary is debounced; a
//!   Slack-compatible endpoint gets `{"text": …}` for the events it asked for; admins read the delivery log;
//! - a receiver that is down while events happen, and comes back after the server restarted, gets each event exactly
//!   once, with the embedded store and with two nodes sharing PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, ensure};
use incident_doc::Operation;
use incident_doc::schema::Status;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::webhooks::{DeliverySettings, Endpoint, Format};
use tests::{DEADLINE, Receiver, SyncClient, TestDatabase, TestServer, eventually};

const SECRET: &str = "whsec-test-7f3a";

/// Long enough for a few retries with the tests' short backoff.
const DELIVERED: Duration = Duration::from_secs(30);

/// The distinct event ids among the accepted deliveries, by id, failing on a repeat.
fn unique_events(receiver: &Receiver) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut events = BTreeMap::new();
    for delivery in receiver.accepted() {
        let body = delivery.json();
        let id = body["id"].as_str().context("an event id")?.to_owned();
        ensure!(
            delivery.header("commandpost-event-id") == Some(id.as_str()),
            "the id header matches the body"
        );
        ensure!(
            events.insert(id.clone(), body).is_none(),
            "event {id} was accepted twice"
        );
    }
    Ok(events)
}

/// Waits until the receiver accepted `n` distinct events, then a little more, and checks no more (and no repeat)
/// arrived.
async fn exactly(receiver: &Receiver, n: usize) -> anyhow::Result<BTreeMap<String, Value>> {
    eventually(&format!("{n} events delivered"), DELIVERED, || async {
        (receiver.accepted().len() >= n).then_some(())
    })
    .await
    .with_context(|| {
        format!(
            "got {:?}",
            types(&unique_events(receiver).unwrap_or_default())
        )
    })?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = unique_events(receiver)?;
    ensure!(
        events.len() == n,
        "expected {n} events, got {}: {:?}",
        events.len(),
        types(&events)
    );
    Ok(events)
}

fn types(events: &BTreeMap<String, Value>) -> Vec<String> {
    let mut types: Vec<String> = events
        .values()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    types.sort();
    types
}

async fn ops(server: &TestServer, token: &str, id: &str, operations: Value) -> anyhow::Result<()> {
    let response = server.operations(token, id, operations).await;
    ensure!(
        response.status() == StatusCode::OK,
        "operations refused: {}",
        response.text().await?
    );
    Ok(())
}

async fn admin_get(server: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    server.call(Method::GET, path, Some(token), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_events_arrive_once_each_whichever_way_the_change_came() -> anyhow::Result<()> {
    let ops_receiver = Receiver::start().await;
    let chat = Receiver::start().await;
    // The first two requests are refused: those deliveries must be retried, and still arrive once.
    ops_receiver.fail_next(2);
    let (ops_url, chat_url) = (
        ops_receiver.url("/hooks/ops"),
        chat.url("/services/T000/B000"),
    );
    let server = TestServer::start_with(|config| {
        config.webhooks = vec![
            Endpoint {
                name: "ops".into(),
                url: ops_url,
                secret: Some(SECRET.into()),
                format: Format::Json,
                events: None,
                drills: true,
                restricted: false,
            },
            Endpoint {
                name: "chat".into(),
                url: chat_url,
                secret: None,
                format: Format::Slack,
                events: Some(vec!["declared".into(), "closed".into()]),
                drills: false,
                restricted: false,
            },
        ];
        config.webhook_delivery = DeliverySettings {
            retry_initial_ms: 100,
            retry_max_secs: 1,
            summary_debounce_secs: 1,
            ..DeliverySettings::default()
        };
    })
    .await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    let id = incident.id.as_str();
    ops(
        &server,
        &alice,
        id,
        json!([
            {"op": "setStatus", "status": "active"},
            {"op": "setChoice", "field": "severity", "value": "SEV1"},
        ]),
    )
    .await?;
    // Two summary edits within the debounce: one event, with the last text.
    ops(
        &server,
        &alice,
        id,
        json!([{"op": "setText", "field": "summary", "text": "Checkout down"}]),
    )
    .await?;
    ops(
        &server,
        &alice,
        id,
        json!([{"op": "setText", "field": "summary", "text": "Checkout down in the EU"}]),
    )
    .await?;
    ops(
        &server,
        &alice,
        id,
        json!([{"op": "proposeHandoff", "role": "commander", "to": "bob"}]),
    )
    .await?;
    ops(
        &server,
        &bob,
        id,
        json!([{"op": "acceptHandoff", "role": "commander"}]),
    )
    .await?;
    // A change over /sync, as any automerge-repo client makes it.
    let mut client = SyncClient::connect(&server.ws_url(&bob)).await?;
    client.set_author("bob");
    client.open(id).await?;
    client.apply_local(Operation::SetStatus {
        status: Status::Mitigated,
        override_reason: None,
    })?;
    client.sync_until_acknowledged(DEADLINE).await?;
    let view = server.incident_json(&bob, id).await;
    let exit = view["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "exitCriteria"))
        .context("exit criteria")?;
    let done: Vec<Value> = exit["value"]
        .as_array()
        .context("items")?
        .iter()
        .map(|item| json!({"op": "setItemDone", "field": "exitCriteria", "id": item["id"], "done": true}))
        .collect();
    ensure!(done.len() >= 2, "the template has several exit criteria");
    ops(&server, &bob, id, Value::Array(done)).await?;
    ops(
        &server,
        &bob,
        id,
        json!([{"op": "setStatus", "status": "resolved"}]),
    )
    .await?;
    ops(
        &server,
        &bob,
        id,
        json!([{"op": "setStatus", "status": "closed"}]),
    )
    .await?;

    // A drill is reported, marked, to the endpoint that takes drills, and not to the one that does not.
    let response = server
        .request(Method::POST, "/api/incidents", Some(&alice))
        .json(&json!({"title": "Replay of the DNS outage", "template": "drill"}))
        .send()
        .await?;
    ensure!(response.status() == StatusCode::CREATED);
    let drill: Value = response.json().await?;

    let mut events = exactly(&ops_receiver, 11).await?;
    let drill_event = events
        .values()
        .find(|e| e["incident"]["id"] == drill["id"])
        .cloned()
        .context("the drill's declaration")?;
    assert_eq!(drill_event["incident"]["drill"], true);
    assert!(
        drill_event["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[DRILL] ")),
        "{drill_event}"
    );
    events.retain(|_, e| e["incident"]["id"] != drill["id"]);
    assert_eq!(
        types(&events),
        [
            "closed",
            "declared",
            "exitCriteriaMet",
            "handoffAccepted",
            "handoffProposed",
            "severityChanged",
            "statusChanged",
            "statusChanged",
            "statusChanged",
            "summaryChanged"
        ]
    );
    let of = |t: &'static str| events.values().filter(move |e| e["type"] == t);
    let summary: Vec<_> = of("summaryChanged").collect();
    assert_eq!(summary[0]["data"]["summary"], "Checkout down in the EU");
    let moves: BTreeSet<(String, String)> = of("statusChanged")
        .map(|e| {
            (
                e["data"]["from"].as_str().unwrap_or("").to_owned(),
                e["data"]["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("declared", "active"),
        ("active", "mitigated"),
        ("mitigated", "resolved"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(
        moves, expected,
        "the /sync change is reported like the HTTP ones"
    );
    let accepted: Vec<_> = of("handoffAccepted").collect();
    assert_eq!(
        accepted[0]["data"],
        json!({"role": "commander", "to": "bob", "from": "alice"})
    );
    for event in events.values() {
        assert_eq!(event["incident"]["id"], id);
        assert_eq!(event["incident"]["drill"], false);
        assert!(
            event["text"]
                .as_str()
                .is_some_and(|t| t.contains("Checkout errors")),
            "{event}"
        );
    }

    // Every delivery is signed over its timestamp and body; a wrong secret or a changed body does not verify.
    let received = ops_receiver.received();
    for delivery in &received {
        assert!(delivery.signed_with(SECRET), "{delivery:?}");
        assert!(!delivery.signed_with("another secret"));
        let mut tampered = delivery.clone();
        tampered.body.push(' ');
        assert!(!tampered.signed_with(SECRET));
        let sent: i64 = delivery
            .header("commandpost-timestamp")
            .context("timestamp")?
            .parse()?;
        assert!((chrono::Utc::now().timestamp() - sent).abs() < 300);
    }
    let refused: Vec<_> = received.iter().filter(|d| !d.accepted).collect();
    assert_eq!(refused.len(), 2);
    for delivery in refused {
        let retried = received.iter().any(|d| {
            d.accepted
                && d.header("commandpost-event-id") == delivery.header("commandpost-event-id")
                && d.header("commandpost-attempt") != Some("1")
        });
        assert!(retried, "a refused delivery is retried: {delivery:?}");
    }

    // The Slack-compatible endpoint gets {"text"} for the two events it asked for, unsigned.
    let chat_events = chat.accepted();
    assert_eq!(chat_events.len(), 2, "{chat_events:?}");
    let texts: Vec<String> = chat_events
        .iter()
        .map(|d| d.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        texts.iter().any(|t| t.ends_with("declared (SEV3)")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.ends_with(": closed")), "{texts:?}");
    assert!(
        chat_events
            .iter()
            .all(|d| d.json().as_object().is_some_and(|o| o.len() == 1))
    );
    assert!(
        chat_events
            .iter()
            .all(|d| d.header("commandpost-signature").is_none())
    );

    // Admins read the endpoints (no secrets, no paths) and each endpoint's delivery log.
    let admin = &server.admin_token;
    let (status, endpoints) = admin_get(&server, admin, "/api/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    let listed = endpoints.to_string();
    assert!(
        !listed.contains(SECRET) && !listed.contains("/services/T000"),
        "{listed}"
    );
    assert_eq!(endpoints["endpoints"][0]["signed"], true);
    // The port stays: two receivers on one host are told apart by it.
    let shown = ops_receiver.url("/…");
    assert_eq!(endpoints["endpoints"][0]["url"], shown.as_str(), "{listed}");
    let (status, log) = admin_get(&server, admin, "/api/webhooks/ops/deliveries").await;
    assert_eq!(status, StatusCode::OK);
    let rows = log["deliveries"].as_array().context("rows")?;
    assert_eq!(rows.len(), 11);
    assert!(
        rows.iter()
            .all(|r| r["state"] == "delivered" && r["lastStatus"] == 204),
        "{log}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["attempts"].as_u64() > Some(1))
            .count(),
        2,
        "{log}"
    );
    let metrics = server.metrics().await;
    // 11 to "ops" and 2 to "chat"; the two refusals were failed attempts.
    assert!(
        metrics.contains("commandpost_webhooks_delivered_total 13\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("commandpost_webhook_attempts_failed_total 2\n"),
        "{metrics}"
    );
    let (status, _) = admin_get(&server, &alice, "/api/webhooks/ops/deliveries").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = admin_get(&server, admin, "/api/webhooks/nobody/deliveries").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let (status, body) = admin_get(&server, admin, "/api/webhooks/ops/deliveries?limit=0").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("unprocessable"))
    );
    server.stop().await;
    Ok(())
}

/// The config of a server whose endpoint is `url`, retrying quickly.
fn restart_config(url: &str, database_url: Option<&str>) -> String {
    let database = database_url
        .map(|u| format!("database-url = \"{u}\"\n"))
        .unwrap_or_default();
    format!(
        "{database}\n[[webhooks]]\nname = \"ops\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\n\
         [webhook-delivery]\nretry-initial-ms = 200\nretry-max-secs = 1\n"
    )
}

/// Waits until every queued delivery of `ops` was attempted and failed at least once (the receiver is down).
async fn all_failed_once(server: &TestServer, n: usize) -> anyhow::Result<()> {
    eventually(
        "every delivery failing while the receiver is down",
        DELIVERED,
        || async {
            let (_, log) =
                admin_get(server, &server.admin_token, "/api/webhooks/ops/deliveries").await;
            let rows = log["deliveries"].as_array()?.clone();
            (rows.len() == n
                && rows.iter().all(|r| {
                    r["state"] == "pending"
                        && r["attempts"].as_u64() >= Some(1)
                        && r["lastError"].is_string()
                }))
            .then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_across_a_restart_gets_every_event_exactly_once() -> anyhow::Result<()> {
    let mut receiver = Receiver::down().await;
    let mut server =
        TestServer::start_process_with_config(&restart_config(&receiver.url("/hook"), None)).await;
    let alice = server.token("alice", "write").await;
    for name in ["Checkout errors", "Search latency", "Login failures"] {
        let incident = server.declare(&alice, name).await;
        ops(
            &server,
            &alice,
            &incident.id,
            json!([{"op": "setStatus", "status": "active"}]),
        )
        .await?;
    }
    all_failed_once(&server, 6).await?;
    server.stop_process().await;
    receiver.restart().await;
    server.restart().await;
    let events = exactly(&receiver, 6).await?;
    assert_eq!(
        types(&events),
        [
            "declared",
            "declared",
            "declared",
            "statusChanged",
            "statusChanged",
            "statusChanged"
        ]
    );
    assert!(receiver.received().iter().all(|d| d.signed_with(SECRET)));
    let (_, log) = admin_get(&server, &server.admin_token, "/api/webhooks/ops/deliveries").await;
    let rows = log["deliveries"].as_array().context("rows")?;
    assert!(rows.iter().all(|r| r["state"] == "delivered"), "{log}");
    let logged: BTreeSet<&str> = rows.iter().filter_map(|r| r["eventId"].as_str()).collect();
    let got: BTreeSet<&str> = events.keys().map(String::as_str).collect();
    assert_eq!(logged, got);
    server.stop_process().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgres_deliver_each_event_once_across_a_restart() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let mut receiver = Receiver::down().await;
    let config = restart_config(&receiver.url("/hook"), Some(&db.url()));
    let mut node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    // Declared on one node, changed on the other (and over /sync there): each change's node queues its events.
    let first = node1.declare(&alice, "Checkout errors").await;
    let second = node2.declare(&alice, "Search latency").await;
    ops(
        &node2,
        &alice,
        &first.id,
        json!([{"op": "setStatus", "status": "active"}]),
    )
    .await?;
    ops(
        &node1,
        &alice,
        &second.id,
        json!([{"op": "setChoice", "field": "severity", "value": "SEV2"}]),
    )
    .await?;
    let mut client = SyncClient::connect(&node2.ws_url(&alice)).await?;
    client.set_author("alice");
    client.open(&second.id).await?;
    client.apply_local(Operation::SetStatus {
        status: Status::Active,
        override_reason: None,
    })?;
    client.sync_until_acknowledged(DEADLINE).await?;
    all_failed_once(&node1, 5).await?;
    node1.stop_process().await;
    receiver.restart().await;
    node1.restart().await;
    let events = exactly(&receiver, 5).await?;
    assert_eq!(
        types(&events),
        [
            "declared",
            "declared",
            "severityChanged",
            "statusChanged",
            "statusChanged"
        ]
    );
    drop(node2);
    node1.stop_process().await;
    Ok(())
}
