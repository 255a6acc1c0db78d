//! Interop with the stock JavaScript client: `@automerge/automerge-repo` with its `WebSocketClientAdapter` (the
//! versions pinned in `tests/js/package-lock.json`), run by Node from `tests/js/client.mjs` (through
//! `tests::js_client`, which connects with a sync ticket as a browser does), against a real server.
//!
//! - An incident declared over HTTP is found by the JS client through its `automerge:` URL, edited there (with
//!   UTF-16 positions, an emoji included, and a JS `Date` stamp), and the server's Markdown export shows the edit.
//! - The other way: while the JS client watches, a Rust sync peer and then an HTTP operation edit the summary, and
//!   the JS client sees each edit live.
//! - A JS client asking for a document that does not exist, or no longer does, is told it is unavailable: `find`
//!   rejects promptly instead of hanging.
//!
//! The tests need Node.js on `PATH` and `npm ci` run in `tests/js` (`scripts/test.sh` and CI do it); without them
//! they fail and say so.

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tests::js_client::{JS_AUTHOR, JS_TIMEOUT, JsClient};
use tests::{SyncClient, TestServer, markdown_section};
use wire::DocumentId;

/// The `text` of an event, which must be a string.
fn text_of(event: &Value) -> anyhow::Result<&str> {
    event["text"]
        .as_str()
        .with_context(|| format!("no text in {event}"))
}

/// The JS client finds an incident declared over HTTP by its URL, reads it, edits the summary with UTF-16
/// positions, and the server's Markdown export shows exactly the JS client's text and its stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_edit_reaches_the_markdown_export() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    // The client stamps its edits with its author, which must be the token's name: the server puts back stamps
    // naming anyone else.
    let token = server.token(JS_AUTHOR, "write").await;
    let incident = server.declare(&token, "Checkout errors").await;

    // "🚀" is two UTF-16 code units, so position 11 is just after it: JS counts "Checkout " (9) + 2.
    let mut js = JsClient::spawn(
        &server.ws_url(&token),
        &incident.url,
        json!([
            {"op": "print", "field": "title"},
            {"op": "print", "field": "summary"},
            {"op": "splice", "field": "summary", "pos": 0, "del": 0, "text": "Checkout 🚀 fails."},
            {"op": "splice", "field": "summary", "pos": 11, "del": 6, "text": " is down for EU customers"},
        ]),
    )
    .await?;
    let ready = js.expect("ready").await?;
    ensure!(
        ready["url"] == incident.url.as_str(),
        "the JS client opened {} instead of {}",
        ready["url"],
        incident.url
    );
    let title = js.expect("text").await?;
    ensure!(
        text_of(&title)?.starts_with("Checkout errors: "),
        "the JS client reads the server's title as {title}"
    );
    let summary = js.expect("text").await?;
    ensure!(
        text_of(&summary)?.is_empty(),
        "a new incident's summary is empty, the JS client reads {summary}"
    );
    js.expect("spliced").await?;
    let edited = js.expect("spliced").await?;
    let expected = "Checkout 🚀 is down for EU customers.";
    ensure!(
        text_of(&edited)? == expected,
        "the JS client's own text is {edited}, not {expected:?}"
    );
    // `flushed` means the server advertised exactly the JS client's heads, which it does only once they are durable.
    js.expect("flushed").await?;
    js.expect("done").await?;
    let status = js.exit().await?;
    ensure!(status.success(), "the JS client exited with {status}");

    let markdown = server.markdown(&token, &incident.id).await;
    let section =
        markdown_section(&markdown, "Summary").context("the export has a Summary section")?;
    ensure!(
        section == expected,
        "the export's summary is {section:?}, the JS client wrote {expected:?}; export:\n{markdown}"
    );
    // The JS `Date` and the JS string (stored as Text by JavaScript Automerge) read back as the stamp.
    let stamp = format!("UTC by {JS_AUTHOR}._");
    ensure!(
        markdown.contains(&stamp),
        "the export has no stamp {stamp:?} for the JS client's edit:\n{markdown}"
    );
    server.stop().await;
    Ok(())
}

