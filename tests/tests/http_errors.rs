//! How the HTTP API refuses bad requests: malformed JSON is a 400; well-formed JSON of the wrong shape, and any value a
//! route does not take wherever it is (an unknown export format, status, severity, template or role, a bad time, a
//! number out of range) a 422; a body over the limit a 413, an unknown id a 404, and an operation the document model
//! refuses a 422 that leaves the document exactly as it was (a batch of operations is all or nothing); a body that is
//! a JSON array, not an object, is a 422. Every refusal carries the `{"error": {"code", "message"}}` body.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestServer, markdown_section};

/// The body limit of the server under test: small, so an oversized body is cheap to send.
const MAX_BODY: usize = 4096;

/// Sends `body` as the raw bytes of a JSON request.
async fn post_raw(
    server: &TestServer,
    token: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = server
        .request(Method::POST, path, Some(token))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    answer(response).await
}

/// The status and JSON body of a response.
async fn answer(response: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text)
        .with_context(|| format!("{status}: body is not JSON: {text:?}"))?;
    Ok((status, body))
}

/// Checks a refusal: the status, the error code, and a message for people.
fn refused(
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    what: &str,
) -> anyhow::Result<()> {
    let (got_status, body) = got;
    anyhow::ensure!(
        *got_status == status,
        "{what}: {got_status}, expected {status}: {body}"
    );
    anyhow::ensure!(
        body["error"]["code"] == code,
        "{what}: code {code} expected in {body}"
    );
    anyhow::ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: a message in {body}"
    );
    Ok(())
}

/// How many incidents `GET /api/incidents` lists.
async fn incident_count(server: &TestServer, token: &str) -> anyhow::Result<usize> {
    let list: Value = server
        .request(Method::GET, "/api/incidents", Some(token))
        .send()
        .await?
        .json()
        .await?;
    list["incidents"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("no incident list in {list}"))
}

