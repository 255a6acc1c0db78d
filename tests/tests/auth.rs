//! Who may do what: every route of the HTTP API and the `/sync` upgrade, called with no token, a garbage token, a
//! revoked token and a token of each scope, answers 401 when the caller is unknown, 403 when the scope is too low and
//! success otherwise (`/healthz`, `/metrics`, `/api/openapi.json` and the web UI are open to all), always with the
//! `{"error": {"code", "message"}}` body on refusal; a refused call changes nothing. A single sign-on session of a
//! write person (the cookie, sent from the server's own origin, through a real OpenID provider) is one more caller,
//! answered as a write token is, except that it signs out where a token may not. The table is checked against
//! the router's routes (its OpenAPI description), so a new route without a row fails the test. Unknown incident
//! ids, well-formed or not, answer the same 404. Revoking a token closes its live `/sync` connections within a
//! second. Restricted incidents add a dimension: open and restricted incidents × members and non-members × every
//! route and `/sync` × each scope; a non-member gets exactly what an unknown id gets, and lists, analytics and
//! insights leave the incident out for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::mail::{MailList, MailSettings};
use server::webhooks::{Endpoint, Format};
use tests::oidc::{OidcProvider, SsoClient};
use tests::{SyncClient, SyncTarget, TestServer, ws};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
    /// No Authorization header (and no ticket on `/sync`).
    Anonymous,
    /// A token the server never issued.
    Garbage,
    /// An admin token that was revoked.
    Revoked,
    /// A live token of this scope.
    Scoped(Needs),
    /// The session cookie of a person the provider's groups make a writer, from the server's own origin.
    Session,
    /// A live token of this scope whose person is no member of the fixture's incidents (never declared one, holds
    /// no role, was never added).
    Outsider(Needs),
}

impl Caller {
    const ALL: [Caller; 7] = [
        Caller::Session,
        Caller::Anonymous,
        Caller::Garbage,
        Caller::Revoked,
        Caller::Scoped(Needs::Read),
        Caller::Scoped(Needs::Write),
        Caller::Scoped(Needs::Admin),
    ];
}

/// The routes, with what they need and what they answer when allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Metrics,
    OpenApi,
    WebUi,
    Sync,
    SyncTicket,
    Templates,
    TemplateSource,
    PutTemplate,
    DeleteTemplate,
    Declare,
    List,
    Read,
    Export,
    History,
    Timeline,
    Operations,
    AssignRole,
    ProposeHandoff,
    AcceptHandoff,
    WithdrawHandoff,
    Pins,
    Reopen,
    DeleteIncident,
    Analytics,
    Insights,
    ListTokens,
    People,
    PersonRoles,
    Rotation,
    CreateToken,
    RevokeToken,
    Session,
    StatusUpdate,
    Webhooks,
    UpdateSent,
    SendUpdate,
    MailThread,
    AlertHook,
    AlertHookFor,
    WebhookDeliveries,
    Audit,
    AuthProviders,
    OidcLogin,
    OidcCallback,
    SignOut,
    ListSessions,
    RevokeSession,
    BindChannel,
    UnbindChannel,
    ChatLog,
    SlackEvents,
    SlackCommands,
    StartReplay,
    ReplayStatus,
    PauseReplay,
    ResumeReplay,
    JumpReplay,
    CompareReplay,
}

impl Route {
    const ALL: [Route; 59] = [
        Route::StartReplay,
        Route::ReplayStatus,
        Route::PauseReplay,
        Route::ResumeReplay,
        Route::JumpReplay,
        Route::CompareReplay,
        Route::BindChannel,
        Route::UnbindChannel,
        Route::ChatLog,
        Route::SlackEvents,
        Route::SlackCommands,
        Route::AuthProviders,
        Route::OidcLogin,
        Route::OidcCallback,
        Route::SignOut,
        Route::ListSessions,
        Route::RevokeSession,
        Route::Healthz,
        Route::Metrics,
        Route::OpenApi,
        Route::WebUi,
        Route::Sync,
        Route::SyncTicket,
        Route::Templates,
        Route::Declare,
        Route::List,
        Route::Read,
        Route::Export,
        Route::History,
        Route::Timeline,
        Route::Operations,
        Route::AssignRole,
        Route::ProposeHandoff,
        Route::AcceptHandoff,
        Route::WithdrawHandoff,
        Route::Pins,
        Route::Reopen,
        Route::DeleteIncident,
        Route::Analytics,
        Route::Insights,
        Route::ListTokens,
        Route::People,
        Route::PersonRoles,
        Route::Rotation,
        Route::CreateToken,
        Route::RevokeToken,
        Route::Session,
        Route::StatusUpdate,
        Route::Webhooks,
        Route::Audit,
        Route::UpdateSent,
        Route::SendUpdate,
        Route::MailThread,
        Route::AlertHook,
        Route::AlertHookFor,
        Route::WebhookDeliveries,
        Route::TemplateSource,
        Route::PutTemplate,
        Route::DeleteTemplate,
    ];

    fn needs(self) -> Needs {
        match self {
            Route::Healthz
            | Route::Metrics
            | Route::OpenApi
            | Route::WebUi
            | Route::AuthProviders
            | Route::OidcLogin
            | Route::OidcCallback
            | Route::SlackEvents
            | Route::SlackCommands => Needs::Nothing,
            Route::Sync
            | Route::SyncTicket
            | Route::Templates
            | Route::TemplateSource
            | Route::List
            | Route::Read
            | Route::Export
            | Route::History
            | Route::Analytics
            | Route::Insights
            | Route::PersonRoles
            | Route::Rotation
            | Route::Session
            | Route::SignOut
            | Route::ChatLog
            | Route::StatusUpdate
            | Route::MailThread
            | Route::ReplayStatus
            | Route::CompareReplay => Needs::Read,
            Route::Declare
            | Route::Timeline
            | Route::Operations
            | Route::AssignRole
            | Route::ProposeHandoff
            | Route::AcceptHandoff
            | Route::WithdrawHandoff
            | Route::Pins
            | Route::UpdateSent
            | Route::SendUpdate
            | Route::AlertHook
            | Route::AlertHookFor
            | Route::BindChannel
            | Route::UnbindChannel
            | Route::People
            | Route::StartReplay
            | Route::PauseReplay
            | Route::ResumeReplay
            | Route::JumpReplay => Needs::Write,
            Route::Reopen
            | Route::DeleteIncident
            | Route::ListTokens
            | Route::CreateToken
            | Route::RevokeToken
            | Route::Webhooks
            | Route::Audit
            | Route::ListSessions
            | Route::RevokeSession
            | Route::WebhookDeliveries
            | Route::PutTemplate
            | Route::DeleteTemplate => Needs::Admin,
        }
    }

