//! Status updates by email against a real SMTP server on loopback (aiosmtpd, `tests/py/smtp_server.py`): what
//! arrives is parsed by Python's `email` package and checked here: headers, threading across updates, both parts,
//! recipients by template and severity, hostile titles; a relay down at first (retried across a restart of ours), a
//! permanent refusal, STARTTLS required but not offered, and two nodes on PostgreSQL sending each update once.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::mail::{MailList, MailSettings, Security};
use tests::TestCa;
use tests::smtp::{SmtpMode, SmtpServer, header};
use tests::{DEADLINE, TestDatabase, TestServer, eventually};

const USER: &str = "relay-user";
const PASSWORD: &str = "relay-pässword";

/// The lists of every test: ops hears of everything, exec of SEV1, security of the security template.
fn lists() -> Vec<MailList> {
    let list = |address: &str, templates: &[&str], severities: &[&str]| MailList {
        address: address.into(),
        templates: templates.iter().map(|s| s.to_string()).collect(),
        severities: severities.iter().map(|s| s.to_string()).collect(),
        restricted: false,
    };
    vec![
        list("Ops <ops@example.com>", &[], &[]),
        list("exec@example.com", &[], &["SEV1"]),
        list("security@example.com", &["security"], &[]),
    ]
}

/// `[mail]` for a relay on 127.0.0.1:`port` with the test CA.
fn settings(ca: &TestCa, port: u16, security: Security) -> MailSettings {
    MailSettings {
        host: "127.0.0.1".into(),
        port: Some(port),
        security,
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        ca_file: Some(ca.ca_file()),
        from: "Incident updates <incidents@example.com>".into(),
        message_id_domain: Some("updates.example.com".into()),
        timeout_secs: 10,
        lists: lists(),
    }
}

/// The same settings as a config file, for server processes.
fn settings_toml(ca: &Path, port: u16, extra: &str) -> String {
    format!(
        r#"{extra}
[webhook-delivery]
retry-initial-ms = 100
retry-max-secs = 1

[mail]
host = "127.0.0.1"
port = {port}
username = "{USER}"
password = "{PASSWORD}"
ca-file = "{ca}"
from = "Incident updates <incidents@example.com>"
message-id-domain = "updates.example.com"
timeout-secs = 10

[[mail.lists]]
address = "Ops <ops@example.com>"

[[mail.lists]]
address = "exec@example.com"
severities = ["SEV1"]
"#,
        ca = ca.display()
    )
}

/// A relay with our credentials (refusing every message with a 5xx when `refuse`) and a server mailing through it
/// with `security`: the setup most tests share.
async fn relay_and_server(
    ca: &TestCa,
    mode: SmtpMode,
    refuse: bool,
    security: Security,
) -> (SmtpServer, TestServer) {
    let smtp = SmtpServer::start(ca, mode, Some((USER, PASSWORD)), refuse, 0).await;
    let port = smtp.port;
    let server = TestServer::start_with(|c| c.mail = Some(settings(ca, port, security))).await;
    (smtp, server)
}

async fn send(server: &TestServer, token: &str, id: &str) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/api/incidents/{id}/update/send"),
            Some(token),
            Some(&json!({})),
        )
        .await
}

/// Sends the update that described `heads` (as the page does, with the heads of the update it previewed).
async fn send_heads(
    server: &TestServer,
    token: &str,
    id: &str,
    heads: &[String],
) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/api/incidents/{id}/update/send"),
            Some(token),
            Some(&json!({ "heads": heads })),
        )
        .await
}

/// The heads of the update `GET …/update` previews now (its `Commandpost-Heads` header).
async fn preview_heads(server: &TestServer, token: &str, id: &str) -> Vec<String> {
    let response = server
        .request(
            Method::GET,
            &format!("/api/incidents/{id}/update"),
            Some(token),
        )
        .send()
        .await
        .expect("GET …/update");
    assert_eq!(response.status(), StatusCode::OK);
    let heads = response
        .headers()
        .get("commandpost-heads")
        .and_then(|h| h.to_str().ok())
        .expect("the heads header")
        .to_owned();
    heads.split(',').map(str::to_owned).collect()
}

async fn thread(server: &TestServer, token: &str, id: &str) -> Value {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/api/incidents/{id}/mail"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the `n`th message of the thread (1-based) satisfies `check`, and returns the thread.
async fn thread_until(
    server: &TestServer,
    token: &str,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, DEADLINE, || async {
        let body = thread(server, token, id).await;
        check(&body).then_some(body)
    })
    .await
    .expect("the thread reaches the state")
}