/// While the JS client watches the summary (with a read-only token, as a status page would), a Rust sync peer edits
/// it and then an HTTP operation replaces it; the JS client sees each edit without asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_sees_sync_and_http_edits_live() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let writer = server.token("rust-writer", "write").await;
    let reader = server.token("js-watcher", "read").await;
    let incident = server.declare(&writer, "Checkout errors").await;

    let mut js = JsClient::spawn(
        &server.ws_url(&reader),
        &incident.url,
        json!([
            {"op": "wait", "field": "summary", "contains": "rolled back"},
            {"op": "wait", "field": "summary", "contains": "Mitigated"},
        ]),
    )
    .await?;
    js.expect("ready").await?;

    let mut rust = SyncClient::connect(&server.ws_url(&writer)).await?;
    rust.open(&incident.id).await?;
    rust.splice("summary", 0, 0, "We rolled back 🚀 release 2026.11.24-3.")
        .await?;
    let seen = js.expect("seen").await?;
    ensure!(
        text_of(&seen)? == rust.text("summary"),
        "the JS client saw {seen}, the Rust peer wrote {:?}",
        rust.text("summary")
    );

    let replaced = "Mitigated: error rate back to normal.";
    let response = server
        .operations(
            &writer,
            &incident.id,
            json!([{"op": "setText", "field": "summary", "text": replaced}]),
        )
        .await;
    ensure!(
        response.status().is_success(),
        "the HTTP operation was refused: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    let seen = js.expect("seen").await?;
    ensure!(
        text_of(&seen)? == replaced,
        "the JS client saw {seen} after the HTTP edit, not {replaced:?}"
    );
    js.expect("done").await?;
    let status = js.exit().await?;
    ensure!(status.success(), "the JS client exited with {status}");
    server.stop().await;
    Ok(())
}

/// A JS client asking for a document the server does not have (never created, or deleted) gets "unavailable" from
/// `find`, promptly, rather than waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_is_told_an_unknown_document_is_unavailable() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("js-reader", "read").await;

    let never = DocumentId::random().url();
    let deleted = server.declare(&server.admin_token, "Deleted").await;
    let response = server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/incidents/{}", deleted.id),
            Some(&server.admin_token),
        )
        .send()
        .await
        .context("DELETE /api/incidents/{id}")?;
    ensure!(
        response.status() == reqwest::StatusCode::NO_CONTENT,
        "deleting the incident answered {}",
        response.status()
    );

    for url in [never, deleted.url] {
        let started = std::time::Instant::now();
        let mut js = JsClient::spawn(&server.ws_url(&token), &url, json!([])).await?;
        let event = js.expect("unavailable").await?;
        ensure!(
            event["message"]
                .as_str()
                .is_some_and(|m| m.contains("unavailable")),
            "unexpected message in {event}"
        );
        let status = js.exit().await?;
        ensure!(
            status.code() == Some(2),
            "the JS client exits with 2 for an unavailable document, not {status}"
        );
        // Its own deadline is 30 s; being told is a matter of one round trip.
        let took = started.elapsed();
        if took >= JS_TIMEOUT {
            bail!("the JS client took {took:?} to learn that {url} is unavailable");
        }
    }
    server.stop().await;
    Ok(())
}

/// The stock JS client, used by someone who is not the commander, makes itself commander with a plain property
/// assignment: the server reverts it, the JS client hears why in an ephemeral message and ends with the real
/// commander, and the server's copy never changed hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_cannot_seize_command() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let incident = server.declare(&alice, "Command drill").await;

    let mut js = JsClient::spawn(
        &server.ws_url(&mallory),
        &incident.url,
        json!([
            {"op": "put", "path": ["roles", "commander"], "value": "mallory"},
            {"op": "waitValue", "path": ["roles", "commander"], "equals": "alice"},
        ]),
    )
    .await?;
    js.expect("ready").await?;
    let refusal = js.expect("ephemeral").await?;
    ensure!(
        refusal["message"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("only the Incident Commander (alice)")),
        "the JS client was not told why: {refusal}"
    );
    ensure!(
        refusal["fromServer"] == true,
        "the refusal did not come from the server's peer id: {refusal}"
    );
    let value = js.expect("value").await?;
    ensure!(value["value"] == "alice", "{value}");
    js.expect("flushed").await?;
    js.expect("done").await?;
    let status = js.exit().await?;
    ensure!(status.success(), "the JS client exited with {status}");
    let json = server.incident_json(&alice, &incident.id).await;
    let roles = json["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["kind"] == "roles"))
        .context("a roles field")?;
    ensure!(roles["value"]["commander"] == "alice", "{roles}");
    server.stop().await;
    Ok(())
}

