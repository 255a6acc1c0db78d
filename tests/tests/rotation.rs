//! Role rotation on a real server: a person's roles across incidents (`GET /api/people/{name}/roles`, real
//! incidents and drills apart, from the role intervals of each incident's history), the people present ranked for
//! command (`GET /api/people/rotation`: never commanded first, then the longest ago, with the reason), restricted
//! incidents counted only for those who may see them, and bad input refused with our error body.

use anyhow::{Context, ensure};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::TestServer;

/// Declares `title` from `template` as `token`; returns the id.
async fn declare(server: &TestServer, token: &str, title: &str, template: &str) -> String {
    let (status, answer) = server
        .call(
            Method::POST,
            "/api/incidents",
            Some(token),
            Some(&json!({"title": title, "template": template})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "declaring {title}: {answer}");
    answer["id"].as_str().expect("an id").to_owned()
}

async fn get(server: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    server.call(Method::GET, path, Some(token), None).await
}

/// The names in ranking order.
fn order(rotation: &Value) -> Vec<String> {
    rotation["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["person"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_per_person_and_the_rotation_for_command() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let carol = server.token("carol", "write").await;
    let dave = server.token("dave", "write").await;
    let erin = server.token("erin", "read").await;

    // Alice commanded an incident that is closed; bob commands one now, with carol as Operations lead; carol
    // commanded a drill only; dave commands a restricted incident erin may not see.
    let first = declare(&server, &alice, "Checkout errors", "incident").await;
    let response = server
        .operations(
            &alice,
            &first,
            json!([{"op": "setStatus", "status": "closed", "overrideReason": "test"}]),
        )
        .await;
    ensure!(response.status().is_success(), "{}", response.status());
    let second = declare(&server, &bob, "Login latency", "incident").await;
    let response = server
        .operations(
            &bob,
            &second,
            json!([{"op": "assignRole", "role": "operations", "person": "carol"}]),
        )
        .await;
    ensure!(response.status().is_success(), "{}", response.status());
    declare(&server, &carol, "Game day", "drill").await;
    declare(&server, &dave, "Leaked key", "security").await;

    let (status, carol_roles) = get(&server, &erin, "/api/people/carol/roles").await;
    ensure!(status == StatusCode::OK, "{status} {carol_roles}");
    let real = &carol_roles["incidents"];
    ensure!(
        real["roles"].as_array().map(Vec::len) == Some(1)
            && real["roles"][0]["role"] == "operations"
            && real["roles"][0]["incidents"] == 1,
        "{carol_roles}"
    );
    ensure!(real["held"][0]["id"] == second.as_str(), "{carol_roles}");
    ensure!(
        carol_roles["drills"]["roles"][0]["role"] == "commander",
        "{carol_roles}"
    );

    // Ranked: erin and carol never commanded a real incident (carol did a drill), then alice (her incident is
    // closed), then bob (commanding now).
    let (status, rotation) = get(
        &server,
        &erin,
        "/api/people/rotation?present=bob,alice,carol,erin,bob",
    )
    .await;
    ensure!(status == StatusCode::OK, "{status} {rotation}");
    ensure!(
        order(&rotation) == ["carol", "erin", "alice", "bob"],
        "{rotation}"
    );
    let reasons: Vec<&str> = rotation["candidates"]
        .as_array()
        .context("candidates")?
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    ensure!(
        reasons[0] == "has not commanded an incident (and 1 drill)",
        "{reasons:?}"
    );
    ensure!(
        reasons[2].starts_with("last commanded #1 Checkout errors"),
        "{reasons:?}"
    );

    // Dave's restricted incident counts for those who may see it, and for nobody else.
    let (_, seen_by_erin) = get(&server, &erin, "/api/people/dave/roles").await;
    ensure!(
        seen_by_erin["incidents"]["held"].as_array().map(Vec::len) == Some(0),
        "{seen_by_erin}"
    );
    let (_, ranked_by_erin) = get(&server, &erin, "/api/people/rotation?present=dave").await;
    ensure!(
        ranked_by_erin["candidates"][0]["commanded"] == 0,
        "{ranked_by_erin}"
    );
    for token in [&dave, &server.admin_token] {
        let (_, seen) = get(&server, token, "/api/people/dave/roles").await;
        ensure!(
            seen["incidents"]["held"].as_array().map(Vec::len) == Some(1),
            "{seen}"
        );
        let (_, ranked) = get(&server, token, "/api/people/rotation?present=dave").await;
        ensure!(ranked["candidates"][0]["commanded"] == 1, "{ranked}");
    }

    // Without a list, the people connected to the server are considered.
    let mut client = tests::SyncClient::connect(&server.ws_url(&alice)).await?;
    client.open(&second).await?;
    let (status, rotation) = get(&server, &erin, "/api/people/rotation").await;
    ensure!(status == StatusCode::OK, "{status} {rotation}");
    ensure!(rotation["present"] == json!(["alice"]), "{rotation}");

    // Bad input: our error body, with a status that says what is wrong.
    let long = "x".repeat(201);
    for path in [
        format!("/api/people/rotation?present={long}"),
        format!("/api/people/{long}/roles"),
        "/api/people/rotation?present=a&surprise=1".to_owned(),
    ] {
        let (status, answer) = get(&server, &erin, &path).await;
        ensure!(status.is_client_error(), "{path}: {status}");
        ensure!(answer["error"]["code"].is_string(), "{path}: {answer}");
    }
    let (status, _) = server
        .call(Method::GET, "/api/people/rotation", None, None)
        .await;
    ensure!(status == StatusCode::UNAUTHORIZED, "{status}");
    server.stop().await;
    Ok(())
}
