//! The status update panel with mailing lists, in a real headless Chromium against a real server and a real SMTP
//! server (aiosmtpd): "Mark as sent" becomes "Send to …" naming the lists, sending delivers the update, and the
//! panel's mail thread shows it delivered.

use std::time::Duration;

use anyhow::ensure;
use server::mail::{MailList, MailSettings, Security};
use tests::TestCa;
use tests::smtp::{SmtpMode, SmtpServer, header};
use tests::{Browser, DEADLINE, TestServer, WindowSize};

const UI_TIMEOUT: Duration = DEADLINE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_sends_the_update_to_the_lists_and_shows_it_delivered() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let smtp = SmtpServer::start(&ca, SmtpMode::StartTls, Some(("u", "p")), false, 0).await;
    let port = smtp.port;
    let ca_file = ca.ca_file();
    let server = TestServer::start_with(|c| {
        c.mail = Some(MailSettings {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: Security::Starttls,
            username: Some("u".into()),
            password: Some("p".into()),
            ca_file: Some(ca_file),
            from: "incidents@example.com".into(),
            lists: vec![MailList {
                address: "ops@example.com".into(),
                templates: Vec::new(),
                severities: Vec::new(),
                restricted: false,
            }],
            ..MailSettings::default()
        });
    })
    .await;
    let erin = server.token("erin", "write").await;
    let id = server.declare(&erin, "Checkout errors").await.id;

    let page = Browser::open("mail-panel", WindowSize::DESKTOP).await?;
    page.sign_in(&server.base_url, &erin).await?;
    page.goto(&format!("{}/#/incidents/{id}", server.base_url))
        .await?;
    page.wait_for("#status-update summary", UI_TIMEOUT).await?;
    page.click("#status-update summary").await?;
    let button = r#"[data-update="sent"]"#;
    page.wait_until("the Send button", UI_TIMEOUT, || async {
        Ok(page
            .text(button)
            .await?
            .filter(|t| t == "Send to ops@example.com"))
    })
    .await?;
    // The update is loaded (its heads are what gets sent).
    page.wait_until("the update text", UI_TIMEOUT, || async {
        Ok(page
            .value("#status-update textarea")
            .await?
            .filter(|t| t.contains("Checkout errors")))
    })
    .await?;
    page.click(button).await?;
    page.wait_until("Send's feedback", UI_TIMEOUT, || async {
        Ok(page
            .text("#status-update .update-feedback")
            .await?
            .filter(|t| t.starts_with("Sent to ops@example.com at")))
    })
    .await?;
    let messages = smtp.wait_for(1).await;
    ensure!(
        header(&messages[0], "Subject").is_some_and(|s| s.contains("Checkout errors")),
        "{messages:?}"
    );
    let shown = page
        .wait_until("the thread shows it delivered", UI_TIMEOUT, || async {
            Ok(page
                .text("#status-update .mail-thread li")
                .await?
                .filter(|t| t.starts_with("Delivered")))
        })
        .await?;
    ensure!(shown.contains("to ops@example.com"), "{shown}");
    page.close().await?;
    Ok(())
}
