//! `POST /api/hooks/alertmanager` with payloads in Prometheus Alertmanager's webhook format (version 4): firing and
//! resolved notifications of grouped alerts become timeline entries, a notification sent again adds nothing, and
//! bad payloads are refused with our error body and change nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::TestServer;

/// A notification as Alertmanager sends it: a group of alerts sharing `incident` (and `service`), each with its
/// own labels, annotations and fingerprint.
fn notification(status: &str, incident: Option<&str>, alerts: Vec<Value>) -> Value {
    let mut common = json!({"service": "checkout"});
    if let Some(id) = incident {
        common["incident"] = json!(id);
    }
    json!({
        "version": "4",
        "groupKey": "{}/{service=\"checkout\"}:{alertname=\"CheckoutErrorRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "commandpost",
        "groupLabels": {"service": "checkout"},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com:9093",
        "alerts": alerts,
    })
}

fn alert(
    status: &str,
    name: &str,
    region: &str,
    incident: Option<&str>,
    fingerprint: &str,
) -> Value {
    let mut labels =
        json!({"alertname": name, "service": "checkout", "region": region, "severity": "critical"});
    if let Some(id) = incident {
        labels["incident"] = json!(id);
    }
    let ends = if status == "firing" {
        "0001-01-01T00:00:00Z"
    } else {
        "2026-11-25T04:40:00Z"
    };
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": format!("Checkout error rate above 5% in {region}"), "runbook_url": "https://runbooks.example.com/checkout"},
        "startsAt": "2026-11-25T03:49:12.345Z",
        "endsAt": ends,
        "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=rate%28checkout_errors_total%5B5m%5D%29+%3E+0.05",
        "fingerprint": fingerprint,
    })
}

async fn post(
    server: &TestServer,
    token: Option<&str>,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    server.call(Method::POST, path, token, Some(body)).await
}

