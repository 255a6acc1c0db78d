//! The retention policy on a real server process: closed incidents past their age are deleted (drills by an age of
//! their own), open ones never; until `delete = true` it is a dry run that deletes nothing, says what it would
//! delete, and `commandpost retention` lists the same incidents.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{TestServer, eventually};

/// Deletions are swept every second here; a loaded machine still gets there well within this.
const SWEPT: Duration = Duration::from_secs(60);

/// Declares an incident from `template` and, when `close`, closes it as the admin with an override reason.
async fn incident(server: &TestServer, template: &str, title: &str, close: bool) -> String {
    let admin = &server.admin_token;
    let (status, declared) = server
        .call(
            Method::POST,
            "/api/incidents",
            Some(admin),
            Some(&json!({"title": title, "template": template})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{declared}");
    let id = declared["id"].as_str().expect("an id").to_owned();
    if close {
        let response = server
            .operations(
                admin,
                &id,
                json!([{"op": "setStatus", "status": "closed", "overrideReason": "Retention test."}]),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    id
}

async fn exists(server: &TestServer, id: &str) -> bool {
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/api/incidents/{id}"),
            Some(&server.admin_token),
            None,
        )
        .await;
    status == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_incidents_past_their_age_are_deleted_and_open_ones_kept() -> anyhow::Result<()> {
    // Drills go at once, other closed incidents after ten years.
    let mut server = TestServer::start_process_with_config(
        "[retention]\nclosed-after-days = 3650\ndrills-after-days = 0\ndelete = true\ncheck-every-secs = 1\n",
    )
    .await;
    let open_drill = incident(&server, "drill", "Open drill", false).await;
    let closed = incident(&server, "incident", "Closed incident", true).await;
    let closed_drill = incident(&server, "drill", "Closed drill", true).await;
    eventually("the closed drill to be deleted", SWEPT, || async {
        (!exists(&server, &closed_drill).await).then_some(())
    })
    .await?;
    assert!(exists(&server, &open_drill).await, "open incidents stay");
    assert!(exists(&server, &closed).await, "younger than its age");
    assert_eq!(
        server.metric("commandpost_retention_deleted_total").await?,
        1
    );
    server.stop_process().await;
    let log = server.log();
    assert!(
        log.contains("deleted a closed incident past its age") && log.contains(&closed_drill),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_deletes_nothing_and_lists_what_it_would_delete() -> anyhow::Result<()> {
    let policy = "[retention]\nclosed-after-days = 0\ncheck-every-secs = 1\n";
    let mut server = TestServer::start_process_with_config(policy).await;
    let closed = incident(&server, "incident", "Closed incident", true).await;
    let open = incident(&server, "incident", "Open incident", false).await;
    eventually(
        "the dry run to count the closed incident",
        SWEPT,
        || async { (server.metric("commandpost_retention_due").await.ok()? == 1).then_some(()) },
    )
    .await?;
    assert!(exists(&server, &closed).await && exists(&server, &open).await);

    // The command line lists the same incident, from the running server's store.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("policy.toml");
    std::fs::write(&config, policy)?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandpost-under-test"))
        .arg("retention")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .await?;
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(&closed) && out.contains("Closed incident"),
        "{out}"
    );
    assert!(err.contains("1 closed incidents due; a dry run"), "{err}");

    server.stop_process().await;
    let log = server.log();
    assert!(
        log.contains("retention (dry run)") && log.contains(&closed),
        "{log}"
    );
    assert!(!log.contains("deleted a closed incident"), "{log}");
    Ok(())
}
