//! The Communications lead's status update over HTTP: `GET …/update?format=text|markdown`, "mark as sent" (timeline
//! entry, cadence restarted, the next update saying what changed since), drills marked, errors in our format. The
//! exact text is pinned by the golden files of `incident-doc/tests/model.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::TestServer;

async fn update(
    server: &TestServer,
    token: &str,
    id: &str,
    format: &str,
) -> (StatusCode, String, String) {
    let response = server
        .request(
            Method::GET,
            &format!("/api/incidents/{id}/update?format={format}"),
            Some(token),
        )
        .send()
        .await
        .expect("GET …/update");
    let status = response.status();
    let heads = response
        .headers()
        .get("commandpost-heads")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, heads, response.text().await.unwrap_or_default())
}

async fn mark_sent(server: &TestServer, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    let path = format!("/api/incidents/{id}/update/sent");
    server
        .call(Method::POST, &path, Some(token), Some(&body))
        .await
}

fn field<'a>(view: &'a Value, key: &str) -> &'a Value {
    view["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == key))
        .expect("field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_rendered_marked_sent_and_followed_by_what_changed() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let erin = server.token("erin", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    let id = incident.id.as_str();
    let response = server
        .operations(&alice, id, json!([
            {"op": "setText", "field": "summary", "text": "Checkout fails for 30% of EU customers."},
            {"op": "setText", "field": "commandPost", "text": "- Chat: [#inc-checkout](https://chat.example.com/inc-checkout)"},
            {"op": "assignRole", "role": "communications", "person": "erin"},
        ]))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let (status, heads, text) = update(&server, &erin, id, "text").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("Checkout errors"), "{text}");
    assert!(
        text.contains("Summary:\nCheckout fails for 30% of EU customers."),
        "{text}"
    );
    assert!(
        text.contains("Commander: alice\nCommunications: erin"),
        "{text}"
    );
    assert!(text.contains("Since the incident was declared:"), "{text}");
    assert!(
        text.contains("https://chat.example.com/inc-checkout"),
        "{text}"
    );
    assert!(text.contains("Next update due: "), "{text}");
    let (status, _, markdown) = update(&server, &erin, id, "markdown").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        markdown.contains("### Summary") && markdown.contains("**Commander:** alice"),
        "{markdown}"
    );

    let before = server.incident_json(&erin, id).await;
    let heads: Vec<&str> = heads.split(',').collect();
    let (status, body) = mark_sent(
        &server,
        &erin,
        id,
        json!({"heads": heads, "note": "to exec-updates@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let after = server.incident_json(&erin, id).await;
    let timeline = field(&after, "timeline")["value"]
        .as_array()
        .expect("entries")
        .clone();
    assert!(
        timeline.iter().any(|e| e["author"] == "erin"
            && e["text"] == "Status update sent: to exec-updates@example.com")
    );
    for key in ["summary", "detailedStatus"] {
        let (was, is) = (
            field(&before, key)["dueAt"].as_str(),
            field(&after, key)["dueAt"].as_str(),
        );
        assert!(is > was, "{key}'s cadence restarts: {was:?} → {is:?}");
        // Without claiming erin edited the field: its stamp still names who did.
        assert_eq!(
            field(&after, key)["updated"],
            field(&before, key)["updated"]
        );
    }

    let response = server
        .operations(
            &alice,
            id,
            json!([
                {"op": "setStatus", "status": "active"},
                {"op": "setChoice", "field": "severity", "value": "SEV2"},
                {"op": "addTimelineEntry", "text": "Rolled back the payments client."},
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, _, text) = update(&server, &erin, id, "text").await;
    assert!(text.contains("Changes since the last update ("), "{text}");
    assert!(
        text.contains("- Status: Declared → Active\n- Severity: SEV3 → SEV2\n"),
        "{text}"
    );
    assert!(
        text.contains("alice: Rolled back the payments client."),
        "{text}"
    );
    assert!(!text.contains("Status update sent"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_are_marked_in_updates_and_bad_requests_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let viewer = server.token("viewer", "read").await;
    let response = server
        .request(Method::POST, "/api/incidents", Some(&alice))
        .json(&json!({"title": "Replay of the 2025 DNS outage", "template": "drill"}))
        .send()
        .await
        .expect("declare");
    assert_eq!(response.status(), StatusCode::CREATED);
    let drill: Value = response.json().await.expect("json");
    let id = drill["id"].as_str().expect("id");
    let (status, _, text) = update(&server, &viewer, id, "text").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("[DRILL] "), "{text}");
    assert!(text.contains("This is a drill"), "{text}");
    let list: Value = server
        .request(Method::GET, "/api/incidents", Some(&viewer))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        list["incidents"][0]["drill"], true,
        "the list marks drills: {list}"
    );

    let before = server.incident_json(&alice, id).await;
    let (status, _, body) = update(&server, &viewer, id, "pdf").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let cases = [
        (&viewer, json!({}), StatusCode::FORBIDDEN),
        (
            &alice,
            json!({"heads": ["nothex"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &alice,
            json!({"heads": ["00".repeat(32)]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &alice,
            json!({"when": "now"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (token, body, expected) in cases {
        let (status, answer) = mark_sent(&server, token, id, body.clone()).await;
        assert_eq!(status, expected, "{body} → {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    let (status, _) = mark_sent(&server, &alice, "no-such-incident", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.incident_json(&alice, id).await,
        before,
        "nothing changed"
    );
}