async fn server_with_incident() -> (TestServer, String, String) {
    let server = TestServer::start_with(|config| config.max_body_bytes = MAX_BODY).await;
    let token = server.token("editor", "write").await;
    let id = server.declare(&token, "Checkout errors").await.id;
    (server, token, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_400_and_the_wrong_shape_a_422() -> anyhow::Result<()> {
    let (server, token, id) = server_with_incident().await;
    let timeline = format!("/api/incidents/{id}/timeline");
    let sent = format!("/api/incidents/{id}/update/sent");
    for (path, body, status, code) in [
        (
            "/api/incidents",
            r#"{"title": "#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/incidents",
            "not json at all",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/incidents",
            r#"{"title": "a"} trailing"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/incidents",
            r#"{"title": 5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "/api/incidents",
            r#"{}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "/api/incidents",
            r#"[]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        // serde reads a struct from an array, field by field in order: every body is an object (this one was
        // declared as incident "Array", and `[]` below marked an update sent).
        (
            "/api/incidents",
            r#"["incident", "Array"]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            &sent,
            r#"[]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "/api/incidents",
            r#"{"title": "x", "colour": "red"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "/api/incidents",
            r#"{"title": "x", "secondTeam": "yes"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            &timeline,
            r#"{"text": ["a"]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            &timeline,
            r#"{"text": "a", "at": "yesterday"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "/api/tokens",
            r#"{"name": "x", "scope": 3}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
    ] {
        let token = if path == "/api/tokens" {
            &server.admin_token
        } else {
            &token
        };
        let got = post_raw(&server, token, path, body).await?;
        refused(&got, status, code, &format!("POST {path} {body}"))?;
    }
    // A JSON body needs its content type.
    let response = server
        .request(Method::POST, "/api/incidents", Some(&token))
        .body(r#"{"title": "x"}"#)
        .send()
        .await?;
    refused(
        &answer(response).await?,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "no Content-Type",
    )?;
    // Nothing above declared an incident.
    let count = incident_count(&server, &token).await?;
    anyhow::ensure!(count == 1, "{count} incidents");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_a_413_and_changes_nothing() -> anyhow::Result<()> {
    let (server, token, id) = server_with_incident().await;
    let before = server.heads(&token, &id).await;
    let text = "x".repeat(MAX_BODY + 1);
    let response = server
        .request(
            Method::POST,
            &format!("/api/incidents/{id}/timeline"),
            Some(&token),
        )
        .json(&json!({ "text": text }))
        .send()
        .await?;
    let got = answer(response).await?;
    refused(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "oversized timeline entry",
    )?;
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    anyhow::ensure!(
        message.contains(&MAX_BODY.to_string()),
        "the message tells the limit: {message:?}"
    );
    anyhow::ensure!(
        server.heads(&token, &id).await == before,
        "the document is unchanged"
    );
    // Just under the limit is fine.
    let fits = "y".repeat(MAX_BODY - 100);
    server.append_timeline(&token, &id, &fits).await;
    // A template's Markdown is not JSON, and is refused the same way (it was axum's plain text).
    let response = server
        .request(
            Method::PUT,
            "/api/templates/oversized",
            Some(&server.admin_token),
        )
        .header("Content-Type", "text/markdown")
        .body(format!("# Oversized\n\n{text}"))
        .send()
        .await?;
    refused(
        &answer(response).await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "oversized template",
    )?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_routes_formats_and_templates_are_refused() -> anyhow::Result<()> {
    let (server, token, id) = server_with_incident().await;
    let get = |path: String| {
        let request = server.request(Method::GET, &path, Some(&token));
        async move { answer(request.send().await?).await }
    };
    refused(
        &get("/api/incidents/not-an-id".into()).await?,
        StatusCode::NOT_FOUND,
        "not_found",
        "bad id",
    )?;
    refused(
        &get("/api/nothing-here".into()).await?,
        StatusCode::NOT_FOUND,
        "not_found",
        "unknown route",
    )?;
    // /sync opened as a web page answers in the API's JSON, as every other mistake does, naming the protocol.
    for token in [Some(token.as_str()), None] {
        let response = server.request(Method::GET, "/sync", token).send().await?;
        let upgrade = response.headers().get("upgrade").cloned();
        refused(
            &answer(response).await?,
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "/sync without a WebSocket",
        )?;
        anyhow::ensure!(
            upgrade.is_some_and(|u| u == "websocket"),
            "a 426 names the protocol to switch to"
        );
    }
    for (path, what) in [
        (
            format!("/api/incidents/{id}/export?format=pdf"),
            "unknown export format",
        ),
        (
            format!("/api/incidents/{id}/export?colour=red"),
            "unknown export parameter",
        ),
        (
            "/api/incidents?status=exploded".into(),
            "unknown status filter",
        ),
        (
            "/api/incidents?severity=SEV9".into(),
            "unknown severity filter",
        ),
        ("/api/incidents?limit=many".into(), "non-numeric limit"),
        (
            "/api/analytics/incidents?template=nosuch".into(),
            "unknown template filter",
        ),
    ] {
        refused(
            &get(path).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            what,
        )?;
    }
    // A known severity that no incident has is an empty list, not a refusal.
    let sev1 = get("/api/incidents?severity=SEV1".into()).await?;
    anyhow::ensure!(sev1.0 == StatusCode::OK, "a known severity: {sev1:?}");
    for (body, what) in [
        (
            json!({"title": "x", "template": "no-such-template"}),
            "unknown template",
        ),
        (json!({"title": "  "}), "blank title"),
        (json!({"title": "two\nlines"}), "title of two lines"),
        (
            json!({"title": "x", "severity": "SEV99"}),
            "unknown severity",
        ),
    ] {
        let response = server
            .request(Method::POST, "/api/incidents", Some(&token))
            .json(&body)
            .send()
            .await?;
        refused(
            &answer(response).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            what,
        )?;
    }
    for (body, what) in [
        (json!({"name": "x", "scope": "root"}), "unknown scope"),
        (
            json!({"name": "has spaces", "scope": "read"}),
            "bad token name",
        ),
    ] {
        let response = server
            .request(Method::POST, "/api/tokens", Some(&server.admin_token))
            .json(&body)
            .send()
            .await?;
        refused(
            &answer(response).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            what,
        )?;
    }
    // Every known format works, for contrast.
    for format in ["markdown", "html", "json", "automerge"] {
        let response = server
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/export?format={format}"),
                Some(&token),
            )
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "{format}: {}",
            response.status()
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_the_model_refuses_are_a_422_and_change_nothing() -> anyhow::Result<()> {
    let (server, token, id) = server_with_incident().await;
    let seeded = server
        .operations(
            &token,
            &id,
            json!([{"op": "setText", "field": "summary", "text": "Before."}]),
        )
        .await;
    anyhow::ensure!(
        seeded.status() == StatusCode::OK,
        "seeding: {}",
        seeded.status()
    );
    let heads = server.heads(&token, &id).await;
    let markdown = server.markdown(&token, &id).await;

    for (operations, what) in [
        (
            json!([{"op": "setText", "field": "noSuchField", "text": "x"}]),
            "unknown field",
        ),
        (
            json!([{"op": "setChoice", "field": "summary", "value": "SEV1"}]),
            "wrong kind of field",
        ),
        (
            json!([{"op": "setChoice", "field": "severity", "value": "SEV99"}]),
            "unknown option",
        ),
        (
            json!([{"op": "spliceText", "field": "summary", "pos": 1000, "insert": "x"}]),
            "position past the end",
        ),
        (
            json!([{"op": "spliceText", "field": "todos", "item": "1@00", "pos": 0, "insert": "x"}]),
            "an item that does not exist",
        ),
        (
            json!([{"op": "spliceText", "field": "summary", "item": "1@00", "pos": 0, "insert": "x"}]),
            "an item of a field that is not a checklist",
        ),
        (
            json!([{"op": "editTimelineEntry", "id": "no-such-entry", "text": "x"}]),
            "unknown timeline entry",
        ),
        (
            json!([{"op": "addTimelineEntry", "text": ""}]),
            "empty timeline entry",
        ),
        (
            json!([
                {"op": "setText", "field": "summary", "text": "After."},
                {"op": "setChoice", "field": "severity", "value": "SEV1"},
                {"op": "setChoice", "field": "severity", "value": "SEV99"}
            ]),
            "a batch whose last operation is refused",
        ),
    ] {
        let got = answer(server.operations(&token, &id, operations).await).await?;
        refused(
            &got,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            what,
        )?;
        anyhow::ensure!(
            server.heads(&token, &id).await == heads,
            "{what}: the document changed"
        );
    }
    // Operations that are not operations at all, and an empty list, are 422s.
    let got = answer(
        server
            .operations(&token, &id, json!([{"op": "launchMissiles"}]))
            .await,
    )
    .await?;
    refused(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        "unknown operation",
    )?;
    let got = answer(server.operations(&token, &id, json!([])).await).await?;
    refused(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        "no operations",
    )?;

    anyhow::ensure!(
        server.heads(&token, &id).await == heads,
        "the document is unchanged"
    );
    let after = server.markdown(&token, &id).await;
    anyhow::ensure!(
        markdown_section(&after, "Summary") == Some("Before.".to_owned()) && after == markdown,
        "the export is unchanged:\n{after}"
    );
    server.stop().await;
    Ok(())
}

/// One hostile request of the battery: method, path, body (raw bytes sent as JSON, or none) and the statuses that
/// are a clear answer to it.
struct Hostile {
    method: Method,
    path: String,
    body: Option<String>,
    expect: &'static [StatusCode],
}

/// The battery: every JSON route fed broken, mistyped, empty, wrongly shaped and oversized bodies; the export's `at=`
/// and `format=` and the other query parameters fed nonsense; every incident route fed ids that are not ids.
fn hostile_requests(id: &str) -> Vec<Hostile> {
    const BAD: &[StatusCode] = &[StatusCode::BAD_REQUEST];
    const WRONG_SHAPE: &[StatusCode] = &[StatusCode::UNPROCESSABLE_ENTITY];
    const TOO_LARGE: &[StatusCode] = &[StatusCode::PAYLOAD_TOO_LARGE];
    const NOT_FOUND: &[StatusCode] = &[StatusCode::NOT_FOUND];
    let json_routes = [
        (Method::POST, "/api/incidents".to_owned()),
        (Method::POST, format!("/api/incidents/{id}/timeline")),
        (Method::POST, format!("/api/incidents/{id}/operations")),
        (Method::PUT, format!("/api/incidents/{id}/roles/operations")),
        (Method::POST, format!("/api/incidents/{id}/handoffs")),
        (Method::POST, format!("/api/incidents/{id}/handoffs/accept")),
        (Method::PUT, format!("/api/incidents/{id}/pins")),
        (Method::POST, format!("/api/incidents/{id}/reopen")),
        (Method::POST, "/api/tokens".to_owned()),
    ];
    let every_key_mistyped = r#"{"title": 5, "text": 5, "operations": 5, "person": 5, "role": 5, "to": 5,
        "fields": 5, "reason": 5, "name": 5, "scope": 5}"#;
    let bodies: [(String, &'static [StatusCode]); 9] = [
        ("{".into(), BAD),
        ("not json".into(), BAD),
        (String::new(), BAD),
        ("\u{0}\u{1}\u{2}".into(), BAD),
        (r#"{"unterminated"#.into(), BAD),
        ("[]".into(), WRONG_SHAPE),
        ("42".into(), WRONG_SHAPE),
        (every_key_mistyped.into(), WRONG_SHAPE),
        (
            format!(r#"{{"text": "{}"}}"#, "x".repeat(MAX_BODY)),
            TOO_LARGE,
        ),
    ];
    let mut requests = Vec::new();
    for (method, path) in &json_routes {
        for (body, expect) in &bodies {
            requests.push(Hostile {
                method: method.clone(),
                path: path.clone(),
                body: Some(body.clone()),
                expect,
            });
        }
    }
    let get = |path: String, expect: &'static [StatusCode]| Hostile {
        method: Method::GET,
        path,
        body: None,
        expect,
    };
    for at in [
        "yesterday",
        "2026-13-45T00:00:00Z",
        "",
        "99999999999999999999",
        "2026-11-25 10:00",
        "2026-11-25T10:00:00",
        "%00",
        "-1",
        "%F0%9F%99%82",
    ] {
        requests.push(get(
            format!("/api/incidents/{id}/export?format=json&at={at}"),
            WRONG_SHAPE,
        ));
    }
    // A well-formed time before the incident existed is a clear 422.
    requests.push(get(
        format!("/api/incidents/{id}/export?format=json&at=1970-01-01T00:00:00Z"),
        WRONG_SHAPE,
    ));
    for format in [
        "pdf",
        "PDF",
        "",
        "markdown%00",
        "..%2F..%2Fetc%2Fpasswd",
        "html,json",
        &"x".repeat(2000),
    ] {
        requests.push(get(
            format!("/api/incidents/{id}/export?format={format}"),
            WRONG_SHAPE,
        ));
    }
    for query in [
        format!("/api/incidents/{id}/history?limit=-1"),
        format!("/api/incidents/{id}/history?offset=abc"),
        format!("/api/incidents/{id}/history?limit=1&limit=2"),
        "/api/incidents?limit=-5".to_owned(),
        "/api/incidents?severity=1&severity=2&unknown=3".to_owned(),
        "/api/analytics/incidents?format=xlsx".to_owned(),
        "/api/analytics/incidents?from=garbage".to_owned(),
        "/api/analytics/incidents?include_drills=maybe".to_owned(),
    ] {
        requests.push(get(query, WRONG_SHAPE));
    }
    for bad_id in [
        "not-an-id",
        "..",
        "%2e%2e",
        "%00",
        "automerge:",
        "%F0%9F%99%82",
        &"z".repeat(300),
        &format!("{id}x"),
    ] {
        for path in [
            format!("/api/incidents/{bad_id}"),
            format!("/api/incidents/{bad_id}/export?format=html"),
            format!("/api/incidents/{bad_id}/history"),
        ] {
            requests.push(get(path, NOT_FOUND));
        }
        requests.push(Hostile {
            method: Method::POST,
            path: format!("/api/incidents/{bad_id}/timeline"),
            body: Some(r#"{"text": "x"}"#.into()),
            expect: NOT_FOUND,
        });
    }
    // Methods a route does not take, and paths no route has.
    const NOT_ALLOWED: &[StatusCode] = &[StatusCode::METHOD_NOT_ALLOWED];
    let wrong_methods: [(Method, String, &'static [StatusCode]); 5] = [
        (Method::DELETE, "/api/session".to_owned(), NOT_ALLOWED),
        (Method::PATCH, format!("/api/incidents/{id}"), NOT_ALLOWED),
        (Method::PUT, "/healthz".to_owned(), NOT_ALLOWED),
        (Method::POST, "/nowhere".to_owned(), NOT_FOUND),
        (Method::DELETE, "/api/nothing/here".to_owned(), NOT_FOUND),
    ];
    for (method, path, expect) in wrong_methods {
        requests.push(Hostile {
            method,
            path,
            body: None,
            expect,
        });
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_of_hostile_requests_gets_clear_errors_and_changes_nothing() -> anyhow::Result<()>
{
    let (server, _, id) = server_with_incident().await;
    // The admin may do everything, so every refusal below is about the request itself.
    let admin = server.admin_token.clone();
    let before = server.heads(&admin, &id).await;
    let tokens_before = server
        .request(Method::GET, "/api/tokens", Some(&admin))
        .send()
        .await?
        .text()
        .await?;
    let requests = hostile_requests(&id);
    let mut failures = Vec::new();
    for request in &requests {
        let mut builder = server.request(request.method.clone(), &request.path, Some(&admin));
        if let Some(body) = &request.body {
            builder = builder
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        let what = format!(
            "{} {} {}",
            request.method,
            request.path.chars().take(80).collect::<String>(),
            request
                .body
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(40)
                .collect::<String>()
        );
        let response = builder.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !request.expect.contains(&status) {
            failures.push(format!(
                "{what}: {status}, expected {:?}: {text}",
                request.expect
            ));
            continue;
        }
        let body: Value = match serde_json::from_str(&text) {
            Ok(body) => body,
            Err(_) => {
                failures.push(format!("{what}: the error is not JSON: {text:?}"));
                continue;
            }
        };
        if !body["error"]["code"].is_string()
            || body["error"]["message"]
                .as_str()
                .is_none_or(|m| m.is_empty())
        {
            failures.push(format!("{what}: no error code and message in {body}"));
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} requests answered badly:\n{}",
        failures.len(),
        requests.len(),
        failures.join("\n")
    );
    // Nothing changed: the incident, the list of incidents, the tokens; and the server is healthy.
    anyhow::ensure!(
        server.heads(&admin, &id).await == before,
        "the incident changed"
    );
    let count = incident_count(&server, &admin).await?;
    anyhow::ensure!(count == 1, "{count} incidents");
    let tokens_after = server
        .request(Method::GET, "/api/tokens", Some(&admin))
        .send()
        .await?
        .text()
        .await?;
    anyhow::ensure!(tokens_after == tokens_before, "the tokens changed");
    let (status, health) = server.healthz().await;
    anyhow::ensure!(status.is_success(), "{health}");
    println!("hostile HTTP requests tried: {}", requests.len());
    server.stop().await;
    Ok(())
}
