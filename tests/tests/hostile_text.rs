//! User text never runs as code in the HTML export: the payloads of `tests::hostile` (script tags, event-handler
//! attributes, `javascript:`/`data:` links in Markdown and raw HTML, their obfuscated spellings, Markdown raw HTML)
//! go into every text-bearing field over the HTTP API, and the export comes out inert, both as the model renders it
//! and as the server serves it (`?format=html`), while the text itself is still there to read. The insights page,
//! which may show incident titles, is checked for unescaped payloads. The web UI gets the same payloads in `browser.rs`.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{TestServer, hostile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_in_every_field_leaves_the_html_export_inert() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("mallory", "write").await;
    let id = server.declare(&token, "Hostile").await.id;
    let response = server.operations(&token, &id, hostile::operations()).await;
    anyhow::ensure!(
        response.status().is_success(),
        "the payloads are ordinary text to the API: {}",
        response.text().await?
    );
    let title = server
        .operations(
            &token,
            &id,
            json!([{"op": "setText", "field": "title", "text": hostile::PAYLOADS[0]}]),
        )
        .await;
    anyhow::ensure!(title.status().is_success(), "{}", title.text().await?);

    // The model's rendering.
    let incident = server.document(&token, &id).await;
    let model = incident_doc::export::html(&incident.view());
    // What the server serves, which must be the same page.
    let response = server
        .request(
            Method::GET,
            &format!("/api/incidents/{id}/export?format=html"),
            Some(&token),
        )
        .send()
        .await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(content_type.starts_with("text/html"), "{content_type}");
    // Behind the sanitizer, the browser is told to run no script from the export at all.
    let policy = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        policy.contains("default-src 'none'")
            && !policy.contains("script-src")
            && policy.contains("sandbox"),
        "content security policy {policy:?}"
    );
    anyhow::ensure!(
        response
            .headers()
            .get("x-content-type-options")
            .is_some_and(|v| v == "nosniff"),
        "nosniff"
    );
    let served = response.text().await?;
    anyhow::ensure!(served == model, "the served export is the model's page");
    if let Err(problems) = hostile::inert(&served) {
        anyhow::bail!("the HTML export is not inert:\n{}", problems.join("\n"));
    }
    // The text is shown, escaped, not dropped: a responder must see what was pasted.
    for shown in [
        "&lt;script&gt;window.__pwned=1",
        "raw link",
        "entity link",
        "click me",
    ] {
        anyhow::ensure!(
            served.contains(shown),
            "{shown:?} is missing from the export"
        );
    }

    // The insights page draws its own SVG and styles (so the export's check does not apply), and may show
    // titles: no payload may come through as markup there.
    let insights = server
        .request(Method::GET, "/insights", Some(&token))
        .send()
        .await?
        .text()
        .await?;
    for payload in hostile::PAYLOADS {
        anyhow::ensure!(
            !insights.contains(payload),
            "the insights page holds {payload:?} unescaped"
        );
    }

    // Every payload went in as data: the JSON export holds them verbatim.
    let view = server.incident_json(&token, &id).await;
    let summary = view["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "summary"))
        .and_then(|f| f["value"].as_str())
        .context("the summary")?;
    anyhow::ensure!(summary == hostile::all_in_one(), "summary {summary:?}");
    server.stop().await;
    Ok(())
}