/// The timeline's entries, newest first, as `(author, at, text)`.
async fn timeline(server: &TestServer, token: &str, id: &str) -> Vec<(String, String, String)> {
    let view = server.incident_json(token, id).await;
    let field = view["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "timeline"))
        .expect("timeline field")
        .clone();
    field["value"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["author"].as_str().unwrap_or_default().to_owned(),
                e["at"].as_str().unwrap_or_default().to_owned(),
                e["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn alert_entries(entries: &[(String, String, String)]) -> Vec<&(String, String, String)> {
    entries.iter().filter(|e| e.0 == "alertmanager").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_firing_and_resolved_alerts_become_timeline_entries_once() {
    let server = TestServer::start().await;
    let bot = server.token("alertmanager", "write").await;
    let incident = server.declare(&bot, "Checkout errors").await;
    let id = incident.id.as_str();
    // One group, two regions: each alert keeps its fingerprint across notifications.
    let eu_west = |status| {
        alert(
            status,
            "CheckoutErrorRate",
            "eu-west-1",
            None,
            "8d2c6a5f0e1b4c3a",
        )
    };
    let eu_central = |status| {
        alert(
            status,
            "CheckoutErrorRate",
            "eu-central-1",
            None,
            "1f0e9d8c7b6a5f4e",
        )
    };
    let firing = notification(
        "firing",
        Some(id),
        vec![eu_west("firing"), eu_central("firing")],
    );
    let (status, body) = post(&server, Some(&bot), "/api/hooks/alertmanager", &firing).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"recorded": 2, "duplicates": 0}));
    let entries = timeline(&server, &bot, id).await;
    let alerts = alert_entries(&entries);
    assert_eq!(alerts.len(), 2, "{entries:?}");
    let entry = alerts
        .iter()
        .find(|e| e.2.contains("eu-west-1"))
        .expect("eu-west-1 entry");
    assert_eq!(
        entry.2,
        "**FIRING** CheckoutErrorRate (region=eu-west-1, service=checkout, severity=critical): Checkout error rate \
         above 5% in eu-west-1 ([source](http://prometheus.example.com:9090/graph?g0.expr=rate%28checkout_errors_total%5B5m%5D%29+%3E+0.05))"
    );
    assert!(
        entry.1.starts_with("2026-11-25T03:49:12"),
        "a firing alert is entered at its start: {}",
        entry.1
    );

    // Alertmanager repeats notifications (repeat_interval, retries): the same payload adds nothing.
    let (status, body) = post(&server, Some(&bot), "/api/hooks/alertmanager", &firing).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"recorded": 0, "duplicates": 2}))
    );
    assert_eq!(timeline(&server, &bot, id).await, entries);

    // One alert resolves while the other still fires: the group is sent with both; only the change is new.
    let resolved = notification(
        "firing",
        Some(id),
        vec![eu_west("resolved"), eu_central("firing")],
    );
    let (status, body) = post(&server, Some(&bot), "/api/hooks/alertmanager", &resolved).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"recorded": 1, "duplicates": 1}))
    );
    let entries = timeline(&server, &bot, id).await;
    let alerts = alert_entries(&entries);
    assert_eq!(alerts.len(), 3);
    let end = alerts
        .iter()
        .find(|e| e.2.starts_with("**RESOLVED**"))
        .expect("resolved entry");
    assert!(end.2.contains("eu-west-1"));
    assert!(
        end.1.starts_with("2026-11-25T04:40:00"),
        "a resolved alert is entered at its end: {}",
        end.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_to_the_incident_their_label_or_the_url_names() {
    let server =
        TestServer::start_with(|config| config.alertmanager_label = "cp_incident".into()).await;
    let bot = server.token("alertmanager", "write").await;
    let first = server.declare(&bot, "Checkout errors").await;
    let second = server.declare(&bot, "Search latency").await;
    // One notification, alerts for two incidents, named by the configured label on each alert.
    let mut a = alert("firing", "CheckoutErrorRate", "eu-west-1", None, "aaaa0001");
    a["labels"]["cp_incident"] = json!(first.id);
    let mut b = alert("firing", "SearchLatencyHigh", "us-east-1", None, "bbbb0002");
    b["labels"]["cp_incident"] = json!(second.id);
    let (status, body) = post(
        &server,
        Some(&bot),
        "/api/hooks/alertmanager",
        &notification("firing", None, vec![a, b]),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"recorded": 2, "duplicates": 0}))
    );
    let one = timeline(&server, &bot, &first.id).await;
    let two = timeline(&server, &bot, &second.id).await;
    assert!(alert_entries(&one)[0].2.contains("CheckoutErrorRate"));
    assert!(alert_entries(&two)[0].2.contains("SearchLatencyHigh"));
    assert!(
        !alert_entries(&one)[0].2.contains("cp_incident"),
        "the routing label is not repeated"
    );

    // Without labels, the hook URL names the incident.
    let c = alert("firing", "PaymentsTimeouts", "eu-west-1", None, "cccc0003");
    let path = format!("/api/hooks/alertmanager/{}", second.id);
    let (status, body) = post(
        &server,
        Some(&bot),
        &path,
        &notification("firing", None, vec![c]),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"recorded": 1, "duplicates": 0}))
    );
    assert_eq!(
        alert_entries(&timeline(&server, &bot, &second.id).await).len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_notifications_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let bot = server.token("alertmanager", "write").await;
    let reader = server.token("viewer", "read").await;
    let incident = server.declare(&bot, "Checkout errors").await;
    let id = incident.id.as_str();
    let before = timeline(&server, &bot, id).await;
    let good = notification(
        "firing",
        Some(id),
        vec![alert(
            "firing",
            "CheckoutErrorRate",
            "eu-west-1",
            None,
            "f1",
        )],
    );
    let unlabelled = notification(
        "firing",
        Some(id),
        vec![
            alert("firing", "CheckoutErrorRate", "eu-west-1", None, "f2"),
            json!({"status": "firing", "labels": {"alertname": "Orphan"}, "annotations": {},
                   "startsAt": "2026-11-25T03:49:12Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "f3"}),
        ],
    );
    // The common label covers only alerts that share it; strip it to leave the orphan without an incident.
    let mut unlabelled = unlabelled;
    unlabelled["commonLabels"] = json!({});
    unlabelled["alerts"][0]["labels"]["incident"] = json!(id);
    let mut bad_version = good.clone();
    bad_version["version"] = json!("3");
    let mut bad_status = good.clone();
    bad_status["alerts"][0]["status"] = json!("exploded");
    let mut no_alerts = good.clone();
    no_alerts["alerts"] = json!([]);
    let mut unknown = good.clone();
    unknown["commonLabels"]["incident"] = json!("2j9PSuq5ZFa8Ab5C1sB1bLTUQrUY");
    let cases: Vec<(Option<&str>, Value, StatusCode, &str)> = vec![
        (None, good.clone(), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Some(&reader),
            good.clone(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            Some(&bot),
            unlabelled,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            Some(&bot),
            bad_version,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            Some(&bot),
            bad_status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            Some(&bot),
            no_alerts,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            Some(&bot),
            json!({"version": "4", "status": "firing"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (Some(&bot), unknown, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (token, body, status, code) in cases {
        let (got, answer) = post(&server, token, "/api/hooks/alertmanager", &body).await;
        assert_eq!(
            (got, &answer["error"]["code"]),
            (status, &json!(code)),
            "{body} → {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let response = server
        .request(Method::POST, "/api/hooks/alertmanager", Some(&bot))
        .header("content-type", "application/json")
        .body("{\"version\": \"4\", ")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        timeline(&server, &bot, id).await,
        before,
        "nothing was recorded"
    );
}
