//! A team's own templates, loaded while the server runs:
//! - a template in `templates-dir` is offered, declares and renders; a broken edit of it is refused with its line
//!   (in `/healthz` and the admin API) while the last good version keeps serving, and a fixed one takes effect
//!   without a restart;
//! - a template uploaded through `PUT /api/templates/{id}` is checked first (refused whole with `id.md:line:`),
//!   declares and renders, overrides a built-in id until deleted, and is admins' only;
//! - incidents carry the version of the template they were declared from (JSON and analytics rows), and their
//!   exports stay byte-identical after the template changes;
//! - an upload on one PostgreSQL node reaches new declarations on another;
//! - `commandpost templates check` and `templates preview` work offline.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use incident_doc::template::version_of;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{TestDatabase, TestServer, eventually};

/// How long a change may take to reach a server: it re-reads every second, so this is generous on a busy machine.
const RELOADS: Duration = Duration::from_secs(30);

/// A team's template: the payments team's fields, in their order.
const PAYMENTS: &str = "# Payments outage

For incidents in the payments path: card authorisations, refunds, settlement.

## Title
<!-- commandpost key=title kind=text -->

## Status
<!-- commandpost key=status kind=status -->

## Card network
<!-- commandpost key=network kind=choice -->
- visa: Visa
- mastercard: Mastercard

## Summary
<!-- commandpost key=summary kind=markdown owner=communications cadence=1h stamp -->
> What is failing for customers, in a sentence or two.
";

/// The same template a week later: another field, another label.
fn payments_v2() -> String {
    PAYMENTS.replace("## Card network", "## Card scheme")
        + "\n## Acquirer\n<!-- commandpost key=acquirer kind=text -->\n"
}

/// A broken edit of it, and the line the server must name.
fn payments_broken() -> (String, usize) {
    let text = PAYMENTS.replace("key=network kind=choice", "key=network kind=list");
    let line = text
        .lines()
        .position(|l| l.contains("kind=list"))
        .expect("the broken line")
        + 1;
    (text, line)
}

async fn templates(server: &TestServer, token: &str) -> Value {
    let (status, body) = server
        .call(Method::GET, "/api/templates", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn entry<'a>(catalog: &'a Value, id: &str) -> Option<&'a Value> {
    catalog["templates"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == id)
}

/// Waits until the server offers `id` at `version` (from any origin).
async fn offered(
    server: &TestServer,
    token: &str,
    id: &str,
    version: &str,
) -> anyhow::Result<Value> {
    eventually(&format!("{id} at version {version}"), RELOADS, || async {
        let catalog = templates(server, token).await;
        entry(&catalog, id)
            .filter(|t| t["version"] == version)
            .cloned()
    })
    .await
}

