//! The analyst's side of the server, over real HTTP and the real command line: exports of the document as it was at
//! a past moment (every format), the change history, archived incidents refusing writes until an admin reopens
//! them, the postmortem draft, the analytics rows (parsed with a real CSV reader and checked against hand-computed
//! durations; drills left out), the insights page (its SVG parsed as XML for 0, 1 and 500 incidents), and
//! `commandpost export` then `commandpost import` giving back the same heads.
//!
//! `bulk_export_of_1000_archived_incidents` is the benchmark of BENCHMARKS.md; it is ignored in normal runs.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use automerge::ChangeHash;
use bench::process::Process;
use chrono::{DateTime, TimeZone, Utc};
use incident_doc::schema::{Role, Stage, Status};
use incident_doc::{Declaration, Editor, Incident, Operation, template};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::config::Config;
use server::store::{IncidentSummary, Store};
use tests::{DeclaredIncident, TestServer};
use wire::DocumentId;

/// The real command line, built with the tests.
const CLI: &str = env!("CARGO_BIN_EXE_commandpost-under-test");

/// A fixed moment for documents built outside the server.
fn t(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0)
        .single()
        .expect("a valid time")
}

/// GETs `path` and returns the status and the body as text.
async fn get(server: &TestServer, token: &str, path: &str) -> (StatusCode, String) {
    let response = server
        .request(Method::GET, path, Some(token))
        .send()
        .await
        .expect("GET");
    let status = response.status();
    (status, response.text().await.expect("a body"))
}

/// GETs `path` and returns the raw bytes; panics unless 200.
async fn get_bytes(server: &TestServer, token: &str, path: &str) -> Vec<u8> {
    let response = server
        .request(Method::GET, path, Some(token))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.bytes().await.expect("a body").to_vec()
}

/// Applies operations and panics unless 200.
async fn operate(server: &TestServer, token: &str, id: &str, ops: Value) {
    let response = server.operations(token, id, ops.clone()).await;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{ops}: {body}");
}

fn set_summary(text: &str) -> Value {
    json!([{"op": "setText", "field": "summary", "text": text}])
}

/// Sleeps into the next whole second: change times are seconds, so edits on either side of a moment taken
/// between them fall on different sides of it.
async fn next_second() {
    let now = Utc::now();
    let into = u64::from(now.timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(1000 - into + 50)).await;
}

#[tokio::test]
async fn point_in_time_exports_return_the_old_text_in_every_format() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    operate(
        &server,
        &alice,
        &incident.id,
        set_summary("Old text: EU only."),
    )
    .await;
    let old_heads = server.heads(&alice, &incident.id).await;
    next_second().await;
    let then = Utc::now();
    next_second().await;
    operate(
        &server,
        &alice,
        &incident.id,
        set_summary("New text: worldwide."),
    )
    .await;
    let at = then.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    for format in ["markdown", "html", "json", "postmortem"] {
        let (status, past) = get(
            &server,
            &alice,
            &format!(
                "/api/incidents/{}/export?format={format}&at={}",
                incident.id,
                urlencode(&at)
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{format}: {past}");
        assert!(
            past.contains("Old text: EU only."),
            "{format} at {at}:\n{past}"
        );
        assert!(!past.contains("New text"), "{format} at {at}:\n{past}");
        let (_, now) = get(
            &server,
            &alice,
            &format!("/api/incidents/{}/export?format={format}", incident.id),
        )
        .await;
        assert!(now.contains("New text: worldwide."), "{format} now");
    }
    // The Automerge file at that moment is the document with exactly the history up to it.
    let bytes = get_bytes(
        &server,
        &alice,
        &format!(
            "/api/incidents/{}/export?format=automerge&at={}",
            incident.id,
            urlencode(&at)
        ),
    )
    .await;
    let mut past = Incident::load(&bytes).expect("the past document loads");
    let mut heads = past.doc_mut().get_heads();
    heads.sort();
    assert_eq!(heads, old_heads);
}

/// Percent-encodes the `+` and `:` of an RFC 3339 time for a query string.
fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_bad_or_too_early_at_is_refused_clearly() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    let export = |at: &str| format!("/api/incidents/{}/export?format=json&at={at}", incident.id);
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "1700000000"] {
        let (status, body) = get(&server, &alice, &export(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "at={bad}: {body}");
        let body: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(body["error"]["code"], "unprocessable");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("RFC 3339")),
            "{body}"
        );
    }
    let (status, body) = get(&server, &alice, &export("2000-01-01T00:00:00Z")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not exist yet") && m.contains("declared at")),
        "{body}"
    );
}

