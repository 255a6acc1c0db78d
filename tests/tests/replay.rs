//! Replay drills end to end: a closed incident replayed into a new drill over HTTP (who may start and control it,
//! hostile inputs, the steps arriving once and in order, alerts recorded again, exports and the postmortem saying what
//! is replayed, the comparison), a raw `/sync` write to the server-owned `replay` key put back, a `kill -9` of the
//! real server mid-replay (every step still delivered once), and two PostgreSQL nodes delivering each step once.
//! (The page's facilitator bar is in `browser_replay.rs`; the authorization table in `auth.rs`.)

use std::time::Duration;

use anyhow::{Context, ensure};
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use chrono::{SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{SyncClient, TestDatabase, TestServer, eventually};

/// Generous: a loaded 2-core machine runs four builds beside the tests.
const DEADLINE: Duration = Duration::from_secs(90);

/// How many timeline entries [`closed_source`] writes: three entries, an alert firing and the close's entry.
const STEPS: usize = 5;

fn time_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A closed incident commanded by `token`'s person (`alice`): entries 20, 40 and 60 s of its time after the
/// declaration, an alert at 30 s, mitigated, closed with an override. Returns its id.
async fn closed_source(server: &TestServer, token: &str) -> anyhow::Result<String> {
    let id = server.declare(token, "Checkout errors").await.id;
    let ops = json!([
        {"op": "setText", "field": "summary", "text": "Checkout failed for a third of users."},
        {"op": "addTimelineEntry", "text": "step one: error rate up", "at": time_in(20)},
        {"op": "recordAlert", "fingerprint": "f00d", "firing": true, "startsAt": time_in(30),
         "text": "[FIRING] CheckoutErrors", "at": time_in(30)},
        {"op": "addTimelineEntry", "text": "step three: rolled back", "at": time_in(40)},
        {"op": "addTimelineEntry", "text": "step four: errors gone", "at": time_in(60)},
        {"op": "setStatus", "status": "mitigated"},
    ]);
    let response = server.operations(token, &id, ops).await;
    ensure!(
        response.status() == StatusCode::OK,
        "{:?}",
        response.text().await
    );
    let close =
        json!([{"op": "setStatus", "status": "closed", "overrideReason": "the source of a drill"}]);
    let response = server.operations(token, &id, close).await;
    ensure!(
        response.status() == StatusCode::OK,
        "{:?}",
        response.text().await
    );
    Ok(id)
}

/// Starts a replay of `source` at `speed` as `token`: the status and the answer.
async fn start(
    server: &TestServer,
    token: &str,
    source: &str,
    speed: Value,
) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/api/incidents/{source}/replay"),
            Some(token),
            Some(&json!({ "speed": speed })),
        )
        .await
}

/// The drill's replayed entries, oldest first.
async fn replayed(server: &TestServer, token: &str, drill: &str) -> Vec<String> {
    let view = server.incident_json(token, drill).await;
    let mut entries: Vec<(String, String)> = view["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"] == "timeline")
        .flat_map(|f| f["value"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            let text = e["text"].as_str()?.to_owned();
            text.contains("(replayed)")
                .then(|| (e["at"].as_str().unwrap_or_default().to_owned(), text))
        })
        .collect();
    entries.sort();
    entries.into_iter().map(|(_, text)| text).collect()
}

/// Polls the replay's status until `pred` holds.
async fn until(
    server: &TestServer,
    token: &str,
    drill: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    eventually(what, DEADLINE, || async {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/api/incidents/{drill}/replay"),
                Some(token),
                None,
            )
            .await;
        (status == StatusCode::OK && pred(&body)).then_some(body)
    })
    .await
}

