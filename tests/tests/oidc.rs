//! Single sign-on against a real OpenID Connect provider (npm `oidc-provider` on loopback, `tests/src/oidc.rs`):
//! in headless Chromium through the provider's own login page, then over HTTP: the flow as a browser follows it (cookies, the provider's own login page, redirects), the mapping of groups to
//! scopes, every refusal (an account that matches nothing, a name that cannot be one, wrong audience, expired,
//! tampered and replayed ID tokens, a replayed `state`), sessions that end when idle and at their lifetime, an
//! admin ending a session (its live `/sync` closes within a second), signing out, cross-site requests carrying the
//! cookie, and two nodes on one PostgreSQL sharing sessions.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::oidc::{OidcProvider, SignIn, SsoClient};
use tests::{Browser, SyncClient, TestDatabase, TestServer, WindowSize, eventually};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long a test waits for an outcome the server reaches by itself.
const PATIENCE: Duration = Duration::from_secs(20);

/// A loopback listener for a server that starts after the provider (which must know its callback URL).
async fn listener() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

/// A provider and one server signing in through it, its settings changed by `configure`.
async fn server_with(
    configure: impl FnOnce(&mut server::config::OidcSettings),
) -> anyhow::Result<(OidcProvider, TestServer)> {
    let listener = listener().await?;
    let addr = listener.local_addr()?;
    let provider = OidcProvider::start(&[addr]).await?;
    let mut settings = provider.settings(addr);
    configure(&mut settings);
    let server = TestServer::start_on(listener, |config| config.oidc = Some(settings), None).await;
    Ok((provider, server))
}

