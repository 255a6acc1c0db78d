//! Who may do what: every route of the HTTP API and the `/sync` upgrade, called with no token, a garbage token, a
//! revoked token and a token of each scope, answers 401 when the caller is unknown, 403 when the scope is too low and
//! success otherwise (`/healthz` and `/metrics` are open to all), always with the `{"error": {"code", "message"}}`
//! body on refusal; a refused call changes nothing. Unknown incident ids, well-formed or not, answer the same 404.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{SyncClient, TestServer, ws};

/// The least a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    /// Anyone, even without a token.
    Nothing,
    /// A read token.
    Read,
    /// A write token.
    Write,
    /// An admin token.
    Admin,
}

/// One caller of the table.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// No Authorization header (and no `?token=` on `/sync`).
    Anonymous,
    /// A token the server never issued.
    Garbage,
    /// An admin token that was revoked.
    Revoked,
    /// A live token of this scope.
    Scoped(Needs),
}

impl Caller {
    const ALL: [Caller; 6] = [
        Caller::Anonymous,
        Caller::Garbage,
        Caller::Revoked,
        Caller::Scoped(Needs::Read),
        Caller::Scoped(Needs::Write),
        Caller::Scoped(Needs::Admin),
    ];
}

/// The routes, with what they need and what they answer when allowed.
#[derive(Debug, Clone, Copy)]
enum Route {
    Healthz,
    Metrics,
    Templates,
    Declare,
    List,
    Read,
    Export,
    Timeline,
    Operations,
    DeleteIncident,
    ListTokens,
    CreateToken,
    RevokeToken,
    Session,
    StatusUpdate,
    Webhooks,
}

impl Route {
    const ALL: [Route; 16] = [
        Route::Healthz,
        Route::Metrics,
        Route::Templates,
        Route::Declare,
        Route::List,
        Route::Read,
        Route::Export,
        Route::Timeline,
        Route::Operations,
        Route::DeleteIncident,
        Route::ListTokens,
        Route::CreateToken,
        Route::RevokeToken,
        Route::Session,
        Route::StatusUpdate,
        Route::Webhooks,
    ];

    fn needs(self) -> Needs {
        match self {
            Route::Healthz | Route::Metrics => Needs::Nothing,
            Route::Templates
            | Route::List
            | Route::Read
            | Route::Export
            | Route::Session
            | Route::StatusUpdate => Needs::Read,
            Route::Declare | Route::Timeline | Route::Operations => Needs::Write,
            Route::DeleteIncident
            | Route::ListTokens
            | Route::CreateToken
            | Route::RevokeToken
            | Route::Webhooks => Needs::Admin,
        }
    }

    fn success(self) -> StatusCode {
        match self {
            Route::Declare | Route::Timeline | Route::CreateToken => StatusCode::CREATED,
            Route::DeleteIncident | Route::RevokeToken => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        }
    }
}

/// What the table runs against: a server, its tokens, and an incident every call may touch.
struct Fixture {
    server: TestServer,
    read: String,
    write: String,
    revoked: String,
    /// The incident read, exported and edited by the calls.
    incident: String,
    /// Numbers the throwaway resources (token names, incidents to delete).
    counter: AtomicUsize,
}

impl Fixture {
    async fn new() -> Fixture {
        let server = TestServer::start().await;
        let read = server.token("reader", "read").await;
        let write = server.token("writer", "write").await;
        let revoked = server.token("former-admin", "admin").await;
        server.revoke("former-admin").await;
        let incident = server.declare(&write, "Auth table").await.id;
        Fixture {
            server,
            read,
            write,
            revoked,
            incident,
            counter: AtomicUsize::new(0),
        }
    }

    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Anonymous => None,
            Caller::Garbage => Some("cp_NotATokenTheServerEverIssued".to_owned()),
            Caller::Revoked => Some(self.revoked.clone()),
            Caller::Scoped(Needs::Read) => Some(self.read.clone()),
            Caller::Scoped(Needs::Write) => Some(self.write.clone()),
            Caller::Scoped(_) => Some(self.server.admin_token.clone()),
        }
    }

    /// The method, path and body of one call of `route`; routes that consume something get a fresh one each time.
    async fn call(&self, route: Route) -> (Method, String, Option<Value>) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = &self.incident;
        match route {
            Route::Healthz => (Method::GET, "/healthz".into(), None),
            Route::Metrics => (Method::GET, "/metrics".into(), None),
            Route::Templates => (Method::GET, "/api/templates".into(), None),
            Route::Declare => (
                Method::POST,
                "/api/incidents".into(),
                Some(json!({"title": format!("Declared by the auth table {n}")})),
            ),
            Route::List => (Method::GET, "/api/incidents".into(), None),
            Route::Read => (Method::GET, format!("/api/incidents/{id}"), None),
            Route::Export => (
                Method::GET,
                format!("/api/incidents/{id}/export?format=markdown"),
                None,
            ),
            Route::Timeline => (
                Method::POST,
                format!("/api/incidents/{id}/timeline"),
                Some(json!({"text": format!("entry {n}")})),
            ),
            Route::Operations => (
                Method::POST,
                format!("/api/incidents/{id}/operations"),
                Some(
                    json!({"operations": [{"op": "setText", "field": "summary", "text": format!("summary {n}")}]}),
                ),
            ),
            Route::DeleteIncident => {
                let doomed = self
                    .server
                    .declare(&self.write, &format!("Doomed {n}"))
                    .await;
                (
                    Method::DELETE,
                    format!("/api/incidents/{}", doomed.id),
                    None,
                )
            }
            Route::ListTokens => (Method::GET, "/api/tokens".into(), None),
            Route::CreateToken => (
                Method::POST,
                "/api/tokens".into(),
                Some(json!({"name": format!("created-{n}"), "scope": "read"})),
            ),
            Route::RevokeToken => {
                let name = format!("victim-{n}");
                self.server.token(&name, "read").await;
                (Method::DELETE, format!("/api/tokens/{name}"), None)
            }
            Route::Session => (Method::GET, "/api/session".into(), None),
            Route::StatusUpdate => (
                Method::GET,
                format!("/api/incidents/{id}/update?format=text"),
                None,
            ),
            Route::Webhooks => (Method::GET, "/api/webhooks".into(), None),
        }
    }
}