/// Every step once, in the source's order, each naming its author: first the close's entry (written at once, so
/// at the declaration's time), then the entries dated ahead.
fn check_steps(entries: &[String]) -> anyhow::Result<()> {
    let expected = [
        "alice (replayed): step one: error rate up",
        "alice (replayed): [FIRING] CheckoutErrors",
        "alice (replayed): step three: rolled back",
        "alice (replayed): step four: errors gone",
    ];
    ensure!(
        entries.len() == STEPS,
        "{STEPS} steps once each: {entries:#?}"
    );
    ensure!(entries[0].starts_with("alice (replayed): "), "{entries:#?}");
    for (entry, want) in entries[1..].iter().zip(expected) {
        ensure!(entry == want, "in order: {entries:#?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_drill_delivers_every_step_once_and_compares() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let reader = server.token("rita", "read").await;
    let source = closed_source(&server, &alice).await?;
    let before = server.heads(&alice, &source).await;

    // Refusals, and nothing declared by them.
    let open = server.declare(&alice, "Still open").await.id;
    let (status, body) = start(&server, &alice, &open, json!(2)).await;
    ensure!(status == StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    ensure!(body["error"]["code"].is_string(), "{body}");
    for bad in [
        json!(0),
        json!(0.4),
        json!(100.5),
        json!(1.234),
        json!("fast"),
        json!(-1),
    ] {
        let (status, body) = start(&server, &alice, &source, bad.clone()).await;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {status} {body}"
        );
    }
    let (status, _) = start(&server, &bob, &source, json!(2)).await;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "not the commander: {status}"
    );
    let (status, _) = start(&server, &reader, &source, json!(2)).await;
    ensure!(status == StatusCode::FORBIDDEN, "a reader: {status}");
    let (status, _) = start(&server, &alice, "4NvkmZ6RbXr3KTzgtVUqsgsnLkeu", json!(2)).await;
    ensure!(status == StatusCode::NOT_FOUND, "unknown: {status}");
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/api/incidents/{open}/replay"),
            Some(&alice),
            None,
        )
        .await;
    ensure!(status == StatusCode::CONFLICT, "no replay: {status}");
    let list = server
        .call(Method::GET, "/api/incidents", Some(&alice), None)
        .await
        .1;
    ensure!(
        list["incidents"].as_array().map(Vec::len) == Some(2),
        "nothing declared: {list}"
    );

    let (status, started) = start(&server, &alice, &source, json!(100)).await;
    ensure!(status == StatusCode::CREATED, "{started}");
    let drill = started["id"].as_str().context("an id")?.to_owned();
    ensure!(started["steps"] == STEPS, "{started}");
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let title = started["title"].as_str().unwrap_or_default();
    ensure!(
        title.starts_with("Replay of #1: Checkout errors: ") && title.ends_with(&today),
        "marked as a replay, with today's date: {title}"
    );

    let done = until(&server, &bob, &drill, "the replay finishing", |s| {
        s["state"] == "finished"
    })
    .await?;
    ensure!(
        done["delivered"] == STEPS && done["total"] == STEPS,
        "{done}"
    );
    check_steps(&replayed(&server, &alice, &drill).await)?;
    let view = server.incident_json(&alice, &drill).await;
    ensure!(view["drill"] == true, "{view}");
    ensure!(
        view["replay"]["step"] == STEPS && view["replay"]["sourceNumber"] == 1,
        "{view}"
    );
    ensure!(view["replay"]["source"] == source.as_str(), "{view}");
    ensure!(
        view["createdBy"] == "alice",
        "the starter declared it: {view}"
    );
    // The alert was recorded as the hook records it.
    let doc = server.document(&alice, &drill).await;
    ensure!(doc.doc().get(ROOT, "alerts")?.is_some(), "the alert record");
    let markdown = server.markdown(&alice, &drill).await;
    ensure!(
        markdown.contains("replays incident #1 at ×100: 5 of 5"),
        "{markdown}"
    );
    let postmortem = String::from_utf8(server.export(&alice, &drill, "postmortem").await)?;
    ensure!(
        postmortem.contains("replays incident #1 at ×100"),
        "{postmortem}"
    );
    let list = server
        .call(Method::GET, "/api/incidents", Some(&alice), None)
        .await
        .1;
    ensure!(
        list["incidents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["id"] == drill.as_str() && i["drill"] == true),
        "listed as a drill: {list}"
    );
    ensure!(
        server.heads(&alice, &source).await == before,
        "the source is untouched"
    );

    // The drill team writes and mitigates; the comparison sets both side by side.
    let ops = json!([
        {"op": "setText", "field": "summary", "text": "Checkout down for some."},
        {"op": "setText", "field": "detailedStatus", "text": "Rolled back."},
        {"op": "setStatus", "status": "mitigated"},
    ]);
    let response = server.operations(&alice, &drill, ops).await;
    ensure!(
        response.status() == StatusCode::OK,
        "{:?}",
        response.text().await
    );
    let (status, comparison) = server
        .call(
            Method::GET,
            &format!("/api/incidents/{drill}/replay/compare"),
            Some(&reader),
            None,
        )
        .await;
    ensure!(status == StatusCode::OK, "{comparison}");
    ensure!(
        comparison["original"]["summary"] == "Checkout failed for a third of users.",
        "{comparison}"
    );
    ensure!(
        comparison["drill"]["summary"] == "Checkout down for some.",
        "{comparison}"
    );
    ensure!(
        comparison["drill"]["detailedStatus"] == "Rolled back.",
        "{comparison}"
    );
    ensure!(
        comparison["original"]["commanders"] == json!(["alice"]),
        "{comparison}"
    );
    ensure!(
        comparison["drill"]["declaredToMitigatedSeconds"].is_i64(),
        "{comparison}"
    );
    ensure!(
        comparison["original"]["declaredToMitigatedSeconds"].is_i64(),
        "{comparison}"
    );

    // A finished replay takes no control; a stranger controls nothing.
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/incidents/{drill}/replay/pause"),
            Some(&alice),
            None,
        )
        .await;
    ensure!(status == StatusCode::CONFLICT, "{status}");
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/incidents/{drill}/replay/pause"),
            Some(&bob),
            None,
        )
        .await;
    ensure!(status == StatusCode::FORBIDDEN, "{status}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facilitator_pauses_resumes_and_jumps() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let source = closed_source(&server, &alice).await?;
    // Half speed: after the close's entry (at once), the next step is 40 s away, so nothing more comes unless the
    // facilitator jumps.
    let (status, started) = start(&server, &server.admin_token, &source, json!(0.5)).await;
    ensure!(
        status == StatusCode::CREATED,
        "an admin starts it too: {started}"
    );
    let drill = started["id"].as_str().context("an id")?.to_owned();
    until(&server, &alice, &drill, "the first step", |s| {
        s["delivered"] == 1
    })
    .await?;
    let call = |path: &'static str, token: String, body: Option<Value>| {
        let server = &server;
        let drill = drill.clone();
        async move {
            server
                .call(
                    Method::POST,
                    &format!("/api/incidents/{drill}/replay/{path}"),
                    Some(&token),
                    body.as_ref(),
                )
                .await
        }
    };
    let admin = server.admin_token.clone();
    let (status, _) = call("pause", bob.clone(), None).await;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "only the facilitator: {status}"
    );
    let (status, paused) = call("pause", admin.clone(), None).await;
    ensure!(
        status == StatusCode::OK && paused["state"] == "paused",
        "{paused}"
    );
    ensure!(paused["nextDueAt"].is_null(), "{paused}");
    let (status, body) = call("pause", admin.clone(), None).await;
    ensure!(status == StatusCode::CONFLICT, "paused twice: {body}");
    ensure!(body["error"]["code"] == "conflict", "{body}");
    let (status, running) = call("resume", admin.clone(), None).await;
    ensure!(
        status == StatusCode::OK && running["state"] == "running",
        "{running}"
    );
    ensure!(running["nextDueAt"].is_string(), "{running}");
    let (status, _) = call("resume", admin.clone(), None).await;
    ensure!(status == StatusCode::CONFLICT, "running twice");
    for bad in [
        json!({"seconds": 0}),
        json!({"seconds": -5}),
        json!({"seconds": "x"}),
        json!({"to": 1}),
    ] {
        let (status, body) = call("jump", admin.clone(), Some(bad.clone())).await;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{bad}: {status} {body}"
        );
    }
    let (status, jumped) = call("jump", admin.clone(), Some(json!({}))).await;
    ensure!(status == StatusCode::OK, "{jumped}");
    until(
        &server,
        &alice,
        &drill,
        "the next step after the jump",
        |s| s["delivered"] == 2,
    )
    .await?;
    ensure!(
        replayed(&server, &alice, &drill).await.len() == 2,
        "one step more only"
    );
    let (status, _) = call("jump", admin.clone(), Some(json!({"seconds": 3600}))).await;
    ensure!(status == StatusCode::OK);
    until(&server, &alice, &drill, "the rest after the jump", |s| {
        s["state"] == "finished"
    })
    .await?;
    check_steps(&replayed(&server, &alice, &drill).await)?;
    server.stop().await;
    Ok(())
}