/// `(status, error code)` of a response.
async fn refusal(response: reqwest::Response) -> anyhow::Result<(StatusCode, String)> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Ok((
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// The id of `name`'s live session, as an admin lists them.
async fn session_id(server: &TestServer, name: &str) -> anyhow::Result<String> {
    let list = sessions(server).await?;
    list.iter()
        .find(|s| s["name"] == name && s["live"] == true)
        .and_then(|s| s["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("{name}'s live session in {list:?}"))
}

/// The sessions as an admin lists them (`GET /api/sessions`).
async fn sessions(server: &TestServer) -> anyhow::Result<Vec<Value>> {
    let list: Value = server
        .request(Method::GET, "/api/sessions", Some(&server.admin_token))
        .send()
        .await?
        .json()
        .await?;
    list["sessions"].as_array().cloned().context("a list")
}

/// Session `id` as an admin lists it, if it is listed.
async fn session_row(server: &TestServer, id: &str) -> Option<Value> {
    sessions(server)
        .await
        .ok()?
        .into_iter()
        .find(|s| s["id"] == id)
}

/// The audit log's entries of `action`, newest first, as an admin reads them.
async fn audited(server: &TestServer, action: &str) -> anyhow::Result<Vec<Value>> {
    let page: Value = server
        .request(
            Method::GET,
            &format!("/api/audit?action={action}"),
            Some(&server.admin_token),
        )
        .send()
        .await?
        .json()
        .await?;
    Ok(page["entries"].as_array().context("entries")?.clone())
}

/// A `/sync` connection of the client's session, through a ticket asked for with the cookie.
async fn session_sync(
    client: &SsoClient,
    server: &TestServer,
    incident: &str,
) -> anyhow::Result<SyncClient> {
    let ticket: Value = client
        .request(server, Method::POST, "/api/sync-ticket")
        .send()
        .await?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().context("a ticket")?;
    let mut sync = SyncClient::connect(&server.ticket_url(ticket)).await?;
    sync.open(incident).await?;
    Ok(sync)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_map_to_scopes_and_the_name_comes_from_the_claim() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|_| {}).await?;
    let providers: Value = server
        .request(Method::GET, "/api/auth/providers", None)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(providers["oidc"]["name"] == "Test IdP", "{providers}");
    for (user, scope) in [("alice", "admin"), ("bob", "write"), ("carol", "read")] {
        let client = SsoClient::new();
        match client.sign_in(&server, user).await? {
            SignIn::SignedIn { landing, .. } => {
                anyhow::ensure!(landing == "/", "{user} lands on {landing}")
            }
            refused => anyhow::bail!("{user}: {refused:?}"),
        }
        let (status, who) = client.whoami(&server).await?;
        anyhow::ensure!(status == StatusCode::OK, "{user}: {status}");
        anyhow::ensure!(
            who == json!({"name": user, "scope": scope, "kind": "session"}),
            "{user}: {who}"
        );
    }
    // bob writes as bob: his name is in the document's record, as a token's would be.
    let bob = SsoClient::new();
    bob.signed_in(&server, "bob").await?;
    let declared = bob
        .request(&server, Method::POST, "/api/incidents")
        .json(&json!({"title": "Signed in"}))
        .send()
        .await?;
    anyhow::ensure!(
        declared.status() == StatusCode::CREATED,
        "{}",
        declared.status()
    );
    let id = declared.json::<Value>().await?["id"]
        .as_str()
        .context("an id")?
        .to_owned();
    let incident = server.incident_json(&server.admin_token, &id).await;
    anyhow::ensure!(
        incident.to_string().contains("\"bob\""),
        "bob is named: {incident}"
    );
    // Signed-in writers may take roles, so the page suggests them for handoffs; carol only reads.
    let people: Value = server
        .request(Method::GET, "/api/people", Some(&server.admin_token))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        people["people"] == json!(["admin", "alice", "bob"]),
        "{people}"
    );
    // dave's preferred_username ("dave smith") cannot be a name: refused, with a page saying why.
    match SsoClient::new().sign_in(&server, "dave").await? {
        SignIn::Refused { status, code, page } => {
            anyhow::ensure!(
                status == StatusCode::FORBIDDEN && code == "name_claim",
                "{status} {code}"
            );
            anyhow::ensure!(page.contains("preferred_username"), "{page}");
        }
        signed => anyhow::bail!("dave signed in: {signed:?}"),
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_who_match_no_rule_are_refused_when_the_default_says_so() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|s| s.default_scope = "refused".into()).await?;
    let carol = SsoClient::new();
    match carol.sign_in(&server, "carol").await? {
        SignIn::Refused { status, code, page } => {
            anyhow::ensure!(
                status == StatusCode::FORBIDDEN && code == "no_access",
                "{status} {code}"
            );
            anyhow::ensure!(page.contains("not allowed"), "{page}");
        }
        signed => anyhow::bail!("carol signed in: {signed:?}"),
    }
    anyhow::ensure!(carol.session_cookie(&server).is_none(), "no session cookie");
    anyhow::ensure!(carol.whoami(&server).await?.0 == StatusCode::UNAUTHORIZED);
    let refused = audited(&server, "signin.refused").await?;
    anyhow::ensure!(
        refused.len() == 1
            && refused[0]["actor"] == "carol"
            && refused[0]["detail"]["reason"] == "no_access",
        "{refused:?}"
    );
    // A matching rule still wins.
    let bob = SsoClient::new();
    bob.signed_in(&server, "bob").await?;
    anyhow::ensure!(bob.whoami(&server).await?.1["scope"] == "write");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_tampered_and_replayed_id_tokens_are_refused() -> anyhow::Result<()> {
    let (provider, server) = server_with(|_| {}).await?;
    for mode in ["wrong-audience", "expired", "tampered", "wrong-nonce"] {
        provider.next_id_token(mode).await?;
        let client = SsoClient::new();
        match client.sign_in(&server, "bob").await? {
            SignIn::Refused { status, code, .. } => {
                anyhow::ensure!(
                    status == StatusCode::FORBIDDEN && code == "id_token",
                    "{mode}: {status} {code}"
                );
            }
            signed => anyhow::bail!("{mode}: signed in: {signed:?}"),
        }
        anyhow::ensure!(
            client.session_cookie(&server).is_none(),
            "{mode}: no cookie"
        );
    }
    // alice's ID token from her sign-in, served again to carol's: its nonce is alice's, so it is refused.
    SsoClient::new().signed_in(&server, "alice").await?;
    provider.next_id_token("replay").await?;
    let carol = SsoClient::new();
    match carol.sign_in(&server, "carol").await? {
        SignIn::Refused { status, code, page } => {
            anyhow::ensure!(
                status == StatusCode::FORBIDDEN && code == "id_token",
                "{status} {code}"
            );
            anyhow::ensure!(page.to_lowercase().contains("nonce"), "{page}");
        }
        signed => anyhow::bail!("a replayed ID token signed in: {signed:?}"),
    }
    anyhow::ensure!(carol.whoami(&server).await?.0 == StatusCode::UNAUTHORIZED);
    // Every refusal was counted, and no session was opened by them.
    anyhow::ensure!(server.metric("commandpost_sso_refusals_total").await? == 5);
    anyhow::ensure!(server.metric("commandpost_sso_sign_ins_total").await? == 1);
    let refused = audited(&server, "signin.refused").await?;
    anyhow::ensure!(
        refused.len() == 5
            && refused
                .iter()
                .all(|e| e["detail"]["reason"] == "id_token" && e["actor"] == "anonymous"),
        "{refused:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_state_is_refused() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|_| {}).await?;
    let callback = SsoClient::new().signed_in(&server, "bob").await?;
    let state = reqwest::Url::parse(&callback)?
        .query_pairs()
        .find(|(key, _)| key == "state")
        .map(|(_, value)| value.into_owned())
        .context("a state")?;
    // The same callback again, even with the browser's state cookie: the sign-in was taken once.
    let replay = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let response = replay
        .get(&callback)
        .header("cookie", format!("{}={state}", server::sso::STATE_COOKIE))
        .send()
        .await?;
    let status = response.status();
    let page = response.text().await?;
    anyhow::ensure!(status == StatusCode::BAD_REQUEST, "{status}");
    anyhow::ensure!(page.contains("data-code=\"state\""), "{page}");
    anyhow::ensure!(page.contains("already used"), "{page}");
    // A sign-in finished by another browser (no state cookie) is refused too, and spent.
    let started = SsoClient::new();
    let login = started
        .http()
        .get(server.url("/auth/oidc/login"))
        .send()
        .await?;
    anyhow::ensure!(
        login.status() == StatusCode::SEE_OTHER,
        "{}",
        login.status()
    );
    let provider_url = login.headers()["location"].to_str()?.to_owned();
    let state = reqwest::Url::parse(&provider_url)?
        .query_pairs()
        .find(|(key, _)| key == "state")
        .map(|(_, value)| value.into_owned())
        .context("a state")?;
    let foreign = replay
        .get(server.url(&format!("/auth/oidc/callback?code=stolen&state={state}")))
        .send()
        .await?;
    anyhow::ensure!(
        foreign.status() == StatusCode::BAD_REQUEST,
        "{}",
        foreign.status()
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_and_at_their_lifetime_however_used() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|s| {
        s.session_idle = Duration::from_secs(2);
        s.session_lifetime = Duration::from_secs(5);
    })
    .await?;
    // Idle: bob signs in and does nothing; an admin's list (which does not touch it) sees it end.
    let bob = SsoClient::new();
    // Taken before the sign-in, so it is no later than the session's last use: a lower bound of its idle time.
    let signed_in = Instant::now();
    bob.signed_in(&server, "bob").await?;
    let id = session_id(&server, "bob").await?;
    eventually("bob's idle session to end", PATIENCE, || async {
        let row = session_row(&server, &id).await?;
        (row["live"] == false).then_some(())
    })
    .await?;
    anyhow::ensure!(
        signed_in.elapsed() >= Duration::from_secs(2),
        "ended after {:?}",
        signed_in.elapsed()
    );
    anyhow::ensure!(bob.whoami(&server).await?.0 == StatusCode::UNAUTHORIZED);
    // Lifetime: carol uses her session all the time, which renews it, until its absolute end.
    let carol = SsoClient::new();
    let signed_in = Instant::now();
    carol.signed_in(&server, "carol").await?;
    eventually(
        "carol's session to reach its lifetime",
        PATIENCE,
        || async {
            let (status, _) = carol.whoami(&server).await.ok()?;
            (status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await?;
    let lasted = signed_in.elapsed();
    anyhow::ensure!(
        lasted >= Duration::from_secs(4) && lasted < Duration::from_secs(12),
        "carol's session lasted {lasted:?} (lifetime 5 s, idle 2 s)"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_ends_a_session_and_its_live_sync_closes_within_a_second() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|_| {}).await?;
    let alice = SsoClient::new();
    alice.signed_in(&server, "alice").await?;
    let bob = SsoClient::new();
    bob.signed_in(&server, "bob").await?;
    let incident = server.declare(&server.admin_token, "Sessions").await.id;
    let mut sync = session_sync(&bob, &server, &incident).await?;
    // alice, an admin by her group, lists the sessions with her cookie and ends bob's.
    let sessions: Value = alice
        .request(&server, Method::GET, "/api/sessions")
        .send()
        .await?
        .json()
        .await?;
    let row = sessions["sessions"]
        .as_array()
        .context("a list")?
        .iter()
        .find(|s| s["name"] == "bob")
        .context("bob's session")?
        .clone();
    anyhow::ensure!(
        row["scope"] == "write"
            && row["from"]
                .as_str()
                .is_some_and(|f| f.contains("127.0.0.1")),
        "{row}"
    );
    let id = row["id"].as_str().context("an id")?;
    let started = Instant::now();
    let revoked = alice
        .request(&server, Method::DELETE, &format!("/api/sessions/{id}"))
        .send()
        .await?;
    anyhow::ensure!(
        revoked.status() == StatusCode::NO_CONTENT,
        "{}",
        revoked.status()
    );
    let message = sync.expect_error_then_close().await?;
    let closed = started.elapsed();
    anyhow::ensure!(message.contains("revoked"), "{message}");
    anyhow::ensure!(closed < Duration::from_secs(1), "closed after {closed:?}");
    println!(
        "a revoked session's /sync closed after {} ms",
        closed.as_millis()
    );
    anyhow::ensure!(bob.whoami(&server).await?.0 == StatusCode::UNAUTHORIZED);
    let revocations = audited(&server, "session.revoked").await?;
    anyhow::ensure!(
        revocations.len() == 1
            && revocations[0]["actor"] == "alice"
            && revocations[0]["target"] == id
            && revocations[0]["detail"]["name"] == "bob",
        "{revocations:?}"
    );
    let created = audited(&server, "session.created").await?;
    anyhow::ensure!(
        created
            .iter()
            .any(|e| e["actor"] == "bob" && e["detail"]["scope"] == "write"),
        "{created:?}"
    );
    // Ending it again, or an unknown one, is a 404; a write session may not list or end sessions.
    let again = alice
        .request(&server, Method::DELETE, &format!("/api/sessions/{id}"))
        .send()
        .await?;
    anyhow::ensure!(
        again.status() == StatusCode::NOT_FOUND,
        "{}",
        again.status()
    );
    let carol = SsoClient::new();
    carol.signed_in(&server, "carol").await?;
    let forbidden = carol
        .request(&server, Method::GET, "/api/sessions")
        .send()
        .await?;
    anyhow::ensure!(
        forbidden.status() == StatusCode::FORBIDDEN,
        "{}",
        forbidden.status()
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_and_clears_the_cookie() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|_| {}).await?;
    let bob = SsoClient::new();
    bob.signed_in(&server, "bob").await?;
    let cookie = bob.session_cookie(&server).context("a session cookie")?;
    let incident = server.declare(&server.admin_token, "Sign-out").await.id;
    let mut sync = session_sync(&bob, &server, &incident).await?;
    let response = bob
        .request(&server, Method::POST, "/api/session/signout")
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::NO_CONTENT,
        "{}",
        response.status()
    );
    let cleared = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("commandpost_session=;") && v.contains("Max-Age=0"));
    anyhow::ensure!(cleared, "the cookie is cleared");
    anyhow::ensure!(bob.session_cookie(&server).is_none(), "the jar dropped it");
    sync.expect_error_then_close().await?;
    // The old secret opens nothing, even sent by hand.
    let old = server
        .http()
        .get(server.url("/api/session"))
        .header(
            "cookie",
            format!("{}={cookie}", server::sso::SESSION_COOKIE),
        )
        .send()
        .await?;
    anyhow::ensure!(old.status() == StatusCode::UNAUTHORIZED, "{}", old.status());
    let signed_out = audited(&server, "session.signed_out").await?;
    anyhow::ensure!(
        signed_out.len() == 1 && signed_out[0]["actor"] == "bob",
        "{signed_out:?}"
    );
    // A token is not signed out.
    let token = server
        .request(
            Method::POST,
            "/api/session/signout",
            Some(&server.admin_token),
        )
        .send()
        .await?;
    anyhow::ensure!(
        refusal(token).await? == (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable".into())
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_with_the_cookie_are_refused() -> anyhow::Result<()> {
    let (_provider, server) = server_with(|_| {}).await?;
    let bob = SsoClient::new();
    bob.signed_in(&server, "bob").await?;
    let declare = json!({"title": "Cross-site"});
    let cases: [(&str, Option<(&str, &str)>); 4] = [
        (
            "another site's Origin",
            Some(("origin", "http://evil.example")),
        ),
        ("a null Origin", Some(("origin", "null"))),
        ("a cross-site fetch", Some(("sec-fetch-site", "cross-site"))),
        ("no Origin at all", None),
    ];
    for (what, header) in cases {
        let mut request = bob.http().post(server.url("/api/incidents")).json(&declare);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let answer = refusal(request.send().await?).await?;
        anyhow::ensure!(
            answer == (StatusCode::FORBIDDEN, "cross_origin".into()),
            "{what}: {answer:?}"
        );
    }
    anyhow::ensure!(
        server
            .metric("commandpost_cross_origin_rejections_total")
            .await?
            == 4
    );
    // Reads are not state-changing; the server's own pages may write.
    anyhow::ensure!(bob.whoami(&server).await?.0 == StatusCode::OK);
    let same = bob
        .request(&server, Method::POST, "/api/incidents")
        .json(&declare)
        .send()
        .await?;
    anyhow::ensure!(same.status() == StatusCode::CREATED, "{}", same.status());
    let fetch_metadata = bob
        .http()
        .post(server.url("/api/sync-ticket"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await?;
    anyhow::ensure!(
        fetch_metadata.status() == StatusCode::OK,
        "{}",
        fetch_metadata.status()
    );
    // A bearer token is never judged by its Origin: browsers do not attach it by themselves.
    let token = server
        .request(Method::POST, "/api/incidents", Some(&server.admin_token))
        .header("origin", "http://evil.example")
        .json(&declare)
        .send()
        .await?;
    anyhow::ensure!(token.status() == StatusCode::CREATED, "{}", token.status());
    // The WebSocket upgrade with the cookie: another site's page is refused, the server's own is served.
    let cookie = bob.session_cookie(&server).context("a session cookie")?;
    for (origin, allowed) in [
        ("http://evil.example".to_owned(), false),
        (format!("http://{}", server.addr), true),
    ] {
        let mut request = format!("ws://{}/sync", server.addr).into_client_request()?;
        request.headers_mut().insert(
            "cookie",
            format!("{}={cookie}", server::sso::SESSION_COOKIE).parse()?,
        );
        request.headers_mut().insert("origin", origin.parse()?);
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut socket, _)) => {
                anyhow::ensure!(allowed, "{origin} opened /sync");
                let _ = socket.close(None).await;
                let _ = socket.next().await;
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                anyhow::ensure!(
                    !allowed && response.status() == 403,
                    "{origin}: {}",
                    response.status()
                );
            }
            Err(other) => anyhow::bail!("{origin}: {other}"),
        }
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_postgresql_share_sessions() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let (first, second) = (listener().await?, listener().await?);
    let (addr1, addr2) = (first.local_addr()?, second.local_addr()?);
    let provider = OidcProvider::start(&[addr1]).await?;
    // One public address, as behind a load balancer: both nodes name the first's callback.
    let settings = provider.settings(addr1);
    let url = db.url();
    let node1 = TestServer::start_on(
        first,
        |config| {
            config.database_url = Some(url.clone());
            config.oidc = Some(settings.clone());
        },
        None,
    )
    .await;
    let node2 = TestServer::start_on(
        second,
        |config| {
            config.database_url = Some(url.clone());
            config.oidc = Some(settings.clone());
        },
        Some(&node1.admin_token),
    )
    .await;
    anyhow::ensure!(node2.addr == addr2);
    // Signed in through node 1; the cookie (per host, not port) reaches node 2, which knows the session.
    let bob = SsoClient::new();
    bob.signed_in(&node1, "bob").await?;
    let (status, who) = bob.whoami(&node2).await?;
    anyhow::ensure!(
        status == StatusCode::OK && who["name"] == "bob" && who["kind"] == "session",
        "{status} {who}"
    );
    // A live /sync on node 2 closes within a second when an admin ends the session on node 1 (node 2's sweeper).
    let incident = node1.declare(&node1.admin_token, "Two nodes").await.id;
    let mut sync = session_sync(&bob, &node2, &incident).await?;
    let id = session_id(&node1, "bob").await?;
    let started = Instant::now();
    let revoked = node1
        .request(
            Method::DELETE,
            &format!("/api/sessions/{id}"),
            Some(&node1.admin_token),
        )
        .send()
        .await?;
    anyhow::ensure!(
        revoked.status() == StatusCode::NO_CONTENT,
        "{}",
        revoked.status()
    );
    sync.expect_error_then_close().await?;
    let closed = started.elapsed();
    anyhow::ensure!(
        closed < Duration::from_secs(1),
        "node 2 closed it after {closed:?}"
    );
    println!(
        "a session ended on node 1 closed its /sync on node 2 after {} ms",
        closed.as_millis()
    );
    anyhow::ensure!(bob.whoami(&node2).await?.0 == StatusCode::UNAUTHORIZED);
    // A sign-in started on node 2 is finished by node 1 (the provider sends everyone to the public callback): the
    // sign-in in progress is in the shared store.
    let alice = SsoClient::new();
    alice.signed_in(&node2, "alice").await?;
    anyhow::ensure!(alice.whoami(&node1).await?.1["scope"] == "admin");
    // Signing out on node 2 ends a session node 1 opened.
    let carol = SsoClient::new();
    carol.signed_in(&node1, "carol").await?;
    let out = carol
        .request(&node2, Method::POST, "/api/session/signout")
        .send()
        .await?;
    anyhow::ensure!(out.status() == StatusCode::NO_CONTENT, "{}", out.status());
    anyhow::ensure!(carol.whoami(&node1).await?.0 == StatusCode::UNAUTHORIZED);
    node2.stop().await;
    node1.stop().await;
    Ok(())
}

/// How long the browser test waits for the page.
const UI_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_the_provider_in_a_browser_and_signs_out() -> anyhow::Result<()> {
    let (provider, server) = server_with(|_| {}).await?;
    let browser = Browser::open("sso-sign-in", WindowSize::DESKTOP).await?;
    browser.goto(&server.url("/")).await?;
    // The sign-in page offers the provider beside the token form.
    browser.wait_for("#sso-sign-in", UI_TIMEOUT).await?;
    let label = browser.text("#sso-sign-in").await?.unwrap_or_default();
    anyhow::ensure!(label == "Sign in with Test IdP", "{label}");
    anyhow::ensure!(
        browser.find("input[name=token]").await?.is_some(),
        "token sign-in stays"
    );
    let violations = browser.axe_violations().await?;
    anyhow::ensure!(
        violations.is_empty(),
        "the sign-in page is accessible: {violations:?}"
    );
    browser.click("#sso-sign-in").await?;
    // The provider's own login page, on its own origin.
    browser.wait_for("input[name=login]", UI_TIMEOUT).await?;
    anyhow::ensure!(
        browser.url().await?.starts_with(&provider.issuer),
        "at the provider"
    );
    browser.type_text("input[name=login]", "alice").await?;
    browser
        .type_text("input[name=password]", "any password")
        .await?;
    browser.click("button[type=submit]").await?;
    // Back in the app, signed in as alice with her group's scope, and no token kept by the page.
    browser
        .wait_until("the header to name alice (admin)", UI_TIMEOUT, || async {
            let who = browser.text("#who-name").await?.unwrap_or_default();
            let url = browser.url().await?;
            Ok((who == "alice (admin)" && url.ends_with("#/")).then_some(()))
        })
        .await?;
    let stored = browser
        .execute(
            "return [localStorage.getItem('commandpost.token'), document.cookie];",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        stored == json!([null, ""]),
        "no token in localStorage and no cookie readable by scripts: {stored}"
    );
    // The page offers what her scope allows.
    browser
        .wait_until("the Declare link to show", UI_TIMEOUT, || async {
            let hidden = browser
                .execute(
                    "return document.querySelector(\"a[href='#/declare']\").hidden;",
                    vec![],
                )
                .await?;
            Ok((hidden == json!(false)).then_some(()))
        })
        .await?;
    let id = session_id(&server, "alice").await?;
    // As an admin she sees the sessions and ends bob's, whose own requests then fail.
    let bob = SsoClient::new();
    bob.signed_in(&server, "bob").await?;
    let bobs = session_id(&server, "bob").await?;
    browser.goto(&server.url("/#/sessions")).await?;
    let end = format!("button[data-end=\"{bobs}\"]");
    browser.wait_for(&end, UI_TIMEOUT).await?;
    let rows = browser.texts("table.sessions tbody tr").await?;
    anyhow::ensure!(
        rows.len() == 2
            && rows
                .iter()
                .any(|r| r.starts_with("alice") && r.contains("admin"))
            && rows
                .iter()
                .any(|r| r.starts_with("bob") && r.contains("write")),
        "both sessions listed with their scopes: {rows:?}"
    );
    let violations = browser.axe_violations().await?;
    anyhow::ensure!(
        violations.is_empty(),
        "the sessions page is accessible: {violations:?}"
    );
    browser
        .execute("window.confirm = () => true;", vec![])
        .await?;
    browser.click(&end).await?;
    browser
        .wait_until("bob's session to show as ended", UI_TIMEOUT, || async {
            let gone = browser.find(&end).await?.is_none();
            let ended = browser
                .attr(&format!("tr[data-session=\"{bobs}\"]"), "class")
                .await?;
            Ok((gone && ended.as_deref() == Some("ended")).then_some(()))
        })
        .await?;
    let (status, _) = bob.whoami(&server).await?;
    anyhow::ensure!(
        status == StatusCode::UNAUTHORIZED,
        "bob's session ended: {status}"
    );
    // Signing out ends the session on the server and returns to the sign-in page.
    browser.click("#sign-out").await?;
    browser.wait_for("#sso-sign-in", UI_TIMEOUT).await?;
    eventually("alice's session to end on the server", PATIENCE, || async {
        let row = session_row(&server, &id).await?;
        (row["live"] == false && row["revokedAt"].is_string()).then_some(())
    })
    .await?;
    let whoami = browser
        .execute(
            "return fetch('/api/session').then((r) => r.status);",
            vec![],
        )
        .await?;
    anyhow::ensure!(whoami == json!(401), "signed out: {whoami}");
    browser.close().await?;
    server.stop().await;
    Ok(())
}