/// The status a caller must get from a route.
fn expected(route: Route, caller: Caller) -> StatusCode {
    match (route.needs(), caller) {
        (Needs::Nothing, _) => route.success(),
        (_, Caller::Anonymous | Caller::Garbage | Caller::Revoked) => StatusCode::UNAUTHORIZED,
        (needs, Caller::Scoped(scope)) if scope < needs => StatusCode::FORBIDDEN,
        _ => route.success(),
    }
}

/// Checks the error body of a refusal: `{"error": {"code": <code>, "message": <non-empty>}}`.
fn check_error_body(body: &str, code: &str, what: &str) -> anyhow::Result<()> {
    let value: Value = serde_json::from_str(body)
        .with_context(|| format!("{what}: error body is JSON: {body:?}"))?;
    anyhow::ensure!(
        value["error"]["code"] == code,
        "{what}: error code {code} in {value}"
    );
    anyhow::ensure!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error message in {value}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_caller_as_its_scope_allows() -> anyhow::Result<()> {
    let fixture = Fixture::new().await;
    let mut failures = Vec::new();
    for route in Route::ALL {
        for caller in Caller::ALL {
            let (method, path, body) = fixture.call(route).await;
            let mut request =
                fixture
                    .server
                    .request(method.clone(), &path, fixture.token(caller).as_deref());
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.context("sending the request")?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let want = expected(route, caller);
            let what = format!("{method} {path} as {caller:?}");
            if status != want {
                let text: String = text.chars().take(200).collect();
                failures.push(format!("{what}: {status}, expected {want} ({text})"));
                continue;
            }
            let checked = match status {
                StatusCode::UNAUTHORIZED => check_error_body(&text, "unauthorized", &what),
                StatusCode::FORBIDDEN => check_error_body(&text, "forbidden", &what),
                _ => Ok(()),
            };
            if let Err(e) = checked {
                failures.push(format!("{e:#}"));
            }
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );

    // Only the write and admin calls reached the timeline and the summary.
    let view = fixture
        .server
        .incident_json(&fixture.write, &fixture.incident)
        .await;
    let timeline = view["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["kind"] == "timeline"))
        .and_then(|f| f["value"].as_array())
        .context("the incident has a timeline")?;
    let authors: Vec<&str> = timeline
        .iter()
        .filter_map(|e| e["author"].as_str())
        .collect();
    anyhow::ensure!(
        authors.len() == 2 && authors.contains(&"writer") && authors.contains(&"admin"),
        "only the write and admin calls appended: {authors:?}"
    );
    fixture.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_names_the_token_and_its_scope() -> anyhow::Result<()> {
    let fixture = Fixture::new().await;
    for (token, name, scope) in [
        (&fixture.read, "reader", "read"),
        (&fixture.write, "writer", "write"),
        (&fixture.server.admin_token, "admin", "admin"),
    ] {
        let session: Value = fixture
            .server
            .request(Method::GET, "/api/session", Some(token))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            session == json!({"name": name, "scope": scope}),
            "session {session}"
        );
    }
    // The scheme is Bearer only; the token in another scheme is no token.
    let basic = fixture
        .server
        .http()
        .get(fixture.server.url("/api/session"))
        .header("Authorization", format!("Basic {}", fixture.read))
        .send()
        .await?;
    anyhow::ensure!(
        basic.status() == StatusCode::UNAUTHORIZED,
        "Basic: {}",
        basic.status()
    );
    fixture.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_upgrades_only_for_live_tokens() -> anyhow::Result<()> {
    let fixture = Fixture::new().await;
    let server = &fixture.server;
    for caller in Caller::ALL {
        let url = match fixture.token(caller) {
            Some(token) => server.ws_url(&token),
            None => format!("ws://{}/sync", server.addr),
        };
        let want = expected(Route::Templates, caller);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, response)) => {
                anyhow::ensure!(want.is_success(), "{caller:?}: upgraded, expected {want}");
                anyhow::ensure!(
                    response.status() == StatusCode::SWITCHING_PROTOCOLS,
                    "{caller:?}: {}",
                    response.status()
                );
                drop(socket);
            }
            Err(ws::Error::Http(response)) => {
                anyhow::ensure!(
                    response.status().as_u16() == want.as_u16(),
                    "{caller:?}: {}, expected {want}",
                    response.status()
                );
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                check_error_body(&body, "unauthorized", &format!("/sync as {caller:?}"))?;
            }
            Err(other) => anyhow::bail!("{caller:?}: {other}"),
        }
    }
    // Every live scope can sync (a read token read-only); the token may also come in the Authorization header.
    for token in [&fixture.read, &fixture.write, &server.admin_token] {
        let mut client = SyncClient::connect(&server.ws_url(token)).await?;
        client.open(&fixture.incident).await?;
    }
    let mut request =
        ws::client::IntoClientRequest::into_client_request(format!("ws://{}/sync", server.addr))?;
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", fixture.write).parse()?,
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("Bearer header on /sync")?;
    drop(socket);
    fixture.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_at_once() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let token = server.token("leaver", "write").await;
    let incident = server.declare(&token, "Before revocation").await;
    server.revoke("leaver").await;
    let response = server
        .request(
            Method::GET,
            &format!("/api/incidents/{}", incident.id),
            Some(&token),
        )
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::UNAUTHORIZED,
        "{}",
        response.status()
    );
    anyhow::ensure!(
        SyncClient::connect(&server.ws_url(&token)).await.is_err(),
        "no sync either"
    );
    // Revoking it again, or a name that never existed, is a 404.
    for name in ["leaver", "nobody"] {
        let response = server
            .request(
                Method::DELETE,
                &format!("/api/tokens/{name}"),
                Some(&server.admin_token),
            )
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::NOT_FOUND,
            "{name}: {}",
            response.status()
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_incident_ids_all_answer_the_same_404() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let deleted = server.declare(&admin, "Deleted").await.id;
    let response = server
        .request(
            Method::DELETE,
            &format!("/api/incidents/{deleted}"),
            Some(&admin),
        )
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::NO_CONTENT,
        "deleting: {}",
        response.status()
    );
    let well_formed = server::wire::DocumentId::random().to_string();
    let ids = [
        well_formed.clone(),
        format!("automerge:{well_formed}"),
        deleted,
        "not-an-id".to_owned(),
        "0OIl".to_owned(),
        "x".repeat(200),
    ];
    let mut bodies = Vec::new();
    for id in &ids {
        for (method, path, body) in [
            (Method::GET, format!("/api/incidents/{id}"), None),
            (
                Method::GET,
                format!("/api/incidents/{id}/export?format=json"),
                None,
            ),
            (
                Method::POST,
                format!("/api/incidents/{id}/timeline"),
                Some(json!({"text": "x"})),
            ),
            (
                Method::POST,
                format!("/api/incidents/{id}/operations"),
                Some(json!({"operations": [{"op": "setText", "field": "summary", "text": "x"}]})),
            ),
            (Method::DELETE, format!("/api/incidents/{id}"), None),
        ] {
            let mut request = server.request(method.clone(), &path, Some(&admin));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            anyhow::ensure!(
                status == StatusCode::NOT_FOUND,
                "{method} {path}: {status} {text}"
            );
            check_error_body(&text, "not_found", &format!("{method} {path}"))?;
            bodies.push(text);
        }
    }
    bodies.dedup();
    anyhow::ensure!(
        bodies.len() == 1,
        "every unknown id gets the same answer: {bodies:?}"
    );
    // Over sync too: an unknown document is unavailable, exactly like a deleted one.
    let mut client = SyncClient::connect(&server.ws_url(&admin)).await?;
    let refused = client.open(&well_formed).await;
    anyhow::ensure!(
        format!(
            "{:#}",
            refused
                .as_ref()
                .err()
                .context("opening an unknown document fails")?
        )
        .contains("doc-unavailable"),
        "{refused:?}"
    );
    server.stop().await;
    Ok(())
}