    fn success(self) -> StatusCode {
        match self {
            Route::Sync => StatusCode::SWITCHING_PROTOCOLS,
            Route::Declare
            | Route::Timeline
            | Route::StartReplay
            | Route::CreateToken
            | Route::UpdateSent
            | Route::SendUpdate => StatusCode::CREATED,
            Route::DeleteIncident
            | Route::RevokeToken
            | Route::DeleteTemplate
            | Route::RevokeSession
            | Route::UnbindChannel
            | Route::SignOut => StatusCode::NO_CONTENT,
            // Slack's routes authenticate by Slack's signature, not a token (`slack.rs` tests them); without a
            // `[slack]` table, as here, they are not found for anyone.
            Route::SlackEvents | Route::SlackCommands => StatusCode::NOT_FOUND,
            // To the provider.
            Route::OidcLogin => StatusCode::SEE_OTHER,
            // Without a sign-in to finish (no state, no code), the page that says so: a real sign-in is
            // `oidc.rs`'s.
            Route::OidcCallback => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        }
    }

    /// The method and the path as the router declares it (`None` for the web UI, the router's fallback).
    fn pattern(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Route::WebUi => return None,
            Route::Healthz => ("GET", "/healthz"),
            Route::Metrics => ("GET", "/metrics"),
            Route::OpenApi => ("GET", "/api/openapi.json"),
            Route::Sync => ("GET", "/sync"),
            Route::SyncTicket => ("POST", "/api/sync-ticket"),
            Route::Templates => ("GET", "/api/templates"),
            Route::TemplateSource => ("GET", "/api/templates/{id}"),
            Route::PutTemplate => ("PUT", "/api/templates/{id}"),
            Route::DeleteTemplate => ("DELETE", "/api/templates/{id}"),
            Route::Declare => ("POST", "/api/incidents"),
            Route::List => ("GET", "/api/incidents"),
            Route::Read => ("GET", "/api/incidents/{id}"),
            Route::Export => ("GET", "/api/incidents/{id}/export"),
            Route::History => ("GET", "/api/incidents/{id}/history"),
            Route::Timeline => ("POST", "/api/incidents/{id}/timeline"),
            Route::Operations => ("POST", "/api/incidents/{id}/operations"),
            Route::AssignRole => ("PUT", "/api/incidents/{id}/roles/{role}"),
            Route::ProposeHandoff => ("POST", "/api/incidents/{id}/handoffs"),
            Route::AcceptHandoff => ("POST", "/api/incidents/{id}/handoffs/accept"),
            Route::WithdrawHandoff => ("DELETE", "/api/incidents/{id}/handoffs/{role}"),
            Route::Pins => ("PUT", "/api/incidents/{id}/pins"),
            Route::Reopen => ("POST", "/api/incidents/{id}/reopen"),
            Route::DeleteIncident => ("DELETE", "/api/incidents/{id}"),
            Route::Analytics => ("GET", "/api/analytics/incidents"),
            Route::Insights => ("GET", "/insights"),
            Route::ListTokens => ("GET", "/api/tokens"),
            Route::People => ("GET", "/api/people"),
            Route::PersonRoles => ("GET", "/api/people/{name}/roles"),
            Route::Rotation => ("GET", "/api/people/rotation"),
            Route::CreateToken => ("POST", "/api/tokens"),
            Route::RevokeToken => ("DELETE", "/api/tokens/{name}"),
            Route::Session => ("GET", "/api/session"),
            Route::StatusUpdate => ("GET", "/api/incidents/{id}/update"),
            Route::UpdateSent => ("POST", "/api/incidents/{id}/update/sent"),
            Route::SendUpdate => ("POST", "/api/incidents/{id}/update/send"),
            Route::MailThread => ("GET", "/api/incidents/{id}/mail"),
            Route::AlertHook => ("POST", "/api/hooks/alertmanager"),
            Route::AlertHookFor => ("POST", "/api/hooks/alertmanager/{id}"),
            Route::Webhooks => ("GET", "/api/webhooks"),
            Route::Audit => ("GET", "/api/audit"),
            Route::WebhookDeliveries => ("GET", "/api/webhooks/{name}/deliveries"),
            Route::AuthProviders => ("GET", "/api/auth/providers"),
            Route::OidcLogin => ("GET", "/auth/oidc/login"),
            Route::OidcCallback => ("GET", "/auth/oidc/callback"),
            Route::SignOut => ("POST", "/api/session/signout"),
            Route::ListSessions => ("GET", "/api/sessions"),
            Route::RevokeSession => ("DELETE", "/api/sessions/{id}"),
            Route::BindChannel => ("PUT", "/api/incidents/{id}/channel"),
            Route::UnbindChannel => ("DELETE", "/api/incidents/{id}/channel"),
            Route::ChatLog => ("GET", "/api/incidents/{id}/chat"),
            Route::SlackEvents => ("POST", "/api/slack/events"),
            Route::SlackCommands => ("POST", "/api/slack/commands"),
            Route::StartReplay => ("POST", "/api/incidents/{id}/replay"),
            Route::ReplayStatus => ("GET", "/api/incidents/{id}/replay"),
            Route::PauseReplay => ("POST", "/api/incidents/{id}/replay/pause"),
            Route::ResumeReplay => ("POST", "/api/incidents/{id}/replay/resume"),
            Route::JumpReplay => ("POST", "/api/incidents/{id}/replay/jump"),
            Route::CompareReplay => ("GET", "/api/incidents/{id}/replay/compare"),
        })
    }

    /// Whether the route is a command decision on an incident the call's setup makes its caller command.
    fn commands(self) -> bool {
        matches!(
            self,
            Route::AssignRole
                | Route::ProposeHandoff
                | Route::AcceptHandoff
                | Route::WithdrawHandoff
                | Route::Pins
                | Route::BindChannel
                | Route::UnbindChannel
                | Route::StartReplay
                | Route::PauseReplay
                | Route::ResumeReplay
                | Route::JumpReplay
        )
    }

    /// Whether the route names an incident (in its path, or in an alert's label).
    fn names_incident(self) -> bool {
        matches!(
            self,
            Route::Sync
                | Route::Read
                | Route::Export
                | Route::History
                | Route::Timeline
                | Route::Operations
                | Route::AssignRole
                | Route::ProposeHandoff
                | Route::AcceptHandoff
                | Route::WithdrawHandoff
                | Route::Pins
                | Route::Reopen
                | Route::DeleteIncident
                | Route::StatusUpdate
                | Route::UpdateSent
                | Route::SendUpdate
                | Route::MailThread
                | Route::AlertHook
                | Route::AlertHookFor
                | Route::BindChannel
                | Route::UnbindChannel
                | Route::ChatLog
                | Route::StartReplay
                | Route::ReplayStatus
                | Route::PauseReplay
                | Route::ResumeReplay
                | Route::JumpReplay
                | Route::CompareReplay
        )
    }
}

