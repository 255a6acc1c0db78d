//! A replay drill in a real headless Chromium (the harness of `tests/src/browser.rs`) at ×10: on a closed incident
//! its commander picks ×10 and starts *Replay as drill*, lands on the new drill, pauses and resumes it from the
//! facilitator bar, watches the original's timeline entries arrive in the page, and compares the drill with the
//! original side by side once it has finished.

use anyhow::{Context, ensure};
use chrono::{SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::json;
use tests::{Browser, DEADLINE, TestServer, WindowSize};

fn time_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The facilitator bar's state and progress, as the page shows them.
async fn bar(browser: &Browser) -> anyhow::Result<serde_json::Value> {
    browser
        .execute(
            "const b = document.querySelector('#replay .replay-bar');
             const p = document.querySelector('#replay .replay-progress');
             return b && p ? [b.dataset.state, Number(p.dataset.delivered), Number(p.dataset.total)] : null;",
            vec![],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_replays_a_closed_incident_at_ten_times_speed() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let alice = server.token("alice", "write").await;
    let source = server.declare(&alice, "Checkout errors").await.id;
    let ops = json!([
        {"op": "setText", "field": "summary", "text": "Checkout failed for a third of users."},
        {"op": "addTimelineEntry", "text": "error rate up", "at": time_in(100)},
        {"op": "addTimelineEntry", "text": "rolled back", "at": time_in(200)},
        {"op": "addTimelineEntry", "text": "errors gone", "at": time_in(280)},
    ]);
    let response = server.operations(&alice, &source, ops).await;
    ensure!(response.status() == StatusCode::OK);
    let close =
        json!([{"op": "setStatus", "status": "closed", "overrideReason": "the source of a drill"}]);
    let response = server.operations(&alice, &source, close).await;
    ensure!(response.status() == StatusCode::OK);

    let browser = Browser::open("replay-facilitator", WindowSize::DESKTOP).await?;
    browser.sign_in(base, &alice).await?;
    browser
        .goto(&format!("{base}/#/incidents/{source}"))
        .await?;
    browser.wait_for("[data-replay-start]", DEADLINE).await?;
    browser
        .execute(
            "const s = document.querySelector('#replay-speed'); s.value = '10';",
            vec![],
        )
        .await?;
    browser.click("[data-replay-start]").await?;
    let drill = browser
        .wait_until("the page to open the drill", DEADLINE, || async {
            let url = browser.url().await?;
            let id = url.rsplit_once("#/incidents/").map(|(_, id)| id.to_owned());
            Ok(id.filter(|id| *id != source))
        })
        .await?;
    browser.wait_for("#replay .replay-bar", DEADLINE).await?;
    let title = browser.text(".headline h1").await?.unwrap_or_default();
    ensure!(
        title.starts_with("Replay of #1: Checkout errors"),
        "{title}"
    );

    // Paused and resumed from the bar.
    browser.wait_for("[data-replay=pause]", DEADLINE).await?;
    browser.click("[data-replay=pause]").await?;
    browser
        .wait_until("the bar to say paused", DEADLINE, || async {
            let shown = bar(&browser).await?;
            Ok((shown[0] == "paused").then_some(()))
        })
        .await?;
    browser.click("[data-replay=resume]").await?;
    browser
        .wait_until("the replay to finish in the page", DEADLINE * 3, || async {
            let shown = bar(&browser).await?;
            Ok((shown == json!(["finished", 4, 4])).then_some(()))
        })
        .await
        .map_err(|_| anyhow::anyhow!("the replay did not finish"))?;
    browser
        .wait_until("the last entry in the timeline", DEADLINE, || async {
            let text = browser.text("#fields").await?.unwrap_or_default();
            Ok(text.contains("alice (replayed): errors gone").then_some(()))
        })
        .await?;

    // The players write; the comparison sets both teams side by side.
    let ops = json!([{"op": "setText", "field": "summary", "text": "Checkout down for some."}]);
    let response = server.operations(&alice, &drill, ops).await;
    ensure!(response.status() == StatusCode::OK);
    browser.click("[data-replay=compare]").await?;
    browser.wait_for("#replay-compare", DEADLINE).await?;
    let table = browser
        .text("#replay-compare")
        .await?
        .context("the table")?;
    ensure!(
        table.contains("Checkout failed for a third of users."),
        "{table}"
    );
    ensure!(table.contains("Checkout down for some."), "{table}");
    let found = browser.axe_violations().await?;
    ensure!(found.is_empty(), "accessibility: {found:#?}");
    browser.close().await?;
    server.stop().await;
    Ok(())
}
