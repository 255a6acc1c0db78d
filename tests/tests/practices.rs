//! The revert list and the operations log over HTTP and `/sync`, with hostile writers: the server records who
//! wrote a deviation or a change and whether the change was coordinated; open deviations block closing (HTTP and
//! raw `/sync` alike) until reverted or overridden; raw writers cannot forge `by`, clear the uncoordinated mark,
//! revert in someone else's name, remove entries or delegate themselves; uncoordinated changes reach webhooks
//! naming the Operations lead and the commander.

use std::time::Duration;

use anyhow::{Context, ensure};
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::webhooks::{DeliverySettings, Endpoint, Format};
use tests::{Receiver, SyncClient, TestServer, eventually};

const DEADLINE: Duration = Duration::from_secs(30);

/// The value of the field of `kind` in the JSON read model.
fn field(json: &Value, kind: &str) -> Value {
    json["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["kind"] == kind))
        .map(|f| f["value"].clone())
        .unwrap_or(Value::Null)
}

/// The audit trail's `(rule, by)` pairs.
fn audit(json: &Value) -> Vec<(String, String)> {
    json["audit"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["rule"].as_str().unwrap_or_default().to_owned(),
                        e["by"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Applies `operations` over HTTP, expecting 200.
async fn ops(
    server: &TestServer,
    token: &str,
    id: &str,
    operations: Value,
) -> anyhow::Result<Value> {
    let response = server.operations(token, id, operations).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(
        status == StatusCode::OK,
        "operations refused: {status} {body}"
    );
    Ok(body)
}

/// Polls the JSON read model until `check` holds.
async fn until(
    server: &TestServer,
    token: &str,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    eventually(what, DEADLINE, || async {
        let json = server.incident_json(token, id).await;
        check(&json).then_some(json)
    })
    .await
}

async fn open_as(
    server: &TestServer,
    token: &str,
    author: &str,
    id: &str,
) -> anyhow::Result<SyncClient> {
    let mut client = SyncClient::connect(&server.ws_url(token)).await?;
    client.set_author(author);
    client.open(id).await?;
    Ok(client)
}

/// The list at root key `key` of a client's copy.
fn list(
    doc: &automerge::AutoCommit,
    key: &str,
) -> Result<automerge::ObjId, automerge::AutomergeError> {
    doc.get(ROOT, key)?
        .map(|(_, id)| id)
        .ok_or(automerge::AutomergeError::InvalidIndex(0))
}

fn now_ms() -> automerge::ScalarValue {
    automerge::ScalarValue::Timestamp(chrono::Utc::now().timestamp_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_deviations_block_closing_over_http_and_sync() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let carol = server.token("carol", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;
    let json = server.incident_json(&alice, &id).await;
    let done: Vec<Value> = field(&json, "checklist")
        .as_array()
        .context("exit criteria")?
        .iter()
        .map(|item| json!({"op": "setItemDone", "field": "exitCriteria", "id": item["id"], "done": true}))
        .collect();
    ops(&server, &alice, &id, Value::Array(done)).await?;

    // Bad input changes nothing: 422 with our error body.
    let before = server.incident_json(&alice, &id).await;
    for bad in [
        json!([{"op": "addDeviation", "what": " ", "revert": "turn it back on"}]),
        json!([{"op": "addDeviation", "what": "x".repeat(300), "revert": "y"}]),
        json!([{"op": "addDeviation", "what": "flag off", "revert": "on", "at": "2999-01-01T00:00:00Z"}]),
    ] {
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/api/incidents/{id}/operations"),
                Some(&bob),
                Some(&json!({"operations": bad})),
            )
            .await;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {status} {body}"
        );
        ensure!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{body}"
        );
    }
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/incidents/{id}/operations"),
            Some(&bob),
            Some(&json!({"operations": [{"op": "markReverted", "id": "nope"}]})),
        )
        .await;
    ensure!(status.is_client_error(), "an unknown deviation: {status}");
    ensure!(
        field(&server.incident_json(&alice, &id).await, "deviations")
            == field(&before, "deviations")
    );

    let added = ops(
        &server,
        &bob,
        &id,
        json!([{"op": "addDeviation", "what": "Feature flag new-checkout off", "revert": "Turn new-checkout back on"}]),
    )
    .await?;
    let deviation = added["applied"][0]["id"]
        .as_str()
        .context("an id")?
        .to_owned();
    let json = server.incident_json(&alice, &id).await;
    ensure!(
        field(&json, "deviations")[0]["by"] == "bob",
        "{}",
        field(&json, "deviations")
    );

    // Closing over HTTP is refused, naming the open deviation.
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/incidents/{id}/operations"),
            Some(&alice),
            Some(&json!({"operations": [{"op": "setStatus", "status": "closed"}]})),
        )
        .await;
    ensure!(
        status == StatusCode::FORBIDDEN && body["error"]["code"] == "command_rule",
        "{status} {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("deviation not reverted: Feature flag new-checkout off"),
        "{message}"
    );

    // Mallory, over raw /sync: marks it reverted in Carol's name, and deletes it. Both put back.
    let mut m = open_as(&server, &mallory, "mallory", &id).await?;
    m.raw_change(|doc| {
        let devs = list(doc, "deviations")?;
        let (_, entry) = doc
            .get(&devs, 0)?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        doc.put(&entry, "revertedBy", "carol")?;
        doc.put(&entry, "revertedAt", now_ms())
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    until(
        &server,
        &alice,
        &id,
        "the forged reverting put back",
        |json| {
            field(json, "deviations")[0]["reverted"].is_null()
                && audit(json).contains(&("authorship".into(), "mallory".into()))
        },
    )
    .await?;
    m.raw_change(|doc| {
        let devs = list(doc, "deviations")?;
        doc.delete(&devs, 0)
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    until(
        &server,
        &alice,
        &id,
        "the deleted deviation put back",
        |json| {
            field(json, "deviations")[0]["id"] == deviation.as_str()
                && audit(json).contains(&("deviations".into(), "mallory".into()))
        },
    )
    .await?;

    // The commander's raw close over /sync is put back too.
    let mut a = open_as(&server, &alice, "alice", &id).await?;
    a.raw_change(|doc| doc.put(ROOT, "status", "closed"))?;
    a.sync_until_acknowledged(DEADLINE).await?;
    until(&server, &alice, &id, "the raw close put back", |json| {
        json["status"] == "declared"
            && audit(json).contains(&("exitCriteria".into(), "alice".into()))
    })
    .await?;

    // Carol reverts it in her own name; then the incident closes.
    ops(
        &server,
        &carol,
        &id,
        json!([{"op": "markReverted", "id": deviation, "note": "flag back on"}]),
    )
    .await?;
    let json = server.incident_json(&alice, &id).await;
    ensure!(
        field(&json, "deviations")[0]["reverted"]["by"] == "carol",
        "{}",
        field(&json, "deviations")
    );
    ops(
        &server,
        &alice,
        &id,
        json!([{"op": "setStatus", "status": "closed"}]),
    )
    .await?;
    let markdown = server.markdown(&alice, &id).await;
    ensure!(
        markdown
            .contains("- [x] Feature flag new-checkout off · revert: Turn new-checkout back on"),
        "{markdown}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freelanced_changes_are_marked_and_announced() -> anyhow::Result<()> {
    let receiver = Receiver::start().await;
    let url = receiver.url("/hooks/ops");
    let server = TestServer::start_with(|config| {
        config.webhooks = vec![Endpoint {
            name: "ops".into(),
            url,
            secret: None,
            format: Format::Json,
            events: Some(vec!["uncoordinatedChange".into()]),
            drills: true,
            restricted: false,
        }];
        config.webhook_delivery = DeliverySettings {
            retry_initial_ms: 100,
            retry_max_secs: 1,
            ..DeliverySettings::default()
        };
    })
    .await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let dave = server.token("dave", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;
    ops(
        &server,
        &alice,
        &id,
        json!([{"op": "assignRole", "role": "operations", "person": "dave"}]),
    )
    .await?;
    ops(
        &server,
        &dave,
        &id,
        json!([{"op": "logChange", "what": "drained eu-west", "target": "lb-1"}]),
    )
    .await?;
    ops(
        &server,
        &bob,
        &id,
        json!([{"op": "logChange", "what": "restarted pods", "target": "payments-api"}]),
    )
    .await?;
    // Only the Operations lead delegates.
    let response = server
        .operations(
            &alice,
            &id,
            json!([{"op": "delegateOperations", "person": "bob"}]),
        )
        .await;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "{}",
        response.status()
    );
    ops(
        &server,
        &dave,
        &id,
        json!([{"op": "delegateOperations", "person": "bob"}]),
    )
    .await?;
    ops(
        &server,
        &bob,
        &id,
        json!([{"op": "logChange", "what": "scaled to 12", "target": "payments-api"}]),
    )
    .await?;

    // Mallory, over raw /sync: an entry in Dave's name goes; her own, marked coordinated, gets the server's mark;
    // delegating herself and removing Bob's entry are put back.
    let mut m = open_as(&server, &mallory, "mallory", &id).await?;
    m.raw_change(|doc| {
        let log = list(doc, "changes")?;
        for (by, what) in [("dave", "forged"), ("mallory", "restarted the primary")] {
            let entry = doc.insert_object(&log, doc.length(&log), ObjType::Map)?;
            doc.put(&entry, "id", entry.to_string())?;
            doc.put(&entry, "by", by)?;
            doc.put(&entry, "at", now_ms())?;
            doc.put(&entry, "what", what)?;
            doc.put(&entry, "target", "db-1")?;
            doc.put(&entry, "uncoordinated", false)?;
        }
        Ok(())
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    m.raw_change(|doc| {
        let delegates = list(doc, "operationsDelegates")?;
        doc.insert(&delegates, 1, "mallory")?;
        let log = list(doc, "changes")?;
        doc.delete(&log, 1)
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    let json = until(&server, &alice, &id, "mallory's writes judged", |json| {
        let log = field(json, "changes");
        log.as_array().map(Vec::len) == Some(4)
            && json["operationsDelegates"] == json!(["bob"])
            && audit(json).iter().filter(|(_, by)| by == "mallory").count() >= 3
    })
    .await?;
    let marks: Vec<(String, bool)> = field(&json, "changes")
        .as_array()
        .context("the log")?
        .iter()
        .map(|c| {
            (
                c["by"].as_str().unwrap_or_default().to_owned(),
                c["uncoordinated"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        marks
            == [
                ("dave".into(), false),
                ("bob".into(), true),
                ("bob".into(), false),
                ("mallory".into(), true)
            ],
        "{marks:?}"
    );

    // Bob's first change and Mallory's reached the webhook, naming the Operations lead and the commander.
    eventually("two uncoordinated changes announced", DEADLINE, || async {
        (receiver.accepted().len() >= 2).then_some(())
    })
    .await?;
    let events: Vec<Value> = receiver.accepted().iter().map(|d| d.json()).collect();
    let text = serde_json::to_string(&events)?;
    ensure!(events.len() == 2, "{text}");
    ensure!(
        text.contains("restarted pods") && text.contains("restarted the primary"),
        "{text}"
    );
    ensure!(
        text.contains("\"operations\":\"dave\"") && text.contains("\"commander\":\"alice\""),
        "{text}"
    );

    // The status update and the postmortem show them.
    let update = server
        .request(
            Method::GET,
            &format!("/api/incidents/{id}/update?format=text"),
            Some(&alice),
        )
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        update.contains("Uncoordinated change by bob on payments-api: restarted pods"),
        "{update}"
    );
    let postmortem = String::from_utf8(server.export(&alice, &id, "postmortem").await)?;
    ensure!(
        postmortem.contains("## Operations log")
            && postmortem.contains("2 of 4 changes were uncoordinated"),
        "{postmortem}"
    );
    Ok(())
}
