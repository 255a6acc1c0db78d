//! The commander's check-ins and the role rotation in a real headless Chromium (the harness of
//! `tests/src/browser.rs`): a responder raises "I am overloaded" on their page and it reaches the commander's page
//! at once (the banner and beside the name in presence), the commander clears it, answers the reconsider prompt
//! with a one-line note (both in the timeline), the roles section suggests for command the person present who has
//! not commanded, the declare page suggests someone connected, and a person's role history page lists their roles.

use anyhow::{Context, ensure};
use tests::{Browser, DEADLINE, TestServer, WindowSize, eventually};

/// The flags the page's banner shows, as their text.
async fn banner(browser: &Browser) -> anyhow::Result<Vec<String>> {
    browser.texts("#checkins li[data-help] strong").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_help_flag_reaches_the_commander_and_the_prompt_is_answered() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let id = server.declare(&alice, "Checkout errors").await.id;

    let commander = Browser::open("checkins-commander", WindowSize::DESKTOP).await?;
    commander.sign_in(base, &alice).await?;
    commander.open_incident(base, &id).await?;
    let responder = Browser::open("checkins-responder", WindowSize::DESKTOP).await?;
    responder.sign_in(base, &bob).await?;
    responder.open_incident(base, &id).await?;

    // Bob is overloaded: the commander's page shows it in the banner and beside his name.
    responder.click("[data-set-help=overloaded]").await?;
    commander
        .wait_until("bob's flag on the commander's page", DEADLINE, || async {
            let shown = banner(&commander).await?;
            let presence = commander.texts("#presence li").await?;
            Ok((shown == ["bob is overloaded"]
                && presence.iter().any(|p| p.contains("bob — is overloaded")))
            .then_some(()))
        })
        .await?;
    commander.screenshot("checkins-help-flag").await?;

    // The roles section suggests bob for command: he is here and has never commanded.
    commander
        .wait_until("the rotation's suggestion", DEADLINE, || async {
            Ok(commander
                .text("#fields .rotation a")
                .await?
                .filter(|name| name == "bob"))
        })
        .await?;

    // The commander deals with it and clears the flag; it goes from both pages.
    commander.click("[data-clear-help=bob]").await?;
    for page in [&commander, &responder] {
        page.wait_until("the flag to clear", DEADLINE, || async {
            Ok(banner(page).await?.is_empty().then_some(()))
        })
        .await?;
    }

    // The commander answers the reconsider prompt with one line.
    commander
        .type_text(
            "form.reconsider input",
            "Rollback is still the fastest path.",
        )
        .await?;
    commander
        .click("form.reconsider button[type=submit]")
        .await?;
    eventually("the answer on the server", DEADLINE, || async {
        let view = server.incident_json(&alice, &id).await;
        (view["checkins"]["reconsiderations"] == 1).then_some(())
    })
    .await?;
    commander
        .wait_until("the prompt to be ready again", DEADLINE, || async {
            Ok(commander
                .value("form.reconsider input")
                .await?
                .filter(String::is_empty))
        })
        .await?;
    let markdown = server.markdown(&alice, &id).await;
    for line in [
        "Help flag: bob is overloaded.",
        "Help flag: alice cleared bob's flag.",
        "alice reconsidered the approach: Rollback is still the fastest path.",
    ] {
        ensure!(
            markdown.contains(line),
            "the timeline lacks {line:?}:\n{markdown}"
        );
    }
    // The responder sees no prompt: it is the commander's.
    ensure!(responder.find("form.reconsider").await?.is_none());

    // The declare page suggests someone connected now (alice's page is, bob's may still be) for command.
    responder.goto(&format!("{base}/#/declare")).await?;
    responder
        .wait_until("the declare page's suggestion", DEADLINE, || async {
            Ok(responder
                .text("form.declare .rotation a")
                .await?
                .filter(|name| name == "alice" || name == "bob"))
        })
        .await?;

    let violations = commander.axe_violations().await.context("axe")?;
    ensure!(violations.is_empty(), "accessibility: {violations:?}");

    // Alice's role history page.
    commander.goto(&format!("{base}/#/people/alice")).await?;
    commander
        .wait_until("alice's roles", DEADLINE, || async {
            Ok(commander.find("tr[data-role=commander]").await?.map(|_| ()))
        })
        .await?;
    let violations = commander.axe_violations().await.context("axe")?;
    ensure!(violations.is_empty(), "accessibility: {violations:?}");
    commander.close().await?;
    responder.close().await?;
    server.stop().await;
    Ok(())
}