#[tokio::test]
async fn history_lists_changes_with_authors_and_fields_page_by_page() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    operate(&server, &bob, &incident.id, set_summary("Broken.")).await;
    server
        .append_timeline(&bob, &incident.id, "Rolled back.")
        .await;
    operate(
        &server,
        &alice,
        &incident.id,
        json!([{"op": "setChoice", "field": "severity", "value": "SEV1"},
               {"op": "setStatus", "status": "active"}]),
    )
    .await;

    let history = |query: &str| format!("/api/incidents/{}/history{query}", incident.id);
    let (status, body) = get(&server, &alice, &history("")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(page["total"], 4);
    assert_eq!(page["next"], Value::Null);
    let rows: Vec<(String, String, String)> = page["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["by"].as_str().unwrap_or("?").to_owned(),
                c["op"].as_str().unwrap_or("?").to_owned(),
                c["fields"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(rows[0].0, "alice");
    assert_eq!(rows[0].1, "create");
    assert_eq!(rows[1], ("bob".into(), "setText".into(), "summary".into()));
    assert_eq!(
        rows[2],
        ("bob".into(), "addTimelineEntry".into(), "timeline".into())
    );
    assert_eq!(rows[3].1, "setChoice,setStatus");
    assert_eq!(rows[3].2, "severity,status");
    assert!(
        page["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .all(|c| c["attributed"] == true && c["at"].is_string())
    );

    let (_, first) = get(&server, &alice, &history("?limit=3")).await;
    let first: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(first["changes"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["next"], 3);
    let (_, second) = get(&server, &alice, &history("?offset=3&limit=3")).await;
    let second: Value = serde_json::from_str(&second).expect("JSON");
    assert_eq!(second["changes"][0], page["changes"][3]);
    assert_eq!(second["next"], Value::Null);
    let (status, _) = get(&server, &alice, &history("?limit=0")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn archived_incidents_refuse_http_writes_until_an_admin_reopens_them() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    operate(
        &server,
        &alice,
        &incident.id,
        json!([{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]),
    )
    .await;
    let heads = server.heads(&alice, &incident.id).await;
    let markdown = server.markdown(&alice, &incident.id).await;

    let conflict = |response: reqwest::Response, what: &'static str| async move {
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(status, StatusCode::CONFLICT, "{what}: {body}");
        assert_eq!(body["error"]["code"], "conflict", "{what}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("archived")),
            "{what}: {body}"
        );
    };
    conflict(
        server
            .operations(&alice, &incident.id, set_summary("late edit"))
            .await,
        "operations",
    )
    .await;
    conflict(
        server
            .request(
                Method::POST,
                &format!("/api/incidents/{}/timeline", incident.id),
                Some(&alice),
            )
            .json(&json!({"text": "late note"}))
            .send()
            .await
            .expect("POST timeline"),
        "timeline",
    )
    .await;
    // Nothing changed, and the archive stays readable: listed, filtered, exported.
    assert_eq!(server.heads(&alice, &incident.id).await, heads);
    assert_eq!(server.markdown(&alice, &incident.id).await, markdown);
    let (_, listed) = get(&server, &alice, "/api/incidents?status=closed").await;
    assert!(listed.contains(&incident.id), "{listed}");

    // Reopening is an admin's: a writer gets 403 on the route and in a batch of operations.
    let reopen = |token: &str| {
        server
            .request(
                Method::POST,
                &format!("/api/incidents/{}/reopen", incident.id),
                Some(token),
            )
            .json(&json!({"reason": "the errors are back", "status": "active"}))
            .send()
    };
    assert_eq!(
        reopen(&alice).await.expect("POST reopen").status(),
        StatusCode::FORBIDDEN
    );
    let batch = server
        .operations(
            &alice,
            &incident.id,
            json!([{"op": "reopen", "reason": "sneaky"}]),
        )
        .await;
    assert_eq!(batch.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.heads(&alice, &incident.id).await, heads);

    let response = reopen(&server.admin_token).await.expect("POST reopen");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], "active");
    let view = server.incident_json(&alice, &incident.id).await;
    assert_eq!(view["status"], "active");
    let timeline = view["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "timeline"))
        .expect("a timeline field");
    assert_eq!(timeline["value"][0]["id"], body["entry"]);
    assert_eq!(timeline["value"][0]["author"], "admin");
    assert_eq!(
        timeline["value"][0]["text"],
        "Reopened (active): the errors are back"
    );
    operate(&server, &alice, &incident.id, set_summary("Open again.")).await;
    // Reopening an open incident conflicts with its state.
    assert_eq!(
        reopen(&server.admin_token)
            .await
            .expect("POST reopen")
            .status(),
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn postmortem_export_is_seeded_from_the_document() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    operate(
        &server,
        &alice,
        &incident.id,
        json!([
            {"op": "setText", "field": "summary", "text": "Checkout failed for EU customers."},
            {"op": "setTimestamp", "stage": "impactStarted", "at": "2020-01-01T10:00:00Z"},
            {"op": "addItem", "field": "todos", "text": "Alert on timeouts", "owner": "bob", "bug": "BUG-1"},
            {"op": "setStatus", "status": "mitigated"}
        ]),
    )
    .await;
    server
        .append_timeline(&alice, &incident.id, "Rolled back.")
        .await;
    let (status, draft) = get(
        &server,
        &alice,
        &format!("/api/incidents/{}/export?format=postmortem", incident.id),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "# Postmortem: Checkout errors: ",
        &format!("(incident #{})", incident.number.expect("a number")),
        "**Authors:** alice",
        "Checkout failed for EU customers.",
        "| Alert on timeouts |  | bob | BUG-1 | TODO |",
        "- 2020-01-01 10:00 UTC **OUTAGE BEGINS**",
        "**INCIDENT BEGINS**",
        "**OUTAGE MITIGATED**",
        "alice: Rolled back.",
        "| Incident Commander | alice |",
        "### Where we got lucky",
    ] {
        assert!(draft.contains(expected), "{expected:?} missing:\n{draft}");
    }
    let begins = draft.find("OUTAGE BEGINS").expect("begins");
    let mitigated = draft.find("OUTAGE MITIGATED").expect("mitigated");
    assert!(begins < mitigated, "oldest first");
}

/// The analytics columns that hold times.
const TIME_COLUMNS: [&str; 6] = [
    "impact_started_at",
    "detected_at",
    "declared_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
];

/// One analytics row as the CSV reader gives it: column name → cell.
type Row = std::collections::HashMap<String, String>;

async fn csv_rows(server: &TestServer, token: &str, query: &str) -> Vec<Row> {
    let (status, body) = get(server, token, &format!("/api/analytics/incidents{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().expect("a header line").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        incident_doc::analytics::COLUMNS
    );
    reader
        .records()
        .map(|record| {
            let record = record.expect("a well-formed CSV record");
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn analytics_csv_parses_and_its_durations_match_hand_computed_fixtures() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    // Hand-computed fixture: impact 10:00, detected 10:05, declared 10:12, mitigated 10:40, resolved 11:30,
    // closed 12:12 → detect 300 s, declare 720 s, mitigate 2400 s, resolve 5400 s, duration 7200 s.
    let first = server.declare(&alice, "Checkout, \"EU\" errors").await;
    operate(
        &server,
        &alice,
        &first.id,
        json!([
            {"op": "setChoice", "field": "severity", "value": "SEV2"},
            {"op": "setTimestamp", "stage": "impactStarted", "at": "2026-11-20T10:00:00Z"},
            {"op": "setTimestamp", "stage": "detected", "at": "2026-11-20T10:05:00Z"},
            {"op": "setTimestamp", "stage": "declared", "at": "2026-11-20T10:12:00Z"},
            {"op": "setTimestamp", "stage": "mitigated", "at": "2026-11-20T10:40:00Z"},
            {"op": "setTimestamp", "stage": "resolved", "at": "2026-11-20T11:30:00Z"},
            {"op": "setTimestamp", "stage": "closed", "at": "2026-11-20T12:12:00Z"},
            {"op": "addItem", "field": "todos", "text": "Alert, sooner", "owner": "bob"},
            {"op": "answer", "field": "declaration", "question": "customerVisible", "value": true},
            {"op": "proposeHandoff", "role": "commander", "to": "bob"}
        ]),
    )
    .await;
    // Command goes to bob and back, each time by an accepted handoff.
    operate(
        &server,
        &bob,
        &first.id,
        json!([{"op": "acceptHandoff", "role": "commander"}]),
    )
    .await;
    operate(
        &server,
        &bob,
        &first.id,
        json!([{"op": "proposeHandoff", "role": "commander", "to": "alice"}]),
    )
    .await;
    operate(
        &server,
        &alice,
        &first.id,
        json!([{"op": "acceptHandoff", "role": "commander"}]),
    )
    .await;
    server
        .append_timeline(&bob, &first.id, "Rolled back.")
        .await;
    operate(
        &server,
        &alice,
        &first.id,
        json!([{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]),
    )
    .await;
    // A second incident with only some stamps, and a drill.
    let second = server.declare(&bob, "Slow search").await;
    operate(
        &server,
        &bob,
        &second.id,
        json!([{"op": "setTimestamp", "stage": "impactStarted", "at": "2026-11-21T08:00:00Z"},
               {"op": "setTimestamp", "stage": "declared", "at": "2026-11-21T08:30:00Z"}]),
    )
    .await;
    let drill = server
        .request(Method::POST, "/api/incidents", Some(&alice))
        .json(&json!({"title": "Game day", "template": "drill"}))
        .send()
        .await
        .expect("declare a drill");
    assert_eq!(drill.status(), StatusCode::CREATED);
    let drill: DeclaredIncident = drill.json().await.expect("JSON");

    let rows = csv_rows(&server, &alice, "?format=csv").await;
    assert_eq!(rows.len(), 2, "drills are left out by default: {rows:?}");
    let row = &rows[0];
    assert_eq!(row["id"], first.id);
    assert_eq!(
        row["title"],
        format!("Checkout, \"EU\" errors: {}", Utc::now().format("%Y-%m-%d"))
    );
    assert_eq!(row["severity"], "SEV2");
    assert_eq!(row["status"], "closed");
    assert_eq!(row["impact_started_at"], "2026-11-20T10:00:00.000Z");
    assert_eq!(row["closed_at"], "2026-11-20T12:12:00.000Z");
    for (column, seconds) in [
        ("time_to_detect_seconds", "300"),
        ("time_to_declare_seconds", "720"),
        ("time_to_mitigate_seconds", "2400"),
        ("time_to_resolve_seconds", "5400"),
        ("incident_duration_seconds", "7200"),
    ] {
        assert_eq!(row[column], seconds, "{column}");
    }
    assert_eq!(row["handoffs"], "2");
    assert_eq!(row["distinct_commanders"], "2");
    assert_eq!(row["commanders"], "alice;bob");
    assert_eq!(row["responders"], "2");
    assert_eq!(row["responder_names"], "alice;bob");
    // The entry written above, the two handoffs' and the one that records why it closed with its exit criteria
    // open.
    assert_eq!(row["timeline_entries"], "4");
    assert_eq!(
        (row["todos_open"].as_str(), row["todos_done"].as_str()),
        ("1", "0")
    );
    assert_eq!(row["exit_criteria_total"], "2");
    assert_eq!(row["exit_criteria_met"], "false");
    assert_eq!(row["tags"], "customerVisible");
    let other = &rows[1];
    assert_eq!(other["id"], second.id);
    assert_eq!(other["time_to_declare_seconds"], "1800");
    assert_eq!(other["time_to_mitigate_seconds"], "", "no mitigation stamp");

    let with_drills = csv_rows(&server, &alice, "?include_drills=true").await;
    assert_eq!(with_drills.len(), 3);
    assert!(
        with_drills
            .iter()
            .any(|r| r["id"] == drill.id && r["drill"] == "true")
    );
    // One format for every time, whether people set it to the minute or the server stamped it to the millisecond:
    // pandas' `to_datetime` refuses a column that mixes `…:51.630Z` and `…:00Z`.
    let one_format = |cell: &str| {
        cell.len() == 24
            && cell.ends_with('Z')
            && cell.as_bytes()[19] == b'.'
            && DateTime::parse_from_rfc3339(cell).is_ok()
    };
    for row in &with_drills {
        for column in TIME_COLUMNS {
            let cell = row[column].as_str();
            assert!(cell.is_empty() || one_format(cell), "{column}: {cell:?}");
        }
    }

    let closed = csv_rows(&server, &alice, "?status=closed").await;
    assert_eq!(closed.len(), 1);
    let window = csv_rows(&server, &alice, "?from=2026-11-21&to=2026-11-22").await;
    assert_eq!(
        window.iter().map(|r| r["id"].as_str()).collect::<Vec<_>>(),
        [second.id.as_str()]
    );
    let templated = csv_rows(&server, &alice, "?template=drill&include_drills=true").await;
    assert_eq!(templated.len(), 1);

    let (status, jsonl) = get(&server, &alice, "/api/analytics/incidents?format=jsonl").await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        for column in TIME_COLUMNS {
            let cell = &line[column];
            assert!(
                cell.is_null() || cell.as_str().is_some_and(one_format),
                "{column}: {cell}"
            );
        }
    }
    assert_eq!(lines[0]["time_to_mitigate_seconds"], 2400);
    assert_eq!(lines[0]["commanders"], json!(["alice", "bob"]));

    // A token in the query (proxies log URLs) is refused with a clear error, not used.
    let in_query = server
        .request(
            Method::GET,
            &format!("/api/analytics/incidents?token={alice}"),
            None,
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(in_query.status(), StatusCode::BAD_REQUEST);
    let refusal: Value = in_query.json().await.expect("a JSON error");
    assert_eq!(refusal["error"]["code"], "token_in_url", "{refusal}");
    let unauthenticated = server
        .request(Method::GET, "/api/analytics/incidents", None)
        .send()
        .await
        .expect("GET");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    for bad in [
        "?format=xlsx",
        "?from=last-week",
        "?status=open",
        "?template=nosuch",
    ] {
        let (status, body) = get(&server, &alice, &format!("/api/analytics/incidents{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_lifecycle_time_without_at_and_an_entry_dated_years_ahead_are_refused_and_change_nothing()
{
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Checkout errors").await;
    operate(
        &server,
        &alice,
        &incident.id,
        json!([{"op": "setTimestamp", "stage": "impactStarted", "at": "2026-11-20T10:00:00Z"}]),
    )
    .await;
    let before = csv_rows(&server, &alice, "?format=csv").await;

    let post = |path: String, body: Value| {
        server
            .request(Method::POST, &path, Some(&alice))
            .json(&body)
            .send()
    };
    let cleared = post(
        format!("/api/incidents/{}/operations", incident.id),
        json!({"operations": [{"op": "setTimestamp", "stage": "impactStarted"}]}),
    )
    .await
    .expect("POST operations");
    assert_eq!(cleared.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = cleared.json().await.expect("a JSON error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("missing field `at`"), "{error}");

    let ahead = post(
        format!("/api/incidents/{}/timeline", incident.id),
        json!({"text": "From the future.", "at": (Utc::now() + chrono::Duration::days(3 * 365)).to_rfc3339()}),
    )
    .await
    .expect("POST timeline");
    assert_eq!(ahead.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = ahead.json().await.expect("a JSON error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("5 minutes"), "{error}");

    let after = csv_rows(&server, &alice, "?format=csv").await;
    assert_eq!(after[0]["impact_started_at"], "2026-11-20T10:00:00.000Z");
    assert_eq!(after[0]["timeline_entries"], before[0]["timeline_entries"]);
}

/// An archived incident built outside the server: declared `day` at 09:00 by alice, impact `impact` minutes
/// before, mitigated `mitigate` minutes after the impact, command handed over `handoffs` times, closed.
fn archived(number: i64, day: u32, impact: i64, mitigate: i64, handoffs: usize) -> Incident {
    let template = template::builtin()
        .into_iter()
        .find(|t| t.id == template::DEFAULT_TEMPLATE)
        .expect("the default template");
    let declared = t(day, 9, 0);
    let mut incident = Incident::create(
        &template,
        &Declaration {
            name: format!("Incident {number}"),
            number: Some(number),
        },
        &Editor::new("alice", declared),
        None,
    )
    .expect("create");
    let at = |minutes: i64| declared + chrono::Duration::minutes(minutes);
    let severity = ["SEV1", "SEV2", "SEV3", "SEV4"][(number % 4) as usize];
    let mut ops: Vec<(String, Operation)> = vec![
        (
            "alice".into(),
            Operation::SetChoice {
                field: "severity".into(),
                value: Some(severity.into()),
            },
        ),
        (
            "alice".into(),
            Operation::SetTimestamp {
                stage: Stage::ImpactStarted,
                at: Some(at(-impact)),
            },
        ),
        (
            "alice".into(),
            Operation::SetText {
                field: "summary".into(),
                text: format!("Incident {number}: payments degraded."),
            },
        ),
        (
            "alice".into(),
            Operation::AddTimelineEntry {
                text: "Declared.".into(),
                at: None,
            },
        ),
    ];
    let people = ["alice", "bob", "carol"];
    // Command changes hands as the practice says: proposed by the commander, accepted by the next one.
    for h in 0..handoffs {
        let next = people[(h + 1) % 3];
        ops.push((
            people[h % 3].into(),
            Operation::ProposeHandoff {
                role: Role::Commander,
                to: next.into(),
            },
        ));
        ops.push((
            next.into(),
            Operation::AcceptHandoff {
                role: Role::Commander,
            },
        ));
    }
    let commander = people[handoffs % 3];
    ops.push((
        commander.into(),
        Operation::SetTimestamp {
            stage: Stage::Mitigated,
            at: Some(at(mitigate - impact)),
        },
    ));
    ops.push((
        commander.into(),
        Operation::SetStatus {
            status: Status::Closed,
            override_reason: Some("a generated archive".into()),
        },
    ));
    for (i, (who, op)) in ops.into_iter().enumerate() {
        incident
            .apply(&op, &Editor::new(who, at(i as i64)))
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    incident
}

/// Stores `incident` under a new id in `store`, as the server would have: the saved document and its index row.
async fn put(store: &Arc<dyn Store>, mut incident: Incident) {
    let id = DocumentId::random();
    let view = incident.view();
    let access = incident.access();
    let summary = IncidentSummary {
        id,
        title: view.headline.title.clone(),
        template: view.headline.template.clone(),
        status: view.headline.status.as_deref().and_then(|s| s.parse().ok()),
        severity: view.headline.severity.clone(),
        commander: incident.commander(),
        number: view.headline.number,
        created_at: view.headline.created_at.unwrap_or_else(Utc::now),
        updated_at: Utc::now(),
        restricted: access.restricted,
        members: access.members,
        channel: incident.channel(),
    };
    store
        .append(id, incident.save(), Some(summary))
        .await
        .expect("append");
}

/// The store of a data directory, opened beside a running server (SQLite allows it).
fn open_store(data_dir: &Path) -> Arc<dyn Store> {
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    server::open_store(&config).expect("opening the store")
}

/// Checks that every `<svg>` element of the page parses as XML with an `svg` root, and returns how many there are.
fn valid_svgs(page: &str) -> usize {
    let mut count = 0;
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("a closed svg") + start + "</svg>".len();
        let svg = &rest[start..end];
        let doc =
            roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("invalid SVG ({e}):\n{svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert_eq!(
            doc.root_element().tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        count += 1;
        rest = &rest[end..];
    }
    count
}

#[tokio::test]
async fn insights_page_renders_valid_svg_for_0_1_and_500_incidents() {
    let server = TestServer::start().await;
    let reader = server.token("viewer", "read").await;
    let insights = |token: &str| server.request(Method::GET, "/insights", Some(token)).send();
    assert_eq!(
        server
            .request(Method::GET, "/insights", None)
            .send()
            .await
            .expect("GET")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let page = |response: reqwest::Response| async move {
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/html"))
        );
        response.text().await.expect("a page")
    };

    let empty = page(insights(&reader).await.expect("GET")).await;
    assert_eq!(valid_svgs(&empty), 3);
    assert!(empty.contains("N = 0"), "{empty}");

    let store = open_store(&server.data_dir());
    put(&store, archived(1, 2, 10, 35, 1)).await;
    let one = page(insights(&reader).await.expect("GET")).await;
    assert_eq!(valid_svgs(&one), 3);
    assert!(one.contains("N = 1"), "{one}");
    assert!(one.contains("Small sample"), "{one}");
    assert!(one.contains("mitigated − impact started"), "{one}");
    assert!(one.contains("p50 35 min"), "{one}");

    // 500 incidents over six weeks, with heavy-tailed times to mitigate and 0–3 handoffs.
    let mut pending = Vec::new();
    for n in 2..=500 {
        let mitigate = 5 + (n * n * 7919) % 600;
        let incident = archived(
            n,
            1 + (n % 28) as u32,
            5 + n % 30,
            mitigate,
            (n % 4) as usize,
        );
        pending.push(put(&store, incident));
        if pending.len() == 50 {
            futures_util::future::join_all(std::mem::take(&mut pending)).await;
        }
    }
    futures_util::future::join_all(pending).await;
    let many = page(
        server
            .request(Method::GET, "/insights", Some(&reader))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(valid_svgs(&many), 3);
    assert!(many.contains("500 incidents"), "{many}");
    assert!(many.contains("N = 500"), "{many}");
    assert!(!many.contains("Small sample"), "{many}");
    assert!(many.contains("p99"), "p99 from 100 incidents on");
    store.close().await.expect("close");
}

/// Runs the real command line and returns its stdout and stderr; panics unless it succeeds.
async fn cli(args: &[&str]) -> (String, String) {
    let output = tokio::process::Command::new(CLI)
        .args(args)
        .env_remove("COMMANDPOST_DATABASE_URL")
        .env_remove("COMMANDPOST_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running the command line");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "commandpost {args:?} failed: {stderr}"
    );
    (stdout, stderr)
}

fn sorted_heads(incident: &mut Incident) -> Vec<ChangeHash> {
    let mut heads = incident.doc_mut().get_heads();
    heads.sort();
    heads
}

#[tokio::test]
async fn export_then_import_round_trips_to_the_same_heads() {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mut closed = Vec::new();
    for title in ["Checkout errors", "Slow search"] {
        let incident = server.declare(&alice, title).await;
        operate(
            &server,
            &alice,
            &incident.id,
            set_summary(&format!("{title}: details.")),
        )
        .await;
        server.append_timeline(&alice, &incident.id, "Fixed.").await;
        operate(
            &server,
            &alice,
            &incident.id,
            json!([{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]),
        )
        .await;
        closed.push(incident);
    }
    let open = server.declare(&alice, "Still burning").await;

    let out = tempfile::tempdir().expect("a directory");
    let data = server.data_dir();
    let (_, progress) = cli(&[
        "export",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--out",
        out.path().to_str().expect("utf-8"),
        "--format",
        "automerge,markdown,postmortem",
    ])
    .await;
    assert!(progress.contains("exported 2 incidents"), "{progress}");
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .expect("the export directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    assert!(
        files.iter().all(|f| !f.contains(&open.id)),
        "open incidents are not archived: {files:?}"
    );
    let markdown = files
        .iter()
        .find(|f| f.ends_with(&format!("{}.md", closed[0].id)))
        .expect("markdown");
    assert_eq!(
        std::fs::read_to_string(out.path().join(markdown)).expect("read"),
        server.markdown(&alice, &closed[0].id).await,
        "the same bytes as the HTTP export"
    );
    let (_, all) = cli(&[
        "export",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--out",
        out.path().join("all").to_str().expect("utf-8"),
        "--all",
        "--since",
        &Utc::now().format("%Y-%m-%d").to_string(),
    ])
    .await;
    assert!(all.contains("exported 3 incidents"), "{all}");

    // Import into an empty store: the same documents, to the change.
    let restored = tempfile::tempdir().expect("a directory");
    let restored_data = restored.path().join("data");
    for incident in &closed {
        let file = files
            .iter()
            .find(|f| f.ends_with(&format!("{}.automerge", incident.id)))
            .expect("an automerge file");
        let (stdout, _) = cli(&[
            "import",
            "--data-dir",
            restored_data.to_str().expect("utf-8"),
            out.path().join(file).to_str().expect("utf-8"),
        ])
        .await;
        assert_eq!(stdout.trim(), incident.id, "restored under its own id");
    }
    let store = open_store(&restored_data);
    for incident in &closed {
        let id: DocumentId = incident.id.parse().expect("a document id");
        let stored = store.load(id).await.expect("load").expect("imported");
        let mut copy = stored.incident().expect("loads");
        assert_eq!(
            sorted_heads(&mut copy),
            server.heads(&alice, &incident.id).await,
            "{} round-trips to the same heads",
            incident.id
        );
        let summary = store.summary(id).await.expect("summary");
        assert_eq!(summary.map(|s| s.status), Some(Some(Status::Closed)));
    }
    store.close().await.expect("close");
    // Importing the same incident twice is refused, not merged silently.
    let again = tokio::process::Command::new(CLI)
        .args([
            "import",
            "--data-dir",
            restored_data.to_str().expect("utf-8"),
            out.path()
                .join(
                    files
                        .iter()
                        .find(|f| f.ends_with(".automerge"))
                        .expect("a file"),
                )
                .to_str()
                .expect("utf-8"),
        ])
        .output()
        .await
        .expect("running import");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// How many incidents an export of `files` files in `formats` (comma-separated) covered.
fn incidents_in(formats: &str, files: usize) -> f64 {
    files as f64 / formats.split(',').count() as f64
}

/// The BENCHMARKS.md figure: 1,000 archived incidents, each with a short but real history, exported by the real
/// command line in every format; wall time and the exporting process's peak memory.
#[tokio::test]
#[ignore = "benchmark: cargo test --release -p tests --test analysts -- --ignored --nocapture"]
async fn bulk_export_of_1000_archived_incidents() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = open_store(&data);
    let started = Instant::now();
    let mut pending = Vec::new();
    for n in 1..=1000 {
        let incident = archived(
            n,
            1 + (n % 28) as u32,
            5 + n % 30,
            5 + (n * n * 7919) % 600,
            (n % 4) as usize,
        );
        pending.push(put(&store, incident));
        if pending.len() == 100 {
            futures_util::future::join_all(std::mem::take(&mut pending)).await;
        }
    }
    futures_util::future::join_all(pending).await;
    println!(
        "stored 1000 archived incidents in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // What the analytics route does for each incident it has not cached: load, read, replay the history.
    let computing = Instant::now();
    let mut handoffs = 0;
    for summary in store.list(&Default::default()).await? {
        let stored = store.load(summary.id).await?.context("stored")?;
        let mut incident = stored.incident()?;
        let row = incident_doc::analytics::Facts::new(
            &summary.id.to_string(),
            &incident.view(),
            &incident.record(None),
        );
        handoffs += row.handoffs;
    }
    println!(
        "analytics rows of 1000 incidents computed in {:.2} s ({handoffs} handoffs in all)",
        computing.elapsed().as_secs_f64()
    );
    store.close().await?;
    let db = std::fs::metadata(data.join("commandpost.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("database: {:.1} MiB", db as f64 / (1024.0 * 1024.0));

    for formats in [
        "automerge",
        "markdown",
        "automerge,markdown,html,json,postmortem",
    ] {
        let out = dir.path().join(formats.replace(',', "-"));
        let started = Instant::now();
        let mut child = tokio::process::Command::new(CLI)
            .args(["export", "--data-dir"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--format", formats])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id().context("a pid")?;
        let mut peak = 0;
        let status = loop {
            if let Ok(kib) = Process::pid(pid).peak_rss_kib() {
                peak = peak.max(kib);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let elapsed = started.elapsed();
        anyhow::ensure!(status.success(), "export failed");
        let files = std::fs::read_dir(&out)?.count();
        let bytes: u64 = std::fs::read_dir(&out)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "export --format {formats}: {files} files, {:.1} MiB in {:.2} s ({:.2} ms per incident), peak RSS {:.1} MiB",
            bytes as f64 / (1024.0 * 1024.0),
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / incidents_in(formats, files),
            peak as f64 / 1024.0
        );
    }
    Ok(())
}