fn recipients(message: &Value) -> Vec<String> {
    let mut to: Vec<String> = message["rcpt_tos"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    to.sort();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_one_thread_with_both_parts_to_the_lists_of_their_severity() {
    let ca = TestCa::new();
    let (smtp, server) = relay_and_server(&ca, SmtpMode::StartTls, false, Security::Starttls).await;
    let alice = server.token("alice", "write").await;
    let title = "Paiement échoué — 決済エラー";
    let incident = server.declare(&alice, title).await;
    let id = &incident.id;
    let number = incident.number.expect("a number");

    // The page offers "Send" to the lists of the incident now (SEV3: ops only).
    let before = thread(&server, &alice, id).await;
    assert_eq!(before["configured"], true);
    assert_eq!(before["to"], json!(["Ops <ops@example.com>"]));
    assert_eq!(before["messages"], json!([]));

    let heads = preview_heads(&server, &alice, id).await;
    let (status, first) = send_heads(&server, &alice, id, &heads).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["to"], json!(["Ops <ops@example.com>"]));
    // The same update (the heads it described) is not mailed twice, however often the request is repeated.
    let (status, again) = send_heads(&server, &alice, id, &heads).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    let response = server
        .operations(
            &alice,
            id,
            json!([
                {"op": "setStatus", "status": "active"},
                {"op": "setChoice", "field": "severity", "value": "SEV1"},
                {"op": "addTimelineEntry", "text": "Rolled back the **payments** client."},
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (status, second) = send(&server, &alice, id).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(
        second["to"],
        json!(["Ops <ops@example.com>", "exec@example.com"])
    );
    server
        .append_timeline(&alice, id, "Error rate back to normal.")
        .await;
    let (status, third) = send(&server, &alice, id).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");

    let messages = smtp.wait_for(3).await;
    let ids: Vec<&str> = [&first, &second, &third]
        .iter()
        .map(|a| a["messageId"].as_str().expect("a message id"))
        .collect();
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(message["tls"], true, "sent after STARTTLS");
        assert_eq!(message["login"], USER, "authenticated");
        assert_eq!(message["mail_from"], "incidents@example.com");
        assert_eq!(message["content_type"], "multipart/alternative");
        assert_eq!(header(message, "Message-ID"), Some(ids[i]));
        assert!(ids[i].starts_with("<update.") && ids[i].ends_with("@updates.example.com>"));
        assert_eq!(header(message, "Auto-Submitted"), Some("auto-generated"));
        assert_eq!(
            header(message, "From"),
            Some("Incident updates <incidents@example.com>")
        );
        assert!(header(message, "Date").is_some());
        // Every header went over the wire as ASCII (the title is RFC 2047-encoded), and decodes to the title.
        let raw = message["raw_headers"].as_str().expect("raw headers");
        assert!(raw.is_ascii(), "{raw}");
        let severity = if i == 0 { "SEV3" } else { "SEV1" };
        // The default template names the incident after its title and the date.
        let subject = header(message, "Subject").expect("a subject");
        assert!(
            subject.starts_with(&format!("[{severity}] #{number} {title}"))
                && subject.ends_with(": status update"),
            "{subject}"
        );
        let text = message["parts"]["text/plain"]
            .as_str()
            .expect("a text part");
        let html = message["parts"]["text/html"]
            .as_str()
            .expect("an HTML part");
        assert!(
            text.contains(title) && text.contains("Status update"),
            "{text}"
        );
        assert!(html.contains(title) && html.contains("<h2>"), "{html}");
    }
    assert_eq!(recipients(&messages[0]), ["ops@example.com"]);
    assert_eq!(
        recipients(&messages[1]),
        ["exec@example.com", "ops@example.com"]
    );
    assert_eq!(
        header(&messages[1], "To"),
        Some("Ops <ops@example.com>, exec@example.com")
    );
    // Threading: none for the first; each answers the previous and lists the thread root first.
    assert_eq!(header(&messages[0], "In-Reply-To"), None);
    assert_eq!(header(&messages[0], "References"), None);
    assert_eq!(header(&messages[1], "In-Reply-To"), Some(ids[0]));
    assert_eq!(header(&messages[1], "References"), Some(ids[0]));
    assert_eq!(header(&messages[2], "In-Reply-To"), Some(ids[1]));
    assert_eq!(
        header(&messages[2], "References"),
        Some(format!("{} {}", ids[0], ids[1]).as_str())
    );
    // The second update says what changed, in both parts; Markdown became HTML.
    let text = messages[1]["parts"]["text/plain"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("Severity: SEV3 → SEV1"), "{text}");
    let html = messages[1]["parts"]["text/html"]
        .as_str()
        .unwrap_or_default();
    assert!(html.contains("<strong>payments</strong>"), "{html}");

    let state = thread_until(&server, &alice, id, "three delivered", |t| {
        t["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["state"] == "delivered"))
    })
    .await;
    assert_eq!(
        state["to"],
        json!(["Ops <ops@example.com>", "exec@example.com"])
    );
    assert_eq!(state["messages"][1]["to"], second["to"]);
    assert_eq!(state["messages"][0]["lastStatus"], 250);
    // Sent as "mark as sent" records it: the timeline says so, and the last update is recorded.
    let markdown = server.markdown(&alice, id).await;
    assert!(
        markdown
            .contains("Status update sent: by email to Ops <ops@example.com>, exec@example.com"),
        "{markdown}"
    );
    assert_eq!(
        server.metric("commandpost_mail_sent_total").await.ok(),
        Some(3)
    );
    assert_eq!(smtp.messages().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templates_own_lists_receive_its_incidents_by_severity() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start(&ca, SmtpMode::StartTls, Some((USER, PASSWORD)), false, 0).await;
    let port = smtp.port;
    let templates = tempfile::tempdir().expect("a templates directory");
    std::fs::write(
        templates.path().join("payments.md"),
        "# Payments\n<!-- commandpost mail-to=payments@example.com mail-to.SEV1=cfo@example.com -->\n\n\
         Payments incidents.\n\n## Title\n<!-- commandpost key=title kind=text -->\n\n\
         ## Severity\n<!-- commandpost key=severity kind=choice default=SEV3 -->\n- SEV1: Critical\n- SEV3: Minor\n\n## Timeline\n<!-- commandpost key=timeline kind=timeline -->\n",
    )
    .expect("writing the template");
    let dir = templates.path().to_owned();
    let server = TestServer::start_with(|c| {
        let mut mail = settings(&ca, port, Security::Starttls);
        mail.lists.clear();
        c.mail = Some(mail);
        c.templates_dir = Some(dir);
    })
    .await;
    let alice = server.token("alice", "write").await;
    let (status, declared) = server
        .call(
            Method::POST,
            "/api/incidents",
            Some(&alice),
            Some(&json!({"title": "Card payments declined", "template": "payments"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{declared}");
    let id = declared["id"].as_str().expect("an id");
    assert_eq!(
        thread(&server, &alice, id).await["to"],
        json!(["payments@example.com"])
    );
    let (status, first) = send(&server, &alice, id).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let response = server
        .operations(
            &alice,
            id,
            json!([{"op": "setChoice", "field": "severity", "value": "SEV1"}]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (status, second) = send(&server, &alice, id).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(
        second["to"],
        json!(["payments@example.com", "cfo@example.com"])
    );
    let messages = smtp.wait_for(2).await;
    assert_eq!(recipients(&messages[0]), ["payments@example.com"]);
    assert_eq!(
        recipients(&messages[1]),
        ["cfo@example.com", "payments@example.com"]
    );
    // Incidents of other templates have no list here: sending is refused, marking as sent still works.
    let other = server.declare(&alice, "Elsewhere").await;
    let (status, _) = send(&server, &alice, &other.id).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_titles_stay_in_the_subject_and_scripts_stay_out_of_the_html() {
    let ca = TestCa::new();
    let (smtp, server) = relay_and_server(&ca, SmtpMode::Tls, false, Security::Tls).await;
    let alice = server.token("alice", "write").await;
    // CR and LF never get into a title (declaring and editing refuse them; `mail::one_line` is tested with them),
    // but the other line and control characters do: a tab, LINE SEPARATOR, NEL and a vertical tab.
    let title = "Outage\tBcc: attacker@evil.example\u{2028}X-Injected: yes\u{85}\u{b}body";
    let incident = server.declare(&alice, "Outage").await;
    let response = server
        .operations(
            &alice,
            &incident.id,
            json!([
                {"op": "setText", "field": "title", "text": title},
                {"op": "setText", "field": "summary", "text": tests::hostile::all_in_one()},
            ]),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let (status, body) = send(&server, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let state = thread_until(&server, &alice, &incident.id, "an attempt", |t| {
        t["messages"][0]["attempts"].as_u64().unwrap_or(0) >= 1
            && t["messages"][0]["state"] != "pending"
            || t["messages"][0]["lastError"].is_string()
    })
    .await;
    assert_eq!(state["messages"][0]["state"], "delivered", "{state}");
    let message = &smtp.wait_for(1).await[0];
    assert_eq!(message["tls"], true, "implicit TLS");
    assert_eq!(recipients(message), ["ops@example.com"]);
    let headers = message["headers"].as_object().expect("headers");
    assert!(
        !headers.contains_key("bcc") && !headers.contains_key("x-injected"),
        "{headers:?}"
    );
    let subject = header(message, "Subject").expect("a subject");
    assert!(
        subject.ends_with("Outage Bcc: attacker@evil.example X-Injected: yes body: status update"),
        "{subject}"
    );
    let html = message["parts"]["text/html"].as_str().expect("html");
    // The payloads stay as text; no tag survives that runs, loads or navigates anything.
    let lower = html.to_ascii_lowercase();
    for forbidden in [
        "<script",
        "<img",
        "<iframe",
        "<svg",
        "<style",
        "<meta http",
        "<form",
        "<object",
        "<embed",
        "<base",
    ] {
        assert!(!lower.contains(forbidden), "{forbidden} in {html}");
    }
    let tags = lower
        .split('<')
        .skip(1)
        .filter_map(|rest| rest.split_once('>').map(|(tag, _)| tag));
    for tag in tags {
        for forbidden in ["javascript", "vbscript", "data:", " on", "style="] {
            assert!(!tag.contains(forbidden), "<{tag}> in {html}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_down_at_first_gets_the_update_once_up_across_a_restart() {
    let ca = TestCa::new();
    // A port nothing listens on yet: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server =
        TestServer::start_process_with_config(&settings_toml(&ca.ca_file(), port, "")).await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Relay down").await;
    let (status, sent) = send(&server, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let pending = thread_until(&server, &alice, &incident.id, "a failed attempt", |t| {
        t["messages"][0]["attempts"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let message = &pending["messages"][0];
    assert_eq!(message["state"], "pending", "{message}");
    assert!(
        message["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{message}"
    );
    assert!(
        server
            .metric("commandpost_mail_retried_total")
            .await
            .unwrap_or(0)
            >= 1
    );

    // Our server restarts while the relay is still down; then the relay comes up.
    server.stop_process().await;
    let smtp =
        SmtpServer::start(&ca, SmtpMode::StartTls, Some((USER, PASSWORD)), false, port).await;
    server.restart().await;
    let messages = smtp.wait_for(1).await;
    assert_eq!(
        header(&messages[0], "Message-ID"),
        sent["messageId"].as_str()
    );
    let thread = thread_until(&server, &alice, &incident.id, "delivered", |t| {
        t["messages"][0]["state"] == "delivered"
    })
    .await;
    assert_eq!(
        thread["messages"].as_array().map(Vec::len),
        Some(1),
        "{thread}"
    );
    // Delivered once: the thread holds one row and it is delivered, which is final, so nothing more can be sent.
    assert_eq!(smtp.messages().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_fails_at_once_and_shows_in_the_log_and_metrics() {
    let ca = TestCa::new();
    let (smtp, server) = relay_and_server(&ca, SmtpMode::StartTls, true, Security::Starttls).await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Refused").await;
    let (status, _) = send(&server, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CREATED);
    let failed = thread_until(&server, &alice, &incident.id, "failed", |t| {
        t["messages"][0]["state"] == "failed"
    })
    .await;
    let message = &failed["messages"][0];
    assert_eq!(message["attempts"], 1, "a 5xx is not retried: {message}");
    assert_eq!(message["lastStatus"], 550);
    assert!(
        message["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("no such mailing list")),
        "{message}"
    );
    assert_eq!(
        server.metric("commandpost_mail_failed_total").await.ok(),
        Some(1)
    );
    assert_eq!(
        server.metric("commandpost_mail_sent_total").await.ok(),
        Some(0)
    );
    assert!(smtp.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_does_not_offer_starttls_is_refused() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start(&ca, SmtpMode::Plain, Some((USER, PASSWORD)), false, 0).await;
    let port = smtp.port;
    let server = TestServer::start_with(|c| {
        c.mail = Some(settings(&ca, port, Security::Starttls));
        c.webhook_delivery.retry_initial_ms = 100;
        c.webhook_delivery.retry_max_secs = 1;
    })
    .await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "No STARTTLS").await;
    let (status, _) = send(&server, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CREATED);
    let refused = thread_until(&server, &alice, &incident.id, "refused attempts", |t| {
        t["messages"][0]["attempts"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let message = &refused["messages"][0];
    assert_eq!(message["state"], "pending", "{message}");
    assert!(
        message["lastError"]
            .as_str()
            .is_some_and(|e| e.to_ascii_lowercase().contains("tls")),
        "{message}"
    );
    assert!(
        smtp.messages().is_empty(),
        "nothing (and no password) went in clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_relay_takes_plain_smtp_when_configured_so() {
    // A local MTA on 127.0.0.1 without TLS (`security = "none"`, refused for any other host at start-up).
    let ca = TestCa::new();
    let smtp = SmtpServer::start(&ca, SmtpMode::Plain, None, false, 0).await;
    let port = smtp.port;
    let server = TestServer::start_with(|c| {
        let mut mail = settings(&ca, port, Security::None);
        mail.username = None;
        mail.password = None;
        c.mail = Some(mail);
    })
    .await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Local relay").await;
    let (status, body) = send(&server, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let message = &smtp.wait_for(1).await[0];
    assert_eq!(message["tls"], false);
    assert_eq!(header(message, "Message-ID"), body["messageId"].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_refuses_what_it_cannot_mail() {
    // No [mail]: 409, and the thread says mail is off.
    let plain = TestServer::start().await;
    let alice = plain.token("alice", "write").await;
    let reader = plain.token("reader", "read").await;
    let incident = plain.declare(&alice, "No mail here").await;
    let (status, body) = send(&plain, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let off = thread(&plain, &reader, &incident.id).await;
    assert_eq!(off, json!({"configured": false, "to": [], "messages": []}));
    let (status, _) = send(&plain, &reader, &incident.id).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Only a SEV1 list: a SEV3 incident has no list to send to.
    let ca = TestCa::new();
    let server = TestServer::start_with(|c| {
        let mut mail = settings(&ca, 9, Security::Starttls);
        mail.lists.retain(|l| !l.severities.is_empty());
        c.mail = Some(mail);
    })
    .await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, "Minor").await;
    let (status, body) = send(&server, &alice, &incident.id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SEV3")),
        "{body}"
    );
    for hostile in [
        json!({"heads": ["not a head"]}),
        json!({"heads": ["0".repeat(64)]}),
        json!({"heads": "x"}),
        json!({"to": ["attacker@evil.example"]}),
    ] {
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/api/incidents/{}/update/send", incident.id),
                Some(&alice),
                Some(&hostile),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{hostile}: {body}"
        );
    }
    let (status, _) = server
        .call(Method::GET, "/api/incidents/nope/mail", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(
            Method::POST,
            "/api/incidents/nope/update/send",
            Some(&alice),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgres_send_each_update_once() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start(&ca, SmtpMode::StartTls, Some((USER, PASSWORD)), false, 0).await;
    let db = TestDatabase::create();
    let config = settings_toml(
        &ca.ca_file(),
        smtp.port,
        &format!("database-url = \"{}\"", db.url()),
    );
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    let incident = node1.declare(&alice, "Two nodes").await;
    let id = &incident.id;
    let mut ids = Vec::new();
    for (i, node) in [&node1, &node2, &node1, &node2].into_iter().enumerate() {
        node.append_timeline(&alice, id, &format!("news {i}")).await;
        let heads = preview_heads(node, &alice, id).await;
        let other = if i % 2 == 0 { &node2 } else { &node1 };
        // The other node follows the change (and the last send) before it is asked the same.
        let want = node.heads(&alice, id).await;
        eventually("the other node caught up", DEADLINE, || async {
            (other.heads(&alice, id).await == want).then_some(())
        })
        .await
        .expect("the nodes converge");
        let (status, body) = send_heads(node, &alice, id, &heads).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["messageId"].as_str().expect("a message id").to_owned());
        // The same update sent again through the other node (a retried request, a second click) is mailed already.
        let (status, body) = send_heads(other, &alice, id, &heads).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    let messages = smtp.wait_for(4).await;
    thread_until(&node2, &alice, id, "all delivered", |t| {
        t["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 4 && m.iter().all(|m| m["state"] == "delivered"))
    })
    .await;
    // Four rows, each delivered (final, and claims are exclusive): no mailer can send anything more, so the relay
    // holds exactly one message per update.
    let messages_now = smtp.messages();
    assert_eq!(messages_now.len(), 4, "{messages_now:?}");
    let got: Vec<&str> = messages
        .iter()
        .map(|m| header(m, "Message-ID").unwrap_or_default())
        .collect();
    assert_eq!(got, ids);
    assert_eq!(header(&messages[3], "In-Reply-To"), Some(ids[2].as_str()));
    let sent = node1
        .metric("commandpost_mail_sent_total")
        .await
        .unwrap_or(0)
        + node2
            .metric("commandpost_mail_sent_total")
            .await
            .unwrap_or(0);
    assert_eq!(sent, 4);
}