/// The members the restricted fixture adds to every incident it declares: its read and write tokens' people.
const MEMBERS: [&str; 2] = ["reader", "writer"];

/// What the table runs against: a server, its tokens, and an incident every call may touch.
struct Fixture {
    server: TestServer,
    /// The OpenID provider the server signs people in with; runs as long as the fixture.
    _provider: OidcProvider,
    /// bob's session cookie (`name=value`): the provider puts him in `eng`, a writer.
    session: String,
    /// A write token named bob: sessions and tokens share the names of people, so incidents declared with it are
    /// commanded by the bob of the session, whose calls then pass the command rules.
    bob: String,
    /// Follows no redirect, so that a redirect is what the table sees.
    direct: reqwest::Client,
    read: String,
    write: String,
    /// Tokens whose people are members of no incident of the fixture.
    outsider_read: String,
    outsider_write: String,
    /// Whether every incident the fixture declares is restricted (with [`MEMBERS`] added).
    restricted: bool,
    revoked: String,
    /// The incident read, exported and edited by the calls.
    incident: String,
    /// Numbers the throwaway resources (token names, incidents to delete).
    counter: AtomicUsize,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(false).await
    }

    async fn with(restricted: bool) -> Fixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let provider = OidcProvider::start(&[addr])
            .await
            .expect("starting the OpenID provider");
        let oidc = provider.settings(addr);
        // One webhook endpoint, so that its delivery log exists; nothing listens there and nothing needs to.
        let server = TestServer::start_on(
            listener,
            |config| {
                config.oidc = Some(oidc);
                config.webhooks = vec![Endpoint {
                    name: ENDPOINT.into(),
                    url: "http://127.0.0.1:9/hook".into(),
                    secret: None,
                    format: Format::Json,
                    events: Some(vec!["closed".into()]),
                    drills: false,
                    restricted: false,
                }];
                // A mailing list for every incident, so that sending succeeds (the relay is never reached).
                config.mail = Some(MailSettings {
                    host: "127.0.0.1".into(),
                    port: Some(9),
                    from: "incidents@example.com".into(),
                    lists: vec![MailList {
                        address: "ops@example.com".into(),
                        templates: Vec::new(),
                        severities: Vec::new(),
                        // The fixture's incidents are restricted in one dimension of the table.
                        restricted: true,
                    }],
                    ..MailSettings::default()
                });
            },
            None,
        )
        .await;
        let bob = SsoClient::new();
        bob.signed_in(&server, "bob").await.expect("bob signs in");
        let session = format!(
            "{}={}",
            server::sso::SESSION_COOKIE,
            bob.session_cookie(&server).expect("bob's session cookie")
        );
        let bob_token = server.token("bob", "write").await;
        let read = server.token("reader", "read").await;
        let write = server.token("writer", "write").await;
        let outsider_read = server.token("outsider-reader", "read").await;
        let outsider_write = server.token("outsider-writer", "write").await;
        let revoked = server.token("former-admin", "admin").await;
        server.revoke("former-admin").await;
        let mut fixture = Fixture {
            server,
            _provider: provider,
            session,
            bob: bob_token,
            direct: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            read,
            write,
            outsider_read,
            outsider_write,
            restricted,
            revoked,
            incident: String::new(),
            counter: AtomicUsize::new(0),
        };
        fixture.incident = fixture.declare(&fixture.write, "Auth table").await;
        fixture
    }

    /// Declares an incident as `token`: restricted with [`MEMBERS`] added (by the admin) when the fixture is.
    async fn declare(&self, token: &str, title: &str) -> String {
        let response = self
            .server
            .request(Method::POST, "/api/incidents", Some(token))
            .json(&json!({"title": title, "restricted": self.restricted}))
            .send()
            .await
            .expect("declaring");
        assert_eq!(response.status(), StatusCode::CREATED, "declaring {title}");
        let body: Value = response.json().await.expect("the declaration answer");
        let id = body["id"].as_str().expect("an id").to_owned();
        if self.restricted {
            let add: Vec<Value> = MEMBERS
                .iter()
                .map(|m| json!({"op": "addMember", "person": m}))
                .collect();
            self.setup(
                &self.server.admin_token,
                &id,
                "operations",
                json!({"operations": add}),
            )
            .await;
        }
        id
    }

    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Anonymous => None,
            Caller::Garbage => Some("cp_NotATokenTheServerEverIssued".to_owned()),
            Caller::Revoked => Some(self.revoked.clone()),
            Caller::Scoped(Needs::Read) => Some(self.read.clone()),
            Caller::Scoped(Needs::Write) => Some(self.write.clone()),
            Caller::Scoped(_) | Caller::Outsider(Needs::Admin) => {
                Some(self.server.admin_token.clone())
            }
            Caller::Outsider(Needs::Write) => Some(self.outsider_write.clone()),
            Caller::Outsider(_) => Some(self.outsider_read.clone()),
            Caller::Session => None,
        }
    }

    /// A request of the table as `caller`: its token, or the session cookie with the server's own `Origin`; no
    /// redirect followed. Signing out ends the session that sends it, so the session caller signs out a fresh
    /// one of its own.
    async fn request(
        &self,
        route: Route,
        caller: Caller,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = self.direct.request(method, self.server.url(path));
        match (caller, self.token(caller)) {
            (_, Some(token)) => request.bearer_auth(token),
            (Caller::Session, None) => {
                let cookie = if route == Route::SignOut {
                    let throwaway = SsoClient::new();
                    throwaway
                        .signed_in(&self.server, "bob")
                        .await
                        .expect("bob signs in again");
                    let value = throwaway.session_cookie(&self.server).expect("a cookie");
                    format!("{}={value}", server::sso::SESSION_COOKIE)
                } else {
                    self.session.clone()
                };
                request
                    .header("cookie", cookie)
                    .header("origin", format!("http://{}", self.server.addr))
            }
            (_, None) => request,
        }
    }

    /// The person a command route's setup acts for: the caller when it may write (so the call can succeed), the
    /// writer otherwise (the call is refused before any rule is looked at). Returns (token, name).
    fn actor(&self, caller: Caller) -> (&str, &str) {
        match caller {
            Caller::Scoped(Needs::Admin) => (&self.server.admin_token, "admin"),
            // Commanded by bob, so that his session's calls pass the command rules.
            Caller::Session => (&self.bob, "bob"),
            _ => (&self.write, "writer"),
        }
    }

    /// A closed incident `token`'s person commanded.
    async fn closed_by(&self, token: &str, n: usize) -> String {
        let closed = self.commanded_by(token, n).await;
        self.setup(
            token,
            &closed,
            "operations",
            json!({"operations": [{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]}),
        )
        .await;
        closed
    }

    /// A replay drill `token`'s person facilitates, at half speed (running, its steps far off).
    async fn replay_by(&self, token: &str, n: usize) -> String {
        let source = self.closed_by(token, n).await;
        let response = self
            .server
            .request(
                Method::POST,
                &format!("/api/incidents/{source}/replay"),
                Some(token),
            )
            .json(&json!({"speed": 0.5}))
            .send()
            .await
            .expect("starting a replay");
        assert_eq!(response.status(), StatusCode::CREATED, "setup replay");
        let body: Value = response.json().await.expect("the drill");
        body["id"].as_str().expect("the drill's id").to_owned()
    }

    /// An incident declared by `token`, so that its holder is the commander.
    async fn commanded_by(&self, token: &str, n: usize) -> String {
        self.declare(token, &format!("Commanded {n}")).await
    }

    /// Sends the command operation `op` as `token`, which must succeed (setup of a call).
    async fn setup(&self, token: &str, id: &str, path: &str, body: Value) {
        let response = self
            .server
            .request(
                Method::POST,
                &format!("/api/incidents/{id}/{path}"),
                Some(token),
            )
            .json(&body)
            .send()
            .await
            .expect("sending a setup request");
        assert!(
            response.status().is_success(),
            "setup {path} {body}: {}",
            response.status()
        );
    }

    /// The method, path and body of one call of `route` by `caller`; routes that consume something get a fresh one
    /// each time, set up so that a caller whose scope allows the call also passes the command rules.
    async fn call(&self, route: Route, caller: Caller) -> (Method, String, Option<Value>) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = &self.incident;
        let (actor, actor_name) = self.actor(caller);
        match route {
            Route::Healthz => (Method::GET, "/healthz".into(), None),
            Route::Metrics => (Method::GET, "/metrics".into(), None),
            Route::OpenApi => (Method::GET, "/api/openapi.json".into(), None),
            // A file of the UI rather than `/`, which answers 503 on a server built without the wasm client.
            Route::WebUi => (Method::GET, "/js/app.js".into(), None),
            Route::Sync => (Method::GET, "/sync".into(), None),
            Route::SyncTicket => (Method::POST, "/api/sync-ticket".into(), None),
            Route::History => (Method::GET, format!("/api/incidents/{id}/history"), None),
            Route::Analytics => (
                Method::GET,
                "/api/analytics/incidents?format=csv".into(),
                None,
            ),
            Route::Insights => (Method::GET, "/insights".into(), None),
            Route::BindChannel => {
                let own = self.commanded_by(actor, n).await;
                (
                    Method::PUT,
                    format!("/api/incidents/{own}/channel"),
                    Some(json!({"network": "irc", "name": format!("#auth-{n}")})),
                )
            }
            Route::UnbindChannel => {
                let own = self.commanded_by(actor, n).await;
                // Bound by an admin, so that unbinding changes something for the command rules to judge.
                self.setup(
                    &self.server.admin_token,
                    &own,
                    "operations",
                    json!({"operations": [{"op": "bindChannel", "network": "irc", "name": format!("#unbind-{n}")}]}),
                )
                .await;
                (
                    Method::DELETE,
                    format!("/api/incidents/{own}/channel"),
                    None,
                )
            }
            Route::ChatLog => (Method::GET, format!("/api/incidents/{id}/chat"), None),
            Route::SlackEvents => (
                Method::POST,
                "/api/slack/events".into(),
                Some(json!({"type": "url_verification", "challenge": "c"})),
            ),
            Route::SlackCommands => (Method::POST, "/api/slack/commands".into(), None),
            Route::AssignRole => {
                let own = self.commanded_by(actor, n).await;
                (
                    Method::PUT,
                    format!("/api/incidents/{own}/roles/operations"),
                    Some(json!({"person": format!("ops-{n}")})),
                )
            }
            Route::ProposeHandoff => {
                let own = self.commanded_by(actor, n).await;
                (
                    Method::POST,
                    format!("/api/incidents/{own}/handoffs"),
                    Some(json!({"role": "commander", "to": format!("next-{n}")})),
                )
            }
            Route::AcceptHandoff => {
                // Someone else commands and hands the command to the actor, who accepts.
                let other = if actor_name == "admin" {
                    &self.write
                } else {
                    &self.server.admin_token
                };
                let theirs = self.commanded_by(other, n).await;
                self.setup(
                    other,
                    &theirs,
                    "handoffs",
                    json!({"role": "commander", "to": actor_name}),
                )
                .await;
                (
                    Method::POST,
                    format!("/api/incidents/{theirs}/handoffs/accept"),
                    Some(json!({"role": "commander"})),
                )
            }
            Route::WithdrawHandoff => {
                let own = self.commanded_by(actor, n).await;
                self.setup(
                    actor,
                    &own,
                    "handoffs",
                    json!({"role": "commander", "to": format!("next-{n}")}),
                )
                .await;
                (
                    Method::DELETE,
                    format!("/api/incidents/{own}/handoffs/commander"),
                    None,
                )
            }
            Route::Pins => {
                let own = self.commanded_by(actor, n).await;
                (
                    Method::PUT,
                    format!("/api/incidents/{own}/pins"),
                    Some(json!({"fields": ["summary"]})),
                )
            }
            Route::Reopen => {
                let closed = self.commanded_by(&self.write, n).await;
                self.setup(
                    &self.write,
                    &closed,
                    "operations",
                    json!({"operations": [{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]}),
                )
                .await;
                (
                    Method::POST,
                    format!("/api/incidents/{closed}/reopen"),
                    Some(json!({"reason": format!("back {n}"), "status": "active"})),
                )
            }
            Route::StartReplay => {
                let closed = self.closed_by(actor, n).await;
                (
                    Method::POST,
                    format!("/api/incidents/{closed}/replay"),
                    Some(json!({"speed": 10})),
                )
            }
            Route::ReplayStatus | Route::CompareReplay => {
                let drill = self.replay_by(&self.write, n).await;
                let tail = if route == Route::CompareReplay {
                    "/compare"
                } else {
                    ""
                };
                (
                    Method::GET,
                    format!("/api/incidents/{drill}/replay{tail}"),
                    None,
                )
            }
            Route::PauseReplay | Route::JumpReplay => {
                let drill = self.replay_by(actor, n).await;
                let (tail, body) = if route == Route::PauseReplay {
                    ("pause", None)
                } else {
                    ("jump", Some(json!({"seconds": 1})))
                };
                (
                    Method::POST,
                    format!("/api/incidents/{drill}/replay/{tail}"),
                    body,
                )
            }
            Route::ResumeReplay => {
                let drill = self.replay_by(actor, n).await;
                self.setup(actor, &drill, "replay/pause", json!(null)).await;
                (
                    Method::POST,
                    format!("/api/incidents/{drill}/replay/resume"),
                    None,
                )
            }
            Route::Templates => (Method::GET, "/api/templates".into(), None),
            Route::TemplateSource => (Method::GET, "/api/templates/incident".into(), None),
            // A string body is sent as the Markdown it is (see `markdown_or_json`).
            Route::PutTemplate => (
                Method::PUT,
                format!("/api/templates/auth-{n}"),
                Some(Value::String(team_template(n))),
            ),
            Route::DeleteTemplate => {
                let template = format!("doomed-{n}");
                let response = self
                    .server
                    .request(
                        Method::PUT,
                        &format!("/api/templates/{template}"),
                        Some(&self.server.admin_token),
                    )
                    .header("content-type", "text/markdown")
                    .body(team_template(n))
                    .send()
                    .await
                    .expect("uploading a template to delete");
                assert!(
                    response.status().is_success(),
                    "setup upload: {}",
                    response.status()
                );
                (Method::DELETE, format!("/api/templates/{template}"), None)
            }
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
                let doomed = self.declare(&self.write, &format!("Doomed {n}")).await;
                (Method::DELETE, format!("/api/incidents/{doomed}"), None)
            }
            Route::ListTokens => (Method::GET, "/api/tokens".into(), None),
            Route::People => (Method::GET, "/api/people".into(), None),
            Route::PersonRoles => (Method::GET, "/api/people/alice/roles".into(), None),
            Route::Rotation => (
                Method::GET,
                "/api/people/rotation?present=alice,bob".into(),
                None,
            ),
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
            Route::Audit => (Method::GET, "/api/audit?action=token.".into(), None),
            Route::UpdateSent => (
                Method::POST,
                format!("/api/incidents/{id}/update/sent"),
                Some(json!({})),
            ),
            Route::SendUpdate => (
                Method::POST,
                format!("/api/incidents/{id}/update/send"),
                Some(json!({})),
            ),
            Route::MailThread => (Method::GET, format!("/api/incidents/{id}/mail"), None),
            Route::AlertHook => (
                Method::POST,
                "/api/hooks/alertmanager".into(),
                Some(alert_notification(n, Some(id))),
            ),
            Route::AlertHookFor => (
                Method::POST,
                format!("/api/hooks/alertmanager/{id}"),
                Some(alert_notification(n, None)),
            ),
            Route::WebhookDeliveries => (
                Method::GET,
                format!("/api/webhooks/{ENDPOINT}/deliveries"),
                None,
            ),
            Route::AuthProviders => (Method::GET, "/api/auth/providers".into(), None),
            Route::OidcLogin => (Method::GET, "/auth/oidc/login".into(), None),
            Route::OidcCallback => (Method::GET, "/auth/oidc/callback".into(), None),
            Route::SignOut => (Method::POST, "/api/session/signout".into(), None),
            Route::ListSessions => (Method::GET, "/api/sessions".into(), None),
            Route::RevokeSession => {
                // A fresh session of carol's for each call, found by an admin.
                let carol = SsoClient::new();
                carol
                    .signed_in(&self.server, "carol")
                    .await
                    .expect("carol signs in");
                let list: Value = self
                    .server
                    .request(Method::GET, "/api/sessions", Some(&self.server.admin_token))
                    .send()
                    .await
                    .expect("listing sessions")
                    .json()
                    .await
                    .expect("a list");
                let id = list["sessions"]
                    .as_array()
                    .and_then(|all| all.iter().rev().find(|s| s["name"] == "carol"))
                    .and_then(|s| s["id"].as_str())
                    .expect("carol's session")
                    .to_owned();
                (Method::DELETE, format!("/api/sessions/{id}"), None)
            }
        }
    }
}

