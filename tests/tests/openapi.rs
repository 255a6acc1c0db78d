//! The OpenAPI description (`GET /api/openapi.json`) and the router agree: every documented operation is served,
//! every other method on a documented path is refused as the router refuses unknown methods, and no route is added
//! to the router except through `utoipa_axum::routes!`, which registers a handler under the method and path its own
//! `#[utoipa::path]` describes. Together: no undocumented route, no documented route that does not exist.
//! (schemathesis, run by `scripts/schemathesis.sh`, checks the answers against the description in depth.)

use std::path::Path;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tests::TestServer;

/// The methods a route may take; each documented path is tried with all of them.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// A value for each path parameter: any id does (the request has no token, so it is refused before the id is
/// looked up), but a role must be a role.
fn fill(path: &str) -> String {
    path.replace("{id}", "x")
        .replace("{role}", "commander")
        .replace("{name}", "x")
}

/// The description as served: without a token, as JSON.
async fn description(server: &TestServer) -> anyhow::Result<Value> {
    let response = server
        .request(Method::GET, "/api/openapi.json", None)
        .send()
        .await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(content_type == "application/json", "{content_type}");
    Ok(response.json().await?)
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() -> anyhow::Result<()> {
    // With single sign-on configured, so its routes are served (without it they are the fallback's 404); the
    // provider is a port nothing listens on, which the sign-in routes answer as documented (502, 400). With a
    // Slack app too, whose routes answer an unsigned request 401.
    let server = TestServer::start_with(|config| {
        config.oidc = Some(server::config::OidcSettings {
            issuer_url: "http://127.0.0.1:9".into(),
            client_id: "commandpost".into(),
            redirect_url: "http://127.0.0.1:9/auth/oidc/callback".into(),
            ..Default::default()
        });
        config.slack = Some(server::config::SlackSettings {
            bot_token: "xoxb-test".into(),
            signing_secret: "secret".into(),
            api_url: "http://127.0.0.1:9/api".into(),
            ..Default::default()
        });
    })
    .await;
    let doc = description(&server).await?;
    anyhow::ensure!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "an OpenAPI 3.1 document: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().context("paths")?;
    anyhow::ensure!(paths.len() >= 25, "only {} paths", paths.len());
    // Client generators name their methods after operation ids, which OpenAPI requires to be unique.
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    anyhow::ensure!(ids.len() == count, "operation ids repeat: {ids:?}");
    for (path, item) in paths {
        let url = fill(path);
        for method in METHODS {
            let key = method.as_str().to_ascii_lowercase();
            let response = server.request(method.clone(), &url, None).send().await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match item.get(&key) {
                Some(operation) => {
                    // Served by the route's handler: an answer the description gives, and neither the fallback's
                    // 404 nor the 405 of a method the route does not take.
                    let documented = operation["responses"]
                        .as_object()
                        .is_some_and(|r| r.contains_key(status.as_str()));
                    anyhow::ensure!(
                        documented
                            && status != StatusCode::NOT_FOUND
                            && status != StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path}: {status} {body}"
                    );
                }
                None => anyhow::ensure!(
                    status == StatusCode::METHOD_NOT_ALLOWED
                        && body["error"]["code"] == "method_not_allowed",
                    "{method} {path} is not documented, yet answers {status} {body}"
                ),
            }
        }
    }
    server.stop().await;
    Ok(())
}

/// The ways axum adds a route without `routes!`, which would route what the description does not show.
const UNDESCRIBED: [&str; 4] = [".route(", ".route_service(", ".nest(", ".nest_service("];

/// Every Rust file under `dir`, so that a route added in a new module is found too.
fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    Ok(())
}

#[test]
fn routes_are_only_added_with_their_description() -> anyhow::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    anyhow::ensure!(files.len() > 10, "server sources not found at {src:?}");
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for (number, line) in text.lines().enumerate() {
            if let Some(call) = UNDESCRIBED.iter().find(|call| line.contains(*call)) {
                anyhow::bail!(
                    "{}:{}: `{call}` adds a route the OpenAPI description does not show; register it with \
                     `.routes(routes!(handler))` and a `#[utoipa::path]` on the handler",
                    file.display(),
                    number + 1
                );
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_typed_operation_is_described_with_its_fields() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let doc = description(&server).await?;
    let variants = doc["components"]["schemas"]["Operation"]["oneOf"]
        .as_array()
        .context("Operation is a oneOf")?;
    let mut names = Vec::new();
    for variant in variants {
        let name = variant["properties"]["op"]["enum"][0]
            .as_str()
            .with_context(|| format!("an `op` name in {variant}"))?;
        anyhow::ensure!(
            variant["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name} is described"
        );
        for (field, schema) in variant["properties"].as_object().context("properties")? {
            anyhow::ensure!(
                field == "op" || schema.to_string().contains("description"),
                "{name}.{field} is described: {schema}"
            );
        }
        names.push(name.to_owned());
    }
    // Spot checks, with the names users send.
    for expected in [
        "spliceText",
        "setStatus",
        "setTimestamp",
        "recordAlert",
        "reopen",
    ] {
        anyhow::ensure!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // The enums they name, as their JSON spells them.
    let roles = &doc["components"]["schemas"]["Role"]["enum"];
    anyhow::ensure!(
        *roles
            == serde_json::json!([
                "commander",
                "operations",
                "planning",
                "communications",
                "nextCommander"
            ]),
        "roles as JSON names them: {roles}"
    );
    server.stop().await;
    Ok(())
}
