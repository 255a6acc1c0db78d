//! The audit log as admins read it (`GET /api/audit`): what credentials, templates and incidents went through,
//! done over HTTP, by the command line or by the server itself, each with who, what, when and from where; filters,
//! pages and CSV; refusals that change nothing. Restricted incidents and single sign-on record their own actions
//! in their tests.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::TestServer;

/// The answer to `GET path` as admin, which must be 200 JSON.
async fn get_json(server: &TestServer, path: &str) -> Value {
    let response = server
        .request(Method::GET, path, Some(&server.admin_token))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("a JSON answer")
}

/// The log's entries, newest first, for the filter in `query`.
async fn entries(server: &TestServer, query: &str) -> Vec<Value> {
    let page = get_json(server, &format!("/api/audit?{query}")).await;
    page["entries"].as_array().expect("entries").clone()
}

/// `(actor, action, target)` of each entry.
fn summary(entries: &[Value]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
            (field("actor"), field("action"), field("target"))
        })
        .collect()
}

fn triple(actor: &str, action: &str, target: &str) -> (String, String, String) {
    (actor.into(), action.into(), target.into())
}

#[tokio::test]
async fn admin_actions_over_http_are_recorded_with_who_what_and_from_where() {
    let server = TestServer::start().await;
    let response = server
        .request(Method::POST, "/api/tokens", Some(&server.admin_token))
        .header("X-Forwarded-For", "203.0.113.7")
        .json(&json!({"name": "ci", "scope": "write"}))
        .send()
        .await
        .expect("creating a token");
    assert_eq!(response.status(), StatusCode::CREATED);
    server.revoke("ci").await;
    let template = "# Audit demo\n\n## Title\n<!-- commandpost key=title kind=text -->\n";
    let response = server
        .request(
            Method::PUT,
            "/api/templates/audit-demo",
            Some(&server.admin_token),
        )
        .header("Content-Type", "text/markdown")
        .body(template)
        .send()
        .await
        .expect("uploading a template");
    assert_eq!(response.status(), StatusCode::OK);
    let response = server
        .request(
            Method::DELETE,
            "/api/templates/audit-demo",
            Some(&server.admin_token),
        )
        .send()
        .await
        .expect("deleting the template");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let incident = server.declare(&server.admin_token, "Audited").await.id;
    let close = json!([{"op": "setStatus", "status": "closed", "overrideReason": "done"}]);
    let response = server
        .operations(&server.admin_token, &incident, close)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    let response = server
        .request(
            Method::POST,
            &format!("/api/incidents/{incident}/reopen"),
            Some(&server.admin_token),
        )
        .json(&json!({"reason": "impact is back", "status": "active"}))
        .send()
        .await
        .expect("reopening");
    assert_eq!(response.status(), StatusCode::OK);
    let response = server
        .request(
            Method::DELETE,
            &format!("/api/incidents/{incident}"),
            Some(&server.admin_token),
        )
        .send()
        .await
        .expect("deleting");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let log = entries(&server, "").await;
    assert_eq!(
        summary(&log),
        [
            triple("admin", "incident.deleted", &incident),
            triple("admin", "incident.reopened", &incident),
            triple("admin", "template.deleted", "audit-demo"),
            triple("admin", "template.uploaded", "audit-demo"),
            triple("admin", "token.revoked", "ci"),
            triple("admin", "token.created", "ci"),
        ],
        "every admin action, newest first: {log:#?}"
    );
    let created = &log[5];
    assert_eq!(created["detail"], json!({"scope": "write"}));
    let from = created["from"].as_str().expect("from where");
    assert!(
        from.starts_with("127.0.0.1:") && from.ends_with("(X-Forwarded-For: 203.0.113.7)"),
        "the peer and the header as sent: {from}"
    );
    assert!(
        log[4]["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("127.0.0.1:"))
    );
    assert_eq!(
        log[1]["detail"],
        json!({"reason": "impact is back", "status": "active"})
    );
    assert!(
        log[0]["detail"]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Audited")),
        "the deleted incident's title: {}",
        log[0]["detail"]
    );
    assert_eq!(log[0]["detail"]["status"], "active");
    assert!(
        log.windows(2)
            .all(|w| w[0]["at"].as_str() >= w[1]["at"].as_str())
    );

    // Filters: a kind, a target, an actor nobody is.
    assert_eq!(
        summary(&entries(&server, "action=token.").await),
        [
            triple("admin", "token.revoked", "ci"),
            triple("admin", "token.created", "ci")
        ]
    );
    assert_eq!(
        entries(&server, &format!("target={incident}")).await.len(),
        2
    );
    assert!(entries(&server, "actor=nobody").await.is_empty());
    assert!(entries(&server, "since=2999-01-01").await.is_empty());
    assert_eq!(entries(&server, "until=2999-01-01").await.len(), 6);
    assert_eq!(
        entries(&server, "from=2000-01-01&to=2999-01-01")
            .await
            .len(),
        6,
        "the analytics' names"
    );
    assert!(entries(&server, "to=2000-01-01").await.is_empty());

    // Pages of two, following nextBefore, give the whole log once.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = get_json(&server, &format!("/api/audit?{query}")).await;
        seen.extend(page["entries"].as_array().expect("entries").clone());
        match page["nextBefore"].as_i64() {
            Some(before) => query = format!("limit=2&before={before}"),
            None => break,
        }
    }
    assert_eq!(summary(&seen), summary(&log));

    // CSV: a header and one line per entry; the detail is its JSON.
    let response = server
        .request(
            Method::GET,
            "/api/audit?format=csv&action=token.created",
            Some(&server.admin_token),
        )
        .send()
        .await
        .expect("CSV");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv"))
    );
    let csv = response.text().await.expect("CSV text");
    let negotiated = server
        .request(
            Method::GET,
            "/api/audit?action=token.created",
            Some(&server.admin_token),
        )
        .header("Accept", "text/csv")
        .send()
        .await
        .expect("CSV by Accept")
        .text()
        .await
        .expect("CSV text");
    assert_eq!(negotiated, csv, "Accept: text/csv answers the same CSV");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,at,actor,action,target,from,detail");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].contains(",admin,token.created,ci,")
            && lines[1].ends_with(r#""{""scope"":""write""}""#)
    );
}