async fn declare(server: &TestServer, token: &str, template: &str, title: &str) -> String {
    let (status, body) = server
        .call(
            Method::POST,
            "/api/incidents",
            Some(token),
            Some(&json!({"template": template, "title": title})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "declaring from {template}: {body}"
    );
    body["id"].as_str().expect("an id").to_owned()
}

async fn put_template(
    server: &TestServer,
    token: &str,
    id: &str,
    source: &str,
) -> (StatusCode, Value) {
    let response = server
        .request(Method::PUT, &format!("/api/templates/{id}"), Some(token))
        .header("content-type", "text/markdown")
        .body(source.to_owned())
        .send()
        .await
        .expect("PUT /api/templates/{id}");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The Markdown, HTML and JSON exports, byte for byte.
async fn exports(server: &TestServer, token: &str, id: &str) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for format in ["markdown", "html", "json"] {
        all.push(server.export(token, id, format).await);
    }
    all
}

/// The analytics row of incident `id`.
async fn analytics_row(server: &TestServer, token: &str, id: &str) -> Value {
    let response = server
        .request(
            Method::GET,
            "/api/analytics/incidents?format=jsonl",
            Some(token),
        )
        .send()
        .await
        .expect("GET /api/analytics/incidents");
    let text = response.text().await.expect("rows");
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON row"))
        .find(|row| row["id"] == id)
        .expect("the incident's row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_template_is_checked_before_use_and_reloads_without_a_restart()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("payments.md");
    std::fs::write(&file, PAYMENTS)?;
    std::fs::write(
        dir.path().join("README.md"),
        "How our team writes templates.\n",
    )?;
    let templates_dir = dir.path().to_owned();
    let server = TestServer::start_with(|c| c.templates_dir = Some(templates_dir)).await;
    let alice = server.token("alice", "write").await;
    let v1 = version_of(PAYMENTS);

    let offered_v1 = offered(&server, &alice, "payments", &v1).await?;
    ensure!(
        offered_v1["origin"] == "directory" && offered_v1["file"] == "payments.md",
        "{offered_v1}"
    );
    ensure!(
        offered_v1["description"]
            == "For incidents in the payments path: card authorisations, refunds, settlement.",
        "{offered_v1}"
    );
    let labels: Vec<_> = offered_v1["fields"]
        .as_array()
        .context("fields")?
        .iter()
        .map(|f| f["label"].clone())
        .collect();
    ensure!(
        labels
            == [
                json!("Title"),
                json!("Status"),
                json!("Card network"),
                json!("Summary")
            ],
        "{labels:?}"
    );
    ensure!(
        entry(&templates(&server, &alice).await, "README").is_none(),
        "the README is no template"
    );

    let first = declare(&server, &alice, "payments", "Card declines").await;
    let view = server.incident_json(&alice, &first).await;
    ensure!(
        view["template"] == "payments" && view["templateVersion"] == v1.as_str(),
        "{view}"
    );
    let markdown = server.markdown(&alice, &first).await;
    ensure!(
        markdown.contains("## Card network") && markdown.contains("Payments outage"),
        "{markdown}"
    );
    let before = exports(&server, &alice, &first).await;

    // A broken edit: refused with its line, reported, and the last good version keeps serving.
    let (broken, line) = payments_broken();
    std::fs::write(&file, &broken)?;
    let expected = format!("payments.md:{line}: unknown kind \"list\"");
    let health = eventually("the refusal in /healthz", RELOADS, || async {
        let (status, body) = server.healthz().await;
        let reported = body["templateErrors"].as_array().is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with(&expected)))
        });
        (status == StatusCode::OK && reported).then_some(body)
    })
    .await?;
    let catalog = templates(&server, &alice).await;
    let problem = &catalog["errors"][0];
    ensure!(
        problem["id"] == "payments"
            && problem["origin"] == "directory"
            && problem["serving"]["version"] == v1.as_str()
            && problem["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&expected)),
        "{catalog} / {health}"
    );
    let during = declare(&server, &alice, "payments", "Refunds stuck").await;
    ensure!(server.incident_json(&alice, &during).await["templateVersion"] == v1.as_str());

    // Fixed and extended: new declarations get the new version, old incidents keep their layout and exports.
    let v2_text = payments_v2();
    std::fs::write(&file, &v2_text)?;
    let v2 = version_of(&v2_text);
    offered(&server, &alice, "payments", &v2).await?;
    ensure!(
        templates(&server, &alice).await["errors"] == json!([]),
        "the refusal is cleared"
    );
    ensure!(server.healthz().await.1["templateErrors"] == json!([]));
    let second = declare(&server, &alice, "payments", "Settlement late").await;
    let markdown = server.markdown(&alice, &second).await;
    ensure!(
        markdown.contains("## Card scheme") && markdown.contains("## Acquirer"),
        "{markdown}"
    );
    ensure!(
        exports(&server, &alice, &first).await == before,
        "an old incident's exports changed with its template"
    );
    ensure!(analytics_row(&server, &alice, &first).await["template_version"] == v1.as_str());
    ensure!(analytics_row(&server, &alice, &second).await["template_version"] == v2.as_str());

    // A deleted file is no longer offered.
    std::fs::remove_file(&file)?;
    eventually("payments withdrawn", RELOADS, || async {
        entry(&templates(&server, &alice).await, "payments")
            .is_none()
            .then_some(())
    })
    .await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_template_is_checked_declared_and_overrides_a_built_in_until_deleted()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let alice = server.token("alice", "write").await;

    let (status, body) = put_template(&server, &alice, "payments", PAYMENTS).await;
    ensure!(status == StatusCode::FORBIDDEN, "{status} {body}");
    let (status, body) = put_template(&server, &admin, "payments", PAYMENTS).await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let v1 = version_of(PAYMENTS);
    ensure!(
        body["origin"] == "store" && body["version"] == v1.as_str(),
        "{body}"
    );

    // Refused whole, with the line; the stored one keeps serving.
    let (broken, line) = payments_broken();
    let (status, body) = put_template(&server, &admin, "payments", &broken).await;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status} {body}"
    );
    let message = body["error"]["message"].as_str().context("a message")?;
    ensure!(
        message.starts_with(&format!("payments.md:{line}: unknown kind \"list\"")),
        "{message}"
    );
    let (status, stored) = server
        .call(Method::GET, "/api/templates/payments", Some(&alice), None)
        .await;
    ensure!(
        status == StatusCode::OK
            && stored["source"] == PAYMENTS
            && stored["version"] == v1.as_str(),
        "{stored}"
    );

    let first = declare(&server, &alice, "payments", "Card declines").await;
    ensure!(server.incident_json(&alice, &first).await["templateVersion"] == v1.as_str());
    ensure!(
        server
            .markdown(&alice, &first)
            .await
            .contains("## Card network")
    );
    let before = exports(&server, &alice, &first).await;

    let v2_text = payments_v2();
    let (status, body) = put_template(&server, &admin, "payments", &v2_text).await;
    ensure!(
        status == StatusCode::OK && body["version"] == version_of(&v2_text).as_str(),
        "{body}"
    );
    let second = declare(&server, &alice, "payments", "Refunds stuck").await;
    ensure!(
        server
            .markdown(&alice, &second)
            .await
            .contains("## Acquirer")
    );
    ensure!(
        exports(&server, &alice, &first).await == before,
        "an old incident's exports changed with its template"
    );

    // Overriding the default template's id, then falling back to the built-in one.
    let ours = PAYMENTS.replace("# Payments outage", "# Our general incident");
    let (status, body) = put_template(&server, &admin, "incident", &ours).await;
    ensure!(
        status == StatusCode::OK && body["overrides"] == json!(["built-in"]),
        "{body}"
    );
    let default = server.declare(&alice, "Anything").await;
    ensure!(
        server.incident_json(&alice, &default.id).await["templateName"] == "Our general incident"
    );
    // Deleting the override works once; the built-in underneath is not the store's to delete.
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let (status, _) = server
            .call(
                Method::DELETE,
                "/api/templates/incident",
                Some(&admin),
                None,
            )
            .await;
        ensure!(
            status == expected,
            "deleting: {status}, expected {expected}"
        );
    }
    let builtin = entry(&templates(&server, &alice).await, "incident")
        .cloned()
        .context("the built-in")?;
    ensure!(builtin["origin"] == "built-in", "{builtin}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_uploaded_on_one_node_reaches_new_declarations_on_another() -> anyhow::Result<()>
{
    let db = TestDatabase::create();
    let config = format!("database-url = \"{}\"\n", db.url());
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;

    let (status, body) = put_template(&node1, &node1.admin_token, "payments", PAYMENTS).await;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let reached = offered(&node2, &alice, "payments", &version_of(PAYMENTS)).await?;
    ensure!(reached["origin"] == "store", "{reached}");
    let id = declare(&node2, &alice, "payments", "Card declines in EU").await;
    ensure!(
        node2
            .markdown(&alice, &id)
            .await
            .contains("## Card network")
    );

    let v2_text = payments_v2();
    put_template(&node1, &node1.admin_token, "payments", &v2_text).await;
    offered(&node2, &alice, "payments", &version_of(&v2_text)).await?;
    let (status, _) = node1
        .call(
            Method::DELETE,
            "/api/templates/payments",
            Some(&node1.admin_token),
            None,
        )
        .await;
    ensure!(status == StatusCode::NO_CONTENT);
    eventually("the deletion reaching node 2", RELOADS, || async {
        entry(&templates(&node2, &alice).await, "payments")
            .is_none()
            .then_some(())
    })
    .await?;
    Ok(())
}

/// The real command line, built by this crate.
const CLI: &str = env!("CARGO_BIN_EXE_commandpost-under-test");

/// Runs the command line with `args` (and none of the caller's `COMMANDPOST_*` variables but `env`).
async fn commandpost(env: &[(&str, &Path)], args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(CLI);
    command.stdin(Stdio::null());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("COMMANDPOST_")) {
        command.env_remove(name);
    }
    command
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("running the command line")
}

