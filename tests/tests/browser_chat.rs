//! The incident page's *Command post channel* section in a real headless Chromium: the commander binds an IRC
//! channel with the form and unbinds it with the button; a Slack channel bound over HTTP shows as a link; a line
//! said there (a signed Slack event) appears in the page's log within a poll, as text, its markup inert.

use anyhow::ensure;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::json;
use server::config::{ChatPerson, ChatSettings, SlackSettings};
use sha2::Sha256;
use tests::slack::{SLACK_BOT_TOKEN, SlackStandIn};
use tests::{Browser, DEADLINE, TestServer, WindowSize};

const SECRET: &str = "browser-test-signing-secret";

async fn shown(browser: &Browser, script: &str) -> anyhow::Result<serde_json::Value> {
    browser.execute(script, vec![]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commander_binds_a_channel_and_the_page_shows_its_log() -> anyhow::Result<()> {
    let slack = SlackStandIn::start().await;
    let api_url = slack.api_url();
    let server = TestServer::start_with(|c| {
        c.chat = Some(ChatSettings {
            timeline_prefix: "!tl ".into(),
            people: vec![ChatPerson {
                name: "alice".into(),
                scope: "write".into(),
                irc: Vec::new(),
                irc_account: None,
                slack: Some("U0ALICE001".into()),
            }],
        });
        c.slack = Some(SlackSettings {
            bot_token: SLACK_BOT_TOKEN.into(),
            signing_secret: SECRET.into(),
            api_url,
            reaction: "pushpin".into(),
        });
    })
    .await;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let alice = server.token("alice", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;

    let browser = Browser::open("chat-commander", WindowSize::DESKTOP).await?;
    browser.sign_in(base, &alice).await?;
    browser.goto(&format!("{base}/#/incidents/{id}")).await?;
    browser.wait_for("#chat [data-bind-name]", DEADLINE).await?;
    browser
        .type_text("#chat [data-bind-name]", "#inc-1-checkout")
        .await?;
    browser.click("#chat [data-bind-channel]").await?;
    browser
        .wait_for("#chat [data-channel='#inc-1-checkout']", DEADLINE)
        .await?;
    browser
        .wait_for("#chat [data-unbind-channel]", DEADLINE)
        .await?;
    browser.click("#chat [data-unbind-channel]").await?;
    browser.wait_for("#chat [data-bind-name]", DEADLINE).await?;

    // A Slack channel, bound over HTTP, and a line said there.
    let channel = slack.add_channel("inc-1-checkout");
    let (status, _) = server
        .bind_channel(
            &alice,
            &id,
            &json!({"network": "slack", "name": "inc-1-checkout", "id": channel}),
        )
        .await;
    ensure!(status == StatusCode::OK);
    let body = json!({"type": "event_callback", "event": {"type": "message", "channel": channel, "user": "U0ALICE001",
        "text": "<img src=x onerror=alert(1)> rolling back", "ts": "1764000000.000100"}})
    .to_string();
    let ts = chrono::Utc::now().timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let response = server
        .http()
        .post(server.url("/api/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            format!("v0={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body)
        .send()
        .await?;
    ensure!(response.status() == StatusCode::OK);
    browser
        .wait_for(&format!("#chat [data-channel='{channel}'] a"), DEADLINE)
        .await?;
    browser.wait_for("#chat .chat-log li", DEADLINE).await?;
    let line = shown(
        &browser,
        "return document.querySelector('#chat .chat-log li').textContent;",
    )
    .await?;
    ensure!(
        line.as_str()
            .is_some_and(|t| t.contains("alice: <img src=x onerror=alert(1)> rolling back")),
        "the line as text: {line}"
    );
    let images = shown(
        &browser,
        "return document.querySelectorAll('#chat img').length;",
    )
    .await?;
    ensure!(images == json!(0), "no markup from a line renders");
    let href = shown(
        &browser,
        "return document.querySelector('#chat .chat-channel a').href;",
    )
    .await?;
    ensure!(
        href == json!(format!("https://slack.com/app_redirect?channel={channel}")),
        "{href}"
    );
    browser.close().await?;
    server.stop().await;
    Ok(())
}