/// The players close the drill before the replay is over: the next step is refused (a closed incident is an
/// archive) and the replay finishes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_drill_ends_its_replay() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let source = closed_source(&server, &alice).await?;
    let (_, started) = start(&server, &alice, &source, json!(0.5)).await;
    let drill = started["id"].as_str().context("an id")?.to_owned();
    until(&server, &alice, &drill, "the first step", |s| {
        s["delivered"] == 1
    })
    .await?;
    let close = json!([{"op": "setStatus", "status": "closed", "overrideReason": "debrief early"}]);
    let response = server.operations(&alice, &drill, close).await;
    ensure!(
        response.status() == StatusCode::OK,
        "{:?}",
        response.text().await
    );
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/incidents/{drill}/replay/jump"),
            Some(&alice),
            Some(&json!({})),
        )
        .await;
    ensure!(status == StatusCode::OK);
    let done = until(&server, &alice, &drill, "the replay ending", |s| {
        s["state"] == "finished"
    })
    .await?;
    ensure!(done["delivered"] == 1, "nothing after the close: {done}");
    ensure!(replayed(&server, &alice, &drill).await.len() == 1);
    server.stop().await;
    Ok(())
}

/// What only the server writes stays the server's: a raw `/sync` change of `replay` (by a player, the drill's
/// commander too) is put back, and the typed operations are refused over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_cannot_forge_the_replay() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let source = closed_source(&server, &alice).await?;
    let (_, started) = start(&server, &alice, &source, json!(0.5)).await;
    let drill = started["id"].as_str().context("an id")?.to_owned();

    let mut client = SyncClient::connect(&server.ws_url(&alice)).await?;
    client.set_author("alice");
    client.open(&drill).await?;
    client.raw_change(|doc| {
        let replay = doc.put_object(ROOT, "replay", ObjType::Map)?;
        doc.put(&replay, "source", "forged")?;
        doc.put(&replay, "speedCenti", 10_000_i64)?;
        doc.put(&replay, "step", 4_i64)?;
        doc.put(&replay, "total", 5_i64)?;
        Ok(())
    })?;
    client.sync_until_acknowledged(DEADLINE).await?;
    eventually("the forged replay put back", DEADLINE, || async {
        let view = server.incident_json(&alice, &drill).await;
        let replay = &view["replay"];
        (replay["source"] == source.as_str()
            && replay["speed"] == 0.5
            && replay["step"].as_i64() < Some(4))
        .then_some(())
    })
    .await?;
    let view = server.incident_json(&alice, &drill).await;
    ensure!(
        view["audit"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["rule"] == "schema")),
        "audited: {view}"
    );
    for op in [
        json!({"op": "deliverReplayStep", "step": 1, "entry": {"offsetMs": 0, "author": "x", "text": "forged"}}),
        json!({"op": "beginReplay", "source": "x", "speed": 2, "total": 1}),
    ] {
        let response = server.operations(&alice, &drill, json!([op])).await;
        ensure!(
            response.status() == StatusCode::FORBIDDEN,
            "{op}: {}",
            response.status()
        );
    }
    let entries = replayed(&server, &alice, &drill).await;
    ensure!(
        !entries.iter().any(|e| e.contains("forged")),
        "nothing forged: {entries:#?}"
    );
    server.stop().await;
    Ok(())
}