#[tokio::test]
async fn templates_check_and_preview_work_offline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("payments.md"), PAYMENTS)?;
    std::fs::write(path("incident.md"), payments_v2())?;
    let dir_arg = dir.path().to_str().context("a UTF-8 path")?;

    let ok = commandpost(&[], &["templates", "check", dir_arg]).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    ensure!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    ensure!(
        stdout.contains(&format!(
            "ok\tpayments\tPayments outage\tversion {}\t4 fields",
            version_of(PAYMENTS)
        )),
        "{stdout}"
    );
    ensure!(
        stdout.contains("(overrides the built-in template)"),
        "{stdout}"
    );

    let (broken, line) = payments_broken();
    std::fs::write(path("broken.md"), broken)?;
    // The directory from the variable `serve` reads it from, as a team's CI would set it.
    let failed = commandpost(
        &[("COMMANDPOST_TEMPLATES_DIR", dir.path())],
        &["templates", "check"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    ensure!(
        !failed.status.success(),
        "a broken template passed the check"
    );
    let expected = format!(
        "{}:{line}: unknown kind \"list\"",
        path("broken.md").display()
    );
    ensure!(
        stderr.contains(&expected) && stderr.contains("1 of 3 templates refused"),
        "{stderr}"
    );
    ensure!(
        String::from_utf8_lossy(&failed.stdout).contains("ok\tpayments"),
        "the good ones still listed"
    );

    let preview = commandpost(
        &[],
        &[
            "templates",
            "preview",
            path("payments.md").to_str().context("path")?,
            "--name",
            "Card declines",
        ],
    )
    .await;
    let markdown = String::from_utf8_lossy(&preview.stdout);
    ensure!(
        preview.status.success(),
        "{}",
        String::from_utf8_lossy(&preview.stderr)
    );
    ensure!(markdown.starts_with("# Card declines: "), "{markdown}");
    for label in ["## Card network", "## Summary", "Payments outage"] {
        ensure!(markdown.contains(label), "{label} missing: {markdown}");
    }
    let refused = commandpost(
        &[],
        &[
            "templates",
            "preview",
            path("broken.md").to_str().context("path")?,
        ],
    )
    .await;
    ensure!(!refused.status.success());
    ensure!(
        String::from_utf8_lossy(&refused.stderr)
            .contains(&format!("broken.md:{line}: unknown kind"))
    );
    Ok(())
}
