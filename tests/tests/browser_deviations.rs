//! The revert list and the operations log in a real headless Chromium (the harness of `tests/src/browser.rs`): the
//! commander adds a deviation on the incident page; closing then asks for a reason naming the open deviation
//! (dismissed: nothing closes, and the server refuses a close over HTTP too); "Mark reverted" lets the incident
//! close. An uncoordinated change logged by someone outside Operations shows as a banner on the commander's page at
//! once, and the page (both sections and the banner) stays clean under axe; once the commander delegates to him on
//! the page, his changes are coordinated.

use std::time::Duration;

use anyhow::{Context, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Browser, DEADLINE, TestServer, WindowSize, eventually};

/// Chooses `closed` in the status select; the change handler runs after the script returns, since it may open a
/// prompt, which would block the script.
async fn choose_closed(browser: &Browser) -> anyhow::Result<()> {
    browser
        .execute(
            r#"const select = document.querySelector('section[data-field="status"] select');
               select.value = "closed";
               setTimeout(() => select.dispatchEvent(new Event('change')), 0);"#,
            vec![],
        )
        .await?;
    Ok(())
}

/// Waits for the page's prompt and returns its text.
async fn prompt_text(browser: &Browser) -> anyhow::Result<String> {
    browser
        .wait_until("a prompt", DEADLINE, || async {
            Ok(browser.client().get_alert_text().await.ok())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_deviation_blocks_closing_until_it_is_reverted() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;
    // The exit criteria are met, so only the deviation stands in the way.
    let json = server.incident_json(&alice, &id).await;
    let exit = json["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "exitCriteria"))
        .context("exit criteria")?;
    let done: Vec<Value> = exit["value"]
        .as_array()
        .context("items")?
        .iter()
        .map(|i| json!({"op": "setItemDone", "field": "exitCriteria", "id": i["id"], "done": true}))
        .collect();
    let response = server.operations(&alice, &id, Value::Array(done)).await;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());

    let page = Browser::open("deviations-commander", WindowSize::DESKTOP).await?;
    page.sign_in(base, &alice).await?;
    page.open_incident(base, &id).await?;

    // Add a deviation through the page.
    page.type_text(
        "[data-add-deviation] input[name=what]",
        "Feature flag new-checkout off",
    )
    .await?;
    page.type_text(
        "[data-add-deviation] input[name=revert]",
        "Turn new-checkout back on",
    )
    .await?;
    page.click("[data-add-deviation] button[type=submit]")
        .await?;
    page.wait_for("li[data-deviation] [data-mark-reverted]", DEADLINE)
        .await?;
    eventually("the deviation to reach the server", DEADLINE, || async {
        let json = server.incident_json(&alice, &id).await;
        json.to_string()
            .contains("Feature flag new-checkout off")
            .then_some(())
    })
    .await?;

    // Closing asks for a reason naming the open deviation; dismissed, the incident stays open.
    choose_closed(&page).await?;
    let asked = prompt_text(&page).await?;
    ensure!(
        asked.starts_with("1 exit criteria or deviations are still open")
            && asked.contains("deviation not reverted: Feature flag new-checkout off"),
        "the prompt: {asked:?}"
    );
    page.client().dismiss_alert().await?;
    let status = page.value(r#"section[data-field="status"] select"#).await?;
    ensure!(
        status.as_deref() == Some("declared"),
        "after dismissing: {status:?}"
    );
    // The server holds the same line over HTTP.
    let response = server
        .operations(
            &alice,
            &id,
            json!([{"op": "setStatus", "status": "closed"}]),
        )
        .await;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "{}",
        response.status()
    );
    let body = response.text().await?;
    ensure!(
        body.contains("deviation not reverted: Feature flag new-checkout off"),
        "{body}"
    );

    // Bob, outside Operations, logs a change: the commander's page shows it at once.
    let response = server
        .operations(
            &bob,
            &id,
            json!([{"op": "logChange", "what": "restarted pods", "target": "payments-api"}]),
        )
        .await;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    page.wait_for("#uncoordinated-banner [data-uncoordinated]", DEADLINE)
        .await?;
    let banner = page
        .text("#uncoordinated-banner")
        .await?
        .unwrap_or_default();
    ensure!(
        banner.contains("Uncoordinated change by bob on payments-api: restarted pods"),
        "the banner: {banner:?}"
    );
    page.wait_for(
        "li[data-change].uncoordinated .uncoordinated-mark",
        DEADLINE,
    )
    .await?;
    let found = page.axe_violations().await?;
    ensure!(found.is_empty(), "axe: {found:?}");
    page.click("[data-dismiss-uncoordinated]").await?;
    page.wait_until("the banner to go", DEADLINE, || async {
        Ok(page
            .find("#uncoordinated-banner")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;

    // The commander (Operations lead while nobody else is) delegates to Bob on the page: his next change is
    // coordinated, and no banner comes back.
    page.type_text("[data-delegate] input[name=person]", "bob")
        .await?;
    page.click("[data-delegate] button[type=submit]").await?;
    page.wait_for("[data-revoke-delegation=bob]", DEADLINE)
        .await?;
    eventually("the delegation to reach the server", DEADLINE, || async {
        let json = server.incident_json(&alice, &id).await;
        (json["operationsDelegates"] == json!(["bob"])).then_some(())
    })
    .await?;
    let response = server
        .operations(
            &bob,
            &id,
            json!([{"op": "logChange", "what": "scaled to 12", "target": "payments-api"}]),
        )
        .await;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    page.wait_until("bob's coordinated change on the page", DEADLINE, || async {
        Ok((page.texts("li[data-change]").await?.len() == 2).then_some(()))
    })
    .await?;
    ensure!(
        page.find("#uncoordinated-banner").await?.is_none(),
        "a coordinated change raises no banner"
    );

    // Marked reverted, the incident closes without a prompt.
    page.click("[data-mark-reverted]").await?;
    page.wait_until("the deviation to read reverted", DEADLINE, || async {
        Ok(page
            .find("[data-mark-reverted]")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    choose_closed(&page).await?;
    eventually("the incident to close", Duration::from_secs(30), || async {
        let json = server.incident_json(&alice, &id).await;
        (json["status"] == "closed").then_some(())
    })
    .await?;
    let json = server.incident_json(&alice, &id).await;
    let reverted_by = json["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["kind"] == "deviations"))
        .map(|f| f["value"][0]["reverted"]["by"].clone());
    ensure!(
        reverted_by == Some(json!("alice")),
        "the deviation reads reverted by alice on the server: {reverted_by:?}"
    );
    page.close().await?;
    server.stop().await;
    Ok(())
}