/// The real server killed mid-replay and started again: the replay carries on where it was and every step lands
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_survives_kill_9() -> anyhow::Result<()> {
    let mut server = TestServer::start_process().await;
    let alice = server.token("alice", "write").await;
    let source = closed_source(&server, &alice).await?;
    // ×4: steps at 5, 7.5, 10, 15 s and the close after.
    let (status, started) = start(&server, &alice, &source, json!(4)).await;
    ensure!(status == StatusCode::CREATED, "{started}");
    let drill = started["id"].as_str().context("an id")?.to_owned();
    until(&server, &alice, &drill, "two steps", |s| {
        s["delivered"].as_i64() >= Some(2)
    })
    .await?;
    server.kill9();
    server.restart().await;
    until(
        &server,
        &alice,
        &drill,
        "the replay finishing after the restart",
        |s| s["state"] == "finished",
    )
    .await?;
    check_steps(&replayed(&server, &alice, &drill).await)?;
    server.stop_process().await;
    Ok(())
}

/// Two PostgreSQL nodes run the scheduler; whichever holds the lease delivers, and each step lands once, also when
/// the holder is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_deliver_each_step_once() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let config = format!("database-url = \"{}\"\n", db.url());
    let mut node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    let source = closed_source(&node1, &alice).await?;
    let mut drills = Vec::new();
    for node in [&node1, &node2] {
        let (status, started) = start(node, &alice, &source, json!(4)).await;
        ensure!(status == StatusCode::CREATED, "{started}");
        drills.push(started["id"].as_str().context("an id")?.to_owned());
    }
    until(&node2, &alice, &drills[0], "a first step", |s| {
        s["delivered"].as_i64() >= Some(1)
    })
    .await?;
    node1.kill9();
    for drill in &drills {
        until(
            &node2,
            &alice,
            drill,
            "the replay finishing on the other node",
            |s| s["state"] == "finished",
        )
        .await?;
        check_steps(&replayed(&node2, &alice, drill).await)?;
    }
    node1.restart().await;
    for drill in &drills {
        check_steps(&replayed(&node1, &alice, drill).await)?;
    }
    Ok(())
}