#[tokio::test]
async fn only_admins_read_the_log_and_bad_filters_are_refused() {
    let server = TestServer::start().await;
    let writer = server.token("writer", "write").await;
    let response = server
        .request(Method::GET, "/api/audit", Some(&writer))
        .send()
        .await
        .expect("GET as a writer");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = server
        .request(Method::GET, "/api/audit?limit=0", Some(&writer))
        .send()
        .await
        .expect("GET as a writer with a bad filter");
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the scope is checked before the query"
    );
    for query in [
        "limit=0",
        "limit=1001",
        "limit=many",
        "before=0",
        "since=yesterday",
        "until=2026-13-01",
        "action=Token.Created",
        "action=token.%25",
        "format=xml",
        "colour=red",
    ] {
        let response = server
            .request(
                Method::GET,
                &format!("/api/audit?{query}"),
                Some(&server.admin_token),
            )
            .send()
            .await
            .expect("GET with a bad filter");
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let body: Value = response.json().await.expect("an error body");
        assert_eq!(body["error"]["code"], "unprocessable", "{query}: {body}");
    }
    let log = entries(&server, "").await;
    assert_eq!(
        summary(&log),
        [triple("admin", "token.created", "writer")],
        "reading and refusals record nothing"
    );
}

#[tokio::test]
async fn the_command_line_and_the_first_run_are_recorded_as_local() {
    let mut server = TestServer::start_process().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandpost-under-test"))
        .args([
            "token",
            "create",
            "--name",
            "bot",
            "--scope",
            "read",
            "--data-dir",
        ])
        .arg(server.data_dir())
        .env("USER", "operator")
        .output()
        .await
        .expect("running commandpost token create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = entries(&server, "").await;
    assert_eq!(
        summary(&log),
        [
            triple("cli", "token.created", "bot"),
            triple("commandpost", "token.created", "admin"),
        ]
    );
    assert_eq!(log[0]["from"], "operator (command line)");
    assert_eq!(log[0]["detail"], json!({"scope": "read"}));
    assert_eq!(log[1]["detail"], json!({"scope": "admin", "first": true}));
    server.stop_process().await;
}