/// A closed incident is an archive: the stock JS client's edit of the summary is undone by the server, the client
/// is told why, and the server's copy is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_cannot_edit_an_archive() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("js-writer", "write").await;
    let incident = server.declare(&token, "Archived drill").await;
    let closed = server
        .operations(
            &token,
            &incident.id,
            json!([{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]),
        )
        .await;
    ensure!(closed.status().is_success(), "closing: {}", closed.status());
    let before = server.markdown(&token, &incident.id).await;

    let mut js = JsClient::spawn(
        &server.ws_url(&token),
        &incident.url,
        json!([
            {"op": "splice", "field": "summary", "pos": 0, "del": 0, "text": "Rewritten."},
            {"op": "waitValue", "path": ["summary"], "equals": ""},
        ]),
    )
    .await?;
    js.expect("ready").await?;
    js.expect("spliced").await?;
    let refusal = js.expect("ephemeral").await?;
    ensure!(
        refusal["message"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("closed and archived")),
        "the JS client was not told why: {refusal}"
    );
    js.expect("value").await?;
    js.expect("flushed").await?;
    js.expect("done").await?;
    let status = js.exit().await?;
    ensure!(status.success(), "the JS client exited with {status}");
    let after = server.markdown(&token, &incident.id).await;
    ensure!(after == before, "the archive changed:\n{after}");
    server.stop().await;
    Ok(())
}

/// The stock JS client, used by someone who is not the commander, deletes what the document *is* with plain
/// JavaScript (`delete d.layout`, `d.layout.deleteAt(i)`, keys the server owns, a key outside the schema): the
/// server puts each back, every view still shows every field and the commander, and the attempts are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_cannot_rewrite_what_the_document_is() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token(JS_AUTHOR, "write").await;
    let incident = server.declare(&alice, "Schema drill").await;
    let before = server.incident_json(&alice, &incident.id).await;
    let fields = before["fields"]
        .as_array()
        .map(Vec::len)
        .context("fields")?;
    let roles_at = before["fields"]
        .as_array()
        .and_then(|f| f.iter().position(|f| f["kind"] == "roles"))
        .context("a roles field")?;

    let mut js = JsClient::spawn(
        &server.ws_url(&mallory),
        &incident.url,
        json!([
            {"op": "delete", "path": ["layout"]},
            {"op": "waitValue", "path": ["layout", "length"], "equals": fields},
            {"op": "delete", "path": ["layout", roles_at]},
            {"op": "delete", "path": ["createdBy"]},
            {"op": "put", "path": ["audit"], "value": []},
            {"op": "put", "path": ["authors"], "value": {}},
            {"op": "put", "path": ["mine"], "value": "a key of my own"},
            {"op": "waitValue", "path": ["layout", "length"], "equals": fields},
            {"op": "waitValue", "path": ["createdBy"], "equals": "alice"},
        ]),
    )
    .await?;
    js.expect("ready").await?;
    let refusal = js.expect("ephemeral").await?;
    ensure!(
        refusal["message"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("`layout`")),
        "the JS client was not told why: {refusal}"
    );
    js.skip_to("done").await?;
    let status = js.exit().await?;
    ensure!(status.success(), "the JS client exited with {status}");
    let after = server.incident_json(&alice, &incident.id).await;
    ensure!(
        after["fields"].as_array().map(Vec::len) == Some(fields),
        "every field shows: {after}"
    );
    ensure!(after["createdBy"] == "alice", "{after}");
    let roles = after["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["kind"] == "roles"))
        .context("a roles field")?;
    ensure!(roles["value"]["commander"] == "alice", "{roles}");
    let audit = after["audit"].as_array().context("an audit trail")?;
    ensure!(
        audit
            .iter()
            .filter(|e| e["rule"] == "schema" && e["by"] == JS_AUTHOR)
            .count()
            >= 2,
        "{audit:?}"
    );
    ensure!(
        !server
            .markdown(&alice, &incident.id)
            .await
            .contains("a key of my own"),
        "the foreign key is gone"
    );
    server.stop().await;
    Ok(())
}