/// The webhook endpoint the fixture's server is configured with.
const ENDPOINT: &str = "audit";

/// A team's template, numbered so each upload is its own.
fn team_template(n: usize) -> String {
    format!("# Auth table {n}\n\n## Title\n<!-- commandpost key=title kind=text -->\n")
}

/// `body` on `request`: a JSON string is a template's Markdown, sent as the text it is; anything else is JSON.
fn markdown_or_json(request: reqwest::RequestBuilder, body: Value) -> reqwest::RequestBuilder {
    match body {
        Value::String(markdown) => request
            .header("content-type", "text/markdown")
            .body(markdown),
        other => request.json(&other),
    }
}

/// A firing Alertmanager notification (version 4) with one alert, naming the incident by label if `incident`.
fn alert_notification(n: usize, incident: Option<&str>) -> Value {
    let mut labels = json!({"alertname": "AuthTable", "n": n.to_string()});
    if let Some(id) = incident {
        labels["incident"] = json!(id);
    }
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"AuthTable\"}",
        "status": "firing",
        "receiver": "commandpost",
        "groupLabels": {},
        "commonLabels": labels.clone(),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com:9093",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "the auth table"},
            "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.com/graph",
            "fingerprint": format!("auth{n:012}"),
        }],
    })
}

/// The status a caller must get from a route.
fn expected(route: Route, caller: Caller) -> StatusCode {
    match (route, caller) {
        (Route::SignOut, Caller::Session) => return StatusCode::NO_CONTENT,
        (Route::SignOut, Caller::Scoped(_) | Caller::Outsider(_)) => {
            return StatusCode::UNPROCESSABLE_ENTITY;
        }
        (_, Caller::Session) => return expected(route, Caller::Scoped(Needs::Write)),
        _ => {}
    }
    match (route.needs(), caller) {
        (Needs::Nothing, _) => route.success(),
        (_, Caller::Anonymous | Caller::Garbage | Caller::Revoked) => StatusCode::UNAUTHORIZED,
        (needs, Caller::Scoped(scope) | Caller::Outsider(scope)) if scope < needs => {
            StatusCode::FORBIDDEN
        }
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
            let (method, path, body) = fixture.call(route, caller).await;
            let what = format!("{method} {path} as {caller:?}");
            let want = expected(route, caller);
            if route == Route::Sync {
                if let Err(e) = check_sync(&fixture, caller, want).await {
                    failures.push(format!("{what}: {e:#}"));
                }
                continue;
            }
            let mut request = fixture.request(route, caller, method.clone(), &path).await;
            if let Some(body) = body {
                request = markdown_or_json(request, body);
            }
            let response = request.send().await.context("sending the request")?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status != want {
                let text: String = text.chars().take(200).collect();
                failures.push(format!("{what}: {status}, expected {want} ({text})"));
                continue;
            }
            let checked = match status {
                StatusCode::UNAUTHORIZED => check_error_body(&text, "unauthorized", &what),
                StatusCode::FORBIDDEN => check_error_body(&text, "forbidden", &what),
                StatusCode::UNPROCESSABLE_ENTITY => check_error_body(&text, "unprocessable", &what),
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
    // Five routes append an entry (timeline, update sent, update mailed, and both alert hooks), once for each of
    // the three.
    let by = |who: &str| authors.iter().filter(|a| **a == who).count();
    anyhow::ensure!(
        authors.len() == 15 && by("writer") == 5 && by("admin") == 5 && by("bob") == 5,
        "only the write, admin and session calls appended: {authors:?}"
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
            session == json!({"name": name, "scope": scope, "kind": "token"}),
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

/// Upgrades `/sync` as `caller` (the token in the Authorization header; tickets have their own tests in
/// `tickets.rs`): 101 for a live token, else the status `want` with our error body.
async fn check_sync(fixture: &Fixture, caller: Caller, want: StatusCode) -> anyhow::Result<()> {
    let server = &fixture.server;
    let target = SyncTarget {
        url: format!("ws://{}/sync", server.addr),
        bearer: fixture.token(caller),
    };
    let mut request = (&target).into_client_request()?;
    if let Caller::Session = caller {
        // A WebSocket upgrade carries the cookie as any request does; from the server's own page.
        request
            .headers_mut()
            .insert("cookie", fixture.session.parse()?);
        request
            .headers_mut()
            .insert("origin", format!("http://{}", server.addr).parse()?);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            anyhow::ensure!(
                response.status() == want,
                "upgraded ({}), expected {want}",
                response.status()
            );
            drop(socket);
        }
        Err(ws::Error::Http(response)) => {
            anyhow::ensure!(
                response.status().as_u16() == want.as_u16(),
                "{}, expected {want}",
                response.status()
            );
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            check_error_body(&body, "unauthorized", "the refused upgrade")?;
        }
        Err(other) => anyhow::bail!("{other}"),
    }
    Ok(())
}

/// Every route of the router, as (method, path) pairs: the operations of its OpenAPI description, which the router
/// is built from (`tests/tests/openapi.rs` holds the two together).
fn routes_of_the_router() -> anyhow::Result<Vec<(String, String)>> {
    let doc: Value = serde_json::from_str(server::api::openapi::document())?;
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().context("paths")? {
        for method in item.as_object().context("a path item")?.keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    Ok(routes)
}

#[test]
fn the_table_has_a_row_for_every_route_of_the_router() -> anyhow::Result<()> {
    let mut router = routes_of_the_router()?;
    router.sort();
    let mut table: Vec<(String, String)> = Route::ALL
        .iter()
        .filter_map(|r| r.pattern())
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    table.sort();
    let missing: Vec<_> = router.iter().filter(|r| !table.contains(r)).collect();
    let stale: Vec<_> = table.iter().filter(|r| !router.contains(r)).collect();
    anyhow::ensure!(
        missing.is_empty() && stale.is_empty(),
        "routes without a row in the authorization table: {missing:?}; rows for routes the router lacks: {stale:?}"
    );
    anyhow::ensure!(router.len() >= 20, "only {} routes found", router.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_scope_syncs_with_a_ticket_or_the_header() -> anyhow::Result<()> {
    let fixture = Fixture::new().await;
    let server = &fixture.server;
    // Every live scope can sync (a read token read-only), with the token in the Authorization header or with a
    // ticket it asked for, as browsers do.
    for token in [&fixture.read, &fixture.write, &server.admin_token] {
        let mut client = SyncClient::connect(&server.ws_url(token)).await?;
        client.open(&fixture.incident).await?;
        let ticket = server.sync_ticket(token).await;
        let mut client = SyncClient::connect(&server.ticket_url(&ticket)).await?;
        client.open(&fixture.incident).await?;
    }
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
    let well_formed = wire::DocumentId::random().to_string();
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

/// Waits, on every client at once, for the `error` saying the token was revoked and the close that follows;
/// returns how long the slowest took from `since`.
async fn all_told_revoked(clients: Vec<SyncClient>, since: Instant) -> anyhow::Result<Duration> {
    let waits = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let message = client.expect_error_then_close().await?;
            anyhow::ensure!(message.contains("revoked"), "{message}");
            anyhow::Ok(since.elapsed())
        })
    });
    let mut slowest = Duration::ZERO;
    for wait in futures_util::future::join_all(waits).await {
        slowest = slowest.max(wait.context("a waiting task panicked")??);
    }
    Ok(slowest)
}

/// Clients of `token` syncing `incident`, plus one that only joined; all must be closed on revocation.
async fn live_clients(
    server: &TestServer,
    token: &str,
    incident: &str,
) -> anyhow::Result<Vec<SyncClient>> {
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = SyncClient::connect(&server.ws_url(token)).await?;
        client.open(incident).await?;
        clients.push(client);
    }
    clients.push(SyncClient::connect(&server.ws_url(token)).await?);
    Ok(clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_over_http_closes_its_live_connections_within_a_second()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let leaver = server.token("leaver", "write").await;
    let stayer = server.token("stayer", "write").await;
    let incident = server.declare(&stayer, "Revocation").await.id;
    let clients = live_clients(&server, &leaver, &incident).await?;
    let mut bystander = SyncClient::connect(&server.ws_url(&stayer)).await?;
    bystander.open(&incident).await?;

    let started = Instant::now();
    server.revoke("leaver").await;
    let slowest = all_told_revoked(clients, started).await?;
    anyhow::ensure!(
        slowest < Duration::from_secs(1),
        "the last connection closed {slowest:?} after the revocation began"
    );
    println!("revocation over HTTP: every connection closed within {slowest:?}");
    // The other token's connection carries on.
    bystander.splice("summary", 0, 0, "still here").await?;
    let closed = server
        .metric("commandpost_revoked_disconnects_total")
        .await?;
    anyhow::ensure!(closed == 4, "{closed} revoked connections counted");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_from_the_command_line_closes_its_connections_within_a_second()
-> anyhow::Result<()> {
    // The real binary, so that the revocation comes from another process, as `commandpost token revoke` does on
    // the server's machine (or another node does on a shared database).
    let server = TestServer::start_process().await;
    let leaver = server.token("leaver", "write").await;
    let incident = server
        .declare(&server.admin_token, "Revocation by CLI")
        .await
        .id;
    let clients = live_clients(&server, &leaver, &incident).await?;
    let revoke = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandpost-under-test"))
        .args(["token", "revoke", "leaver", "--data-dir"])
        .arg(server.data_dir())
        .env_remove("COMMANDPOST_DATABASE_URL")
        .output()
        .await?;
    let revoked_at = Instant::now();
    anyhow::ensure!(
        revoke.status.success(),
        "token revoke: {}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let slowest = all_told_revoked(clients, revoked_at).await?;
    anyhow::ensure!(
        slowest < Duration::from_secs(1),
        "the last connection closed {slowest:?} after the command line revoked the token"
    );
    println!("revocation from the command line: every connection closed within {slowest:?}");
    server.stop().await;
    Ok(())
}

/// The callers of the restricted dimension: the members (read and write), the admin, and non-members of each scope
/// below admin (an admin sees every incident).
const MEMBERSHIP_CALLERS: [Caller; 5] = [
    Caller::Scoped(Needs::Read),
    Caller::Scoped(Needs::Write),
    Caller::Scoped(Needs::Admin),
    Caller::Outsider(Needs::Read),
    Caller::Outsider(Needs::Write),
];

/// The answer every unknown incident id gets (`unknown_incident_ids_all_answer_the_same_404` checks they agree).
async fn unknown_incident_body(server: &TestServer) -> anyhow::Result<String> {
    let unknown = wire::DocumentId::random();
    let response = server
        .request(
            Method::GET,
            &format!("/api/incidents/{unknown}"),
            Some(&server.admin_token),
        )
        .send()
        .await?;
    anyhow::ensure!(response.status() == StatusCode::NOT_FOUND);
    Ok(response.text().await?)
}

/// Whether the incident `id` is in `route`'s answer `text` (the list's ids, the analytics rows' ids); `None` for
/// routes whose answer does not list incidents.
fn lists(route: Route, text: &str, id: &str) -> Option<bool> {
    match route {
        Route::List => {
            let list: Value = serde_json::from_str(text).ok()?;
            Some(
                list["incidents"]
                    .as_array()?
                    .iter()
                    .any(|row| row["id"] == id),
            )
        }
        Route::Analytics => Some(text.contains(id)),
        _ => None,
    }
}

/// How many incidents the insights page counts (`· N incidents`).
fn insights_count(page: &str) -> Option<usize> {
    let (_, rest) = page.split_once("<p class=\"scope\">")?;
    let (_, rest) = rest.split_once(" · ")?;
    rest.split_once(' ')?.0.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_incidents_answer_non_members_exactly_as_unknown_ids() -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for restricted in [false, true] {
        let fixture = Fixture::with(restricted).await;
        let unknown = unknown_incident_body(&fixture.server).await?;
        for route in Route::ALL {
            for caller in MEMBERSHIP_CALLERS {
                let hidden = restricted && matches!(caller, Caller::Outsider(_));
                let (method, path, body) = fixture.call(route, caller).await;
                let what = format!(
                    "{method} {path} as {caller:?} ({})",
                    if restricted { "restricted" } else { "open" }
                );
                let scoped = expected(route, caller);
                // The command routes act on incidents the setup's person commands: anyone else is refused by the
                // command rules.
                let want = if matches!(caller, Caller::Outsider(_))
                    && route.commands()
                    && scoped.is_success()
                {
                    StatusCode::FORBIDDEN
                } else {
                    scoped
                };
                if route == Route::Sync {
                    if let Err(e) = check_restricted_sync(&fixture, caller, !hidden).await {
                        failures.push(format!("{what}: {e:#}"));
                    }
                    continue;
                }
                let mut request = fixture.request(route, caller, method.clone(), &path).await;
                if let Some(body) = body {
                    request = markdown_or_json(request, body);
                }
                let response = request.send().await.context("sending the request")?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if hidden && route.names_incident() {
                    // Exactly what the same call with an unknown id gets, status and body.
                    let (status_unknown, text_unknown) =
                        fixture.unknown_twin(route, caller, &method, &path).await?;
                    if (status, &text) != (status_unknown, &text_unknown)
                        || status.is_success()
                        || ![StatusCode::NOT_FOUND, StatusCode::FORBIDDEN].contains(&status)
                    {
                        failures.push(format!(
                            "{what}: {status} {text:?}, an unknown id gets {status_unknown} {text_unknown:?}"
                        ));
                    }
                    if status == StatusCode::NOT_FOUND && text != unknown {
                        failures.push(format!(
                            "{what}: {text:?} is not the unknown id's {unknown:?}"
                        ));
                    }
                    continue;
                }
                if status != want {
                    let text: String = text.chars().take(200).collect();
                    failures.push(format!("{what}: {status}, expected {want} ({text})"));
                    continue;
                }
                if let Some(listed) = lists(route, &text, &fixture.incident)
                    && listed == hidden
                {
                    failures.push(format!("{what}: the incident is listed: {listed}"));
                }
                if route == Route::Insights {
                    let (_, list, _) = fixture.call(Route::List, caller).await;
                    let visible: Value = fixture
                        .server
                        .request(Method::GET, &list, fixture.token(caller).as_deref())
                        .send()
                        .await?
                        .json()
                        .await?;
                    // Insights leave drills out (the replay routes' calls declare some).
                    let listed = visible["incidents"]
                        .as_array()
                        .map(|rows| rows.iter().filter(|row| row["drill"] != true).count());
                    if insights_count(&text) != listed {
                        failures.push(format!(
                            "{what}: insights count {:?}, the list {listed:?}",
                            insights_count(&text)
                        ));
                    }
                }
            }
        }
        fixture.server.stop().await;
    }
    anyhow::ensure!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
    Ok(())
}

impl Fixture {
    /// The status and body of the call of `route` by `caller` at `path` with its incident replaced by an unknown
    /// id (a fresh body: the call's own may have consumed something).
    async fn unknown_twin(
        &self,
        route: Route,
        caller: Caller,
        method: &Method,
        path: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        let unknown = wire::DocumentId::random().to_string();
        let (path, body) = match route {
            Route::AlertHook => (path.to_owned(), Some(alert_notification(0, Some(&unknown)))),
            _ => {
                let (_, rest) = path
                    .split_once("/api/incidents/")
                    .or_else(|| path.split_once("/api/hooks/alertmanager/"))
                    .context("a path naming an incident")?;
                let id = rest.split(['/', '?']).next().context("an id")?;
                let (_, _, body) = self.call(route, caller).await;
                (path.replace(id, &unknown), body)
            }
        };
        let mut request = self
            .server
            .request(method.clone(), &path, self.token(caller).as_deref());
        if let Some(body) = body {
            request = markdown_or_json(request, body);
        }
        let response = request.send().await?;
        Ok((response.status(), response.text().await?))
    }
}

/// Opens the fixture's incident over `/sync` as `caller`: it syncs when `visible`, else it is `doc-unavailable`,
/// exactly as an unknown document.
async fn check_restricted_sync(
    fixture: &Fixture,
    caller: Caller,
    visible: bool,
) -> anyhow::Result<()> {
    let token = fixture.token(caller).context("a token")?;
    let mut client = SyncClient::connect(&fixture.server.ws_url(&token)).await?;
    let opened = client.open(&fixture.incident).await;
    if visible {
        opened.context("opening the incident")?;
        return Ok(());
    }
    let refused = format!(
        "{:#}",
        opened.err().context("opening a hidden incident fails")?
    );
    let unknown = wire::DocumentId::random().to_string();
    let mut other = SyncClient::connect(&fixture.server.ws_url(&token)).await?;
    let unknown_refused = format!(
        "{:#}",
        other
            .open(&unknown)
            .await
            .err()
            .context("opening an unknown document fails")?
    );
    anyhow::ensure!(
        refused.contains("doc-unavailable")
            && refused.replace(&fixture.incident, "ID") == unknown_refused.replace(&unknown, "ID"),
        "{refused} vs an unknown document's {unknown_refused}"
    );
    Ok(())
}
