//! The commander's check-ins end to end on a real server: the reconsider prompt answered by the commander over HTTP
//! (in the timeline, due again after the template's interval), help flags raised and cleared by their person or
//! cleared by the commander (in the timeline, the JSON read model, the postmortem's "Check-ins" line and a webhook
//! event), everyone else refused with 403 `command_rule`, bad input with 422 and nothing changed, and hostile raw
//! `/sync` writers who forge someone's flag or an answer to the prompt put back and audited.

use std::time::Duration;

use anyhow::{Context, ensure};
use automerge::ReadDoc;
use automerge::transaction::Transactable;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::webhooks::{DeliverySettings, Endpoint, Format};
use tests::{Receiver, SyncClient, TestServer, eventually};

/// Applies one operation as `token`; answers the status and the body.
async fn op(server: &TestServer, token: &str, id: &str, op: Value) -> (StatusCode, Value) {
    let response = server.operations(token, id, json!([op])).await;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn time(value: &Value) -> anyhow::Result<DateTime<Utc>> {
    value
        .as_str()
        .context("a time")?
        .parse()
        .context("an RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconsider_prompt_and_help_flags_over_http() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;

    let view = server.incident_json(&alice, &id).await;
    let checkins = &view["checkins"];
    ensure!(
        checkins["reconsiderMinutes"] == 30 && checkins["helpFlag"] == true,
        "{checkins}"
    );
    let first_due = time(&checkins["reconsiderDueAt"])?;
    ensure!(
        first_due - time(&view["createdAt"])? == chrono::Duration::minutes(30),
        "{view}"
    );

    // Bob raises his flag; the commander sees it in the read model and the timeline.
    let (status, body) = op(
        &server,
        &bob,
        &id,
        json!({"op": "setHelp", "state": "overloaded"}),
    )
    .await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let view = server.incident_json(&alice, &id).await;
    ensure!(
        view["checkins"]["help"]["bob"]["state"] == "overloaded",
        "{view}"
    );
    ensure!(
        server
            .markdown(&alice, &id)
            .await
            .contains("Help flag: bob is overloaded.")
    );

    // Refused by the command rules: bob answering the prompt, raising carol's flag; alice raising bob's.
    for (token, body) in [
        (
            &bob,
            json!({"op": "reconsider", "note": "switch to plan B"}),
        ),
        (
            &bob,
            json!({"op": "setHelp", "state": "help", "person": "carol"}),
        ),
        (
            &alice,
            json!({"op": "setHelp", "state": "help", "person": "bob"}),
        ),
    ] {
        let (status, answer) = op(&server, token, &id, body.clone()).await;
        ensure!(status == StatusCode::FORBIDDEN, "{body}: {status} {answer}");
        ensure!(answer["error"]["code"] == "command_rule", "{answer}");
    }
    // Bad input: 422 with our error body, nothing written.
    let before = server.heads(&alice, &id).await;
    for body in [
        json!({"op": "reconsider", "note": "one\ntwo"}),
        json!({"op": "reconsider", "note": "   "}),
        json!({"op": "reconsider", "note": "x".repeat(201)}),
    ] {
        let (status, answer) = op(&server, &alice, &id, body.clone()).await;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {status} {answer}"
        );
        ensure!(answer["error"]["message"].is_string(), "{answer}");
    }
    for body in [
        json!({"op": "setHelp", "state": "panic"}),
        json!({"op": "setHelp"}),
    ] {
        let (status, answer) = op(&server, &alice, &id, body.clone()).await;
        ensure!(status.is_client_error(), "{body}: {status} {answer}");
        ensure!(answer["error"]["code"].is_string(), "{answer}");
    }
    ensure!(server.heads(&alice, &id).await == before);

    // The commander answers the prompt and clears bob's flag.
    let (status, body) = op(
        &server,
        &alice,
        &id,
        json!({"op": "reconsider", "note": "Still right: the rollback is the fastest path."}),
    )
    .await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let (status, body) = op(
        &server,
        &alice,
        &id,
        json!({"op": "setHelp", "state": null, "person": "bob"}),
    )
    .await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let view = server.incident_json(&alice, &id).await;
    let checkins = &view["checkins"];
    ensure!(checkins["reconsiderations"] == 1, "{checkins}");
    ensure!(checkins["reconsidered"]["by"] == "alice", "{checkins}");
    ensure!(
        time(&checkins["reconsiderDueAt"])? > first_due,
        "{checkins}"
    );
    ensure!(checkins["help"]["bob"]["state"].is_null(), "{checkins}");
    let markdown = server.markdown(&alice, &id).await;
    ensure!(markdown.contains(
        "alice reconsidered the approach: Still right: the rollback is the fastest path."
    ));
    ensure!(markdown.contains("Help flag: alice cleared bob's flag."));
    let postmortem = String::from_utf8(server.export(&alice, &id, "postmortem").await)?;
    ensure!(
        postmortem.contains(
            "**Check-ins:** the approach was reconsidered 1 time; help flags were raised by bob (1)."
        ),
        "{postmortem}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_flag_reaches_webhook_receivers() -> anyhow::Result<()> {
    let receiver = Receiver::start().await;
    let url = receiver.url("/hook");
    let server = TestServer::start_with(move |config| {
        config.webhooks = vec![Endpoint {
            name: "pager".into(),
            url,
            secret: None,
            format: Format::Json,
            events: Some(vec!["helpFlag".into()]),
            drills: true,
            restricted: false,
        }];
        config.webhook_delivery = DeliverySettings {
            retry_initial_ms: 100,
            ..DeliverySettings::default()
        };
    })
    .await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;
    let (status, body) = op(
        &server,
        &bob,
        &id,
        json!({"op": "setHelp", "state": "help"}),
    )
    .await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let event = eventually("the helpFlag event", Duration::from_secs(20), || async {
        receiver
            .received()
            .into_iter()
            .map(|delivery| delivery.json())
            .find(|body| body["type"] == "helpFlag")
    })
    .await?;
    ensure!(
        event["data"]["person"] == "bob" && event["data"]["state"] == "help",
        "{event}"
    );
    ensure!(
        event["text"]
            .as_str()
            .is_some_and(|t| t.contains("bob needs help (Incident Commander: alice)")),
        "{event}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sync_writers_cannot_forge_flags_or_answers() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;
    let (status, body) = op(
        &server,
        &bob,
        &id,
        json!({"op": "setHelp", "state": "help"}),
    )
    .await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let before = server.incident_json(&alice, &id).await["checkins"].clone();

    // Mallory clears bob's flag, raises carol's and forges an answer to the prompt; alice, the commander, writes
    // the record raw too: the keys are the server's, whoever writes them.
    for (token, name) in [(&mallory, "mallory"), (&alice, "alice")] {
        let mut client = SyncClient::connect(&server.ws_url(token)).await?;
        client.set_author(name);
        client.open(&id).await?;
        client.raw_change(|doc| {
            let (_, help) = doc.get(automerge::ROOT, "help")?.expect("help");
            doc.delete(&help, "bob")?;
            let carol = doc.put_object(&help, "carol", automerge::ObjType::Map)?;
            doc.put(&carol, "state", "overloaded")?;
            let (_, checkins) = doc.get(automerge::ROOT, "checkins")?.expect("checkins");
            let last = doc.put_object(&checkins, "reconsidered", automerge::ObjType::Map)?;
            doc.put(&last, "by", "alice")?;
            doc.put(&last, "note", "forged")?;
            doc.put(&checkins, "reconsiderations", 9_i64)
        })?;
        client
            .sync_until_acknowledged(Duration::from_secs(10))
            .await?;
        client
            .sync_until(
                |c| {
                    let doc = c.incident().doc();
                    let Ok(Some((_, help))) = doc.get(automerge::ROOT, "help") else {
                        return false;
                    };
                    matches!(doc.get(&help, "bob"), Ok(Some(_)))
                        && matches!(doc.get(&help, "carol"), Ok(None))
                },
                Duration::from_secs(10),
            )
            .await
            .with_context(|| format!("the revert reaching {name}"))?;
        let view = server.incident_json(&alice, &id).await;
        ensure!(view["checkins"] == before, "{name}: {}", view["checkins"]);
        let audit = view["audit"].as_array().context("audit")?;
        ensure!(
            audit
                .iter()
                .any(|a| a["rule"] == "schema" && a["by"] == name),
            "{name}: {audit:?}"
        );
    }
    server.stop().await;
    Ok(())
}
