//! Restricted incidents in a real headless Chromium (the harness of `tests/src/browser.rs`): the declare form ticks
//! *Restricted* for the `security` template and not for the general one; on the incident page the commander adds a
//! member, restricts the incident (both pages show the *Restricted* badge) and removes the member again, through the
//! *Who can see it* section, and the server then hides the incident from the removed member and closes their live
//! page's connection.

use std::time::Duration;

use anyhow::{Context, ensure};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{Browser, DEADLINE, TestServer, WindowSize, eventually};

/// The members the page lists and whether it says restricted.
async fn shown_access(browser: &Browser) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let value = browser
        .execute(
            "const a = document.querySelector('#access');
             return [a && a.dataset.restricted,
                     Array.from(document.querySelectorAll('#access li[data-member]'), li => li.dataset.member)];",
            vec![],
        )
        .await?;
    Ok((
        value[0].as_str().map(str::to_owned),
        serde_json::from_value(value[1].clone()).unwrap_or_default(),
    ))
}

/// Waits until the page shows `restricted` and exactly `members`.
async fn wait_access(browser: &Browser, restricted: bool, members: &[&str]) -> anyhow::Result<()> {
    let want = (
        Some(restricted.to_string()),
        members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
    );
    browser
        .wait_until(&format!("the page to show {want:?}"), DEADLINE, || async {
            Ok((shown_access(browser).await? == want).then_some(()))
        })
        .await
}

/// What `token` gets reading the incident over HTTP.
async fn read_status(server: &TestServer, token: &str, id: &str) -> StatusCode {
    server
        .call(
            Method::GET,
            &format!("/api/incidents/{id}"),
            Some(token),
            None,
        )
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commander_restricts_an_incident_and_removes_a_member_on_the_incident_page()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;

    let commander = Browser::open("restricted-commander", WindowSize::DESKTOP).await?;
    commander.sign_in(base, &alice).await?;

    // The declare form follows the chosen template's default.
    commander.goto(&format!("{base}/#/declare")).await?;
    commander
        .wait_for("input[name=restricted]", DEADLINE)
        .await?;
    let ticked = || async {
        commander
            .execute(
                "return document.querySelector('input[name=restricted]').checked;",
                vec![],
            )
            .await
    };
    ensure!(
        ticked().await? == json!(false),
        "the general template is open by default"
    );
    commander
        .click("input[name=template][value=security]")
        .await?;
    commander
        .wait_until(
            "the security template's box to be ticked",
            DEADLINE,
            || async { Ok((ticked().await? == json!(true)).then_some(())) },
        )
        .await?;

    let id = server.declare(&alice, "Suspicious logins").await.id;
    commander.open_incident(base, &id).await?;
    wait_access(&commander, false, &["alice"]).await?;
    let member = Browser::open("restricted-member", WindowSize::DESKTOP).await?;
    member.sign_in(base, &bob).await?;
    member.open_incident(base, &id).await?;

    // Add bob, then restrict: bob still sees it, his page stays synced.
    commander.type_text("[data-add-member]", "bob").await?;
    commander
        .click("form.add-member button[type=submit]")
        .await?;
    wait_access(&commander, false, &["alice", "bob"]).await?;
    commander.click("[data-set-restricted]").await?;
    wait_access(&commander, true, &["alice", "bob"]).await?;
    wait_access(&member, true, &["alice", "bob"]).await?;
    let badge = member.text(".headline .restricted").await?;
    ensure!(
        badge.as_deref() == Some("Restricted"),
        "the headline's badge: {badge:?}"
    );
    let carol = server.token("carol", "read").await;
    eventually("the restriction to reach the server", DEADLINE, || async {
        (read_status(&server, &carol, &id).await == StatusCode::NOT_FOUND).then_some(())
    })
    .await?;
    ensure!(read_status(&server, &bob, &id).await == StatusCode::OK);
    commander.screenshot("restricted-access").await?;

    // Remove bob: the server hides the incident from him and closes his page's connection.
    commander.click("[data-remove-member=bob]").await?;
    wait_access(&commander, true, &["alice"]).await?;
    eventually("bob to be shut out", DEADLINE, || async {
        (read_status(&server, &bob, &id).await == StatusCode::NOT_FOUND).then_some(())
    })
    .await?;
    let closed = eventually(
        "bob's connection to close",
        Duration::from_secs(5),
        || async {
            let n = server
                .metric("commandpost_access_disconnects_total")
                .await
                .ok()?;
            (n >= 1).then_some(n)
        },
    )
    .await?;
    ensure!(closed >= 1);
    let markdown = server.markdown(&alice, &id).await;
    for line in [
        "alice added bob to the incident's members.",
        "alice restricted the incident to its members",
        "alice removed bob from the incident's members.",
    ] {
        ensure!(
            markdown.contains(line),
            "the timeline lacks {line:?}:\n{markdown}"
        );
    }
    let violations = commander.axe_violations().await.context("axe")?;
    ensure!(violations.is_empty(), "accessibility: {violations:?}");
    commander.close().await?;
    member.close().await?;
    server.stop().await;
    Ok(())
}
