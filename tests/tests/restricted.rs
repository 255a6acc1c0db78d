//! Restricted incidents end to end: the `security` template declares restricted (and a declaration may say
//! otherwise); only the commander or an admin changes who may see an incident, by typed operation (others get 403
//! `command_rule`) or raw `/sync` change (put back); people removed from the members, losing the role that made them
//! one, or outside an incident that becomes restricted, lose their live connections within a second; the audit log
//! records each change of access whichever way it arrived; webhooks hear nothing of restricted incidents
//! unless an endpoint opts in; and on two PostgreSQL nodes a restriction made through one hides the incident on the
//! other at once and closes that node's non-member connections within a second. (The authorization table of every
//! route is in `auth.rs`; the browser in `browser_restricted.rs`.)

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use automerge::ReadDoc;
use automerge::transaction::Transactable;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::webhooks::{DeliverySettings, Endpoint, Format};
use tests::{Receiver, SyncClient, TestDatabase, TestServer, eventually};

/// The bound the issue sets on closing the connections of people no longer allowed.
const WITHIN: Duration = Duration::from_secs(1);

/// Declares `title` from `template` as `token`, with `restricted` if given; returns the id.
async fn declare(
    server: &TestServer,
    token: &str,
    title: &str,
    template: &str,
    restricted: Option<bool>,
) -> String {
    let mut body = json!({"title": title, "template": template});
    if let Some(restricted) = restricted {
        body["restricted"] = json!(restricted);
    }
    let (status, answer) = server
        .call(Method::POST, "/api/incidents", Some(token), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "declaring {title}: {answer}");
    answer["id"].as_str().expect("an id").to_owned()
}

/// The status `token` gets reading the incident.
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

/// Applies one operation as `token`, which must succeed.
async fn op(server: &TestServer, token: &str, id: &str, op: Value) {
    let response = server.operations(token, id, json!([op])).await;
    let status = response.status();
    assert!(
        status.is_success(),
        "{op}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// A server, alice (write) who declared incident `id` and added bob (write) as a member, and carol (read), who is
/// none.
struct Cast {
    server: TestServer,
    alice: String,
    bob: String,
    carol: String,
    id: String,
}

impl Cast {
    async fn declare(title: &str, template: &str) -> Cast {
        let server = TestServer::start().await;
        let alice = server.token("alice", "write").await;
        let bob = server.token("bob", "write").await;
        let carol = server.token("carol", "read").await;
        let id = declare(&server, &alice, title, template, None).await;
        op(
            &server,
            &alice,
            &id,
            json!({"op": "addMember", "person": "bob"}),
        )
        .await;
        Cast {
            server,
            alice,
            bob,
            carol,
            id,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_template_declares_restricted_unless_the_declaration_says_otherwise()
-> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let carol = server.token("carol", "write").await;
    let secret = declare(&server, &alice, "Leaked key", "security", None).await;
    let opened = declare(&server, &alice, "Phishing test", "security", Some(false)).await;
    let chosen = declare(&server, &alice, "HR matter", "incident", Some(true)).await;
    let ordinary = declare(&server, &alice, "Checkout errors", "incident", None).await;
    for (id, hidden) in [
        (&secret, true),
        (&opened, false),
        (&chosen, true),
        (&ordinary, false),
    ] {
        let want = if hidden {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        ensure!(
            read_status(&server, &carol, id).await == want,
            "{id} for carol"
        );
        ensure!(
            read_status(&server, &alice, id).await == StatusCode::OK,
            "{id} for alice"
        );
        ensure!(
            read_status(&server, &server.admin_token, id).await == StatusCode::OK,
            "{id} for the admin"
        );
    }
    // The list leaves the restricted ones out for carol only.
    let (_, list) = server
        .call(Method::GET, "/api/incidents", Some(&carol), None)
        .await;
    let ids: Vec<&str> = list["incidents"]
        .as_array()
        .context("incidents")?
        .iter()
        .filter_map(|row| row["id"].as_str())
        .collect();
    ensure!(
        ids == [ordinary.as_str(), opened.as_str()],
        "carol lists {ids:?}"
    );
    // The declaration's choice is recorded; the template's default needs no entry.
    ensure!(
        server
            .markdown(&alice, &opened)
            .await
            .contains("alice opened the incident to everyone.")
    );
    // Adding carol lets her in, removing her shuts her out again.
    op(
        &server,
        &alice,
        &secret,
        json!({"op": "addMember", "person": "carol"}),
    )
    .await;
    ensure!(read_status(&server, &carol, &secret).await == StatusCode::OK);
    op(
        &server,
        &alice,
        &secret,
        json!({"op": "removeMember", "person": "carol"}),
    )
    .await;
    ensure!(read_status(&server, &carol, &secret).await == StatusCode::NOT_FOUND);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_commander_or_an_admin_changes_who_may_see_an_incident() -> anyhow::Result<()> {
    let Cast {
        server,
        alice,
        bob,
        carol,
        id,
    } = Cast::declare("Leaked key", "security").await;

    // Bob is a member, not the commander: his typed operations are refused by the command rules.
    for attempt in [
        json!({"op": "setRestricted", "restricted": false}),
        json!({"op": "addMember", "person": "carol"}),
        json!({"op": "removeMember", "person": "bob"}),
    ] {
        let response = server.operations(&bob, &id, json!([attempt])).await;
        ensure!(response.status() == StatusCode::FORBIDDEN, "{attempt}");
        let body: Value = response.json().await?;
        ensure!(body["error"]["code"] == "command_rule", "{body}");
    }
    // An admin may, as with overrides.
    op(
        &server,
        &server.admin_token,
        &id,
        json!({"op": "addMember", "person": "carol"}),
    )
    .await;
    ensure!(read_status(&server, &carol, &id).await == StatusCode::OK);
    op(
        &server,
        &server.admin_token,
        &id,
        json!({"op": "removeMember", "person": "carol"}),
    )
    .await;

    // Bob's raw change over /sync, opening the incident and adding carol, is put back.
    let mut client = SyncClient::connect(&server.ws_url(&bob)).await?;
    client.set_author("bob");
    client.open(&id).await?;
    client.raw_change(|doc| {
        let (_, access) = doc
            .get(automerge::ROOT, "access")?
            .expect("a restricted incident has access");
        doc.put(&access, "restricted", false)?;
        let (_, members) = doc.get(&access, "members")?.expect("members");
        let len = doc.length(&members);
        doc.insert(&members, len, "carol")
    })?;
    client
        .sync_until_acknowledged(Duration::from_secs(10))
        .await?;
    client
        .sync_until(
            |c| {
                let (restricted, added) = access_of(c.incident().doc());
                restricted && !added.contains(&"carol".to_owned())
            },
            Duration::from_secs(10),
        )
        .await
        .context("the revert reaching bob")?;
    ensure!(read_status(&server, &carol, &id).await == StatusCode::NOT_FOUND);
    let view = server.incident_json(&alice, &id).await;
    let audit = view["audit"].as_array().context("audit")?;
    ensure!(
        audit
            .iter()
            .any(|a| a["rule"] == "access" && a["by"] == "bob"),
        "{audit:?}"
    );
    server.stop().await;
    Ok(())
}

/// The restriction and the added members as a client's copy holds them (root key `access`).
fn access_of(doc: &automerge::AutoCommit) -> (bool, Vec<String>) {
    let Ok(Some((_, access))) = doc.get(automerge::ROOT, "access") else {
        return (false, Vec::new());
    };
    let restricted = matches!(
        doc.get(&access, "restricted"),
        Ok(Some((automerge::Value::Scalar(s), _))) if s.as_bool() == Some(true)
    );
    let added = match doc.get(&access, "members") {
        Ok(Some((_, members))) => (0..doc.length(&members))
            .filter_map(|i| match doc.get(&members, i) {
                Ok(Some((automerge::Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    (restricted, added)
}

/// Connects `token` to the incident over `/sync`.
async fn connected(server: &TestServer, token: &str, id: &str) -> anyhow::Result<SyncClient> {
    let mut client = SyncClient::connect(&server.ws_url(token)).await?;
    client.open(id).await?;
    Ok(client)
}

/// Waits for the `error` ("unavailable") and the close on `client` (`what`), which must come within [`WITHIN`] of
/// `since`; prints how long it took, the figure of the note.
async fn closed_within(mut client: SyncClient, since: Instant, what: &str) -> anyhow::Result<()> {
    let message = client.expect_error_then_close().await?;
    ensure!(message.contains("unavailable"), "{message}");
    let took = since.elapsed();
    ensure!(took < WITHIN, "{what}: closed {took:?} after the change");
    println!("{what}: closed within {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_no_longer_allowed_are_disconnected_within_a_second() -> anyhow::Result<()> {
    let Cast {
        server,
        alice,
        bob,
        carol,
        id,
    } = Cast::declare("Checkout errors", "incident").await;
    let mut commander = connected(&server, &alice, &id).await?;
    let member = connected(&server, &bob, &id).await?;
    let outsider = connected(&server, &carol, &id).await?;

    // Restricting the open incident closes carol's connection; bob, a member, stays.
    let started = Instant::now();
    op(
        &server,
        &alice,
        &id,
        json!({"op": "setRestricted", "restricted": true}),
    )
    .await;
    closed_within(
        outsider,
        started,
        "carol's connection, after the restriction",
    )
    .await?;

    // Removing bob closes his.
    let started = Instant::now();
    op(
        &server,
        &alice,
        &id,
        json!({"op": "removeMember", "person": "bob"}),
    )
    .await;
    closed_within(member, started, "bob's connection, after his removal").await?;

    // A role makes its holder a member; losing it (not added otherwise) shuts them out.
    let dave = server.token("dave", "write").await;
    let role =
        |person: Option<&str>| json!({"op": "assignRole", "role": "operations", "person": person});
    op(&server, &alice, &id, role(Some("dave"))).await;
    let holder = connected(&server, &dave, &id).await?;
    let started = Instant::now();
    op(&server, &alice, &id, role(None)).await;
    closed_within(holder, started, "dave's connection, after he lost his role").await?;
    ensure!(read_status(&server, &dave, &id).await == StatusCode::NOT_FOUND);

    // The commander carries on, and bob cannot come back.
    commander.splice("summary", 0, 0, "still here ").await?;
    let mut again = SyncClient::connect(&server.ws_url(&bob)).await?;
    let refused = again.open(&id).await;
    ensure!(
        format!("{:#}", refused.as_ref().err().context("bob reopening")?)
            .contains("doc-unavailable"),
        "{refused:?}"
    );
    ensure!(
        server
            .metric("commandpost_access_disconnects_total")
            .await?
            == 3
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_hear_of_restricted_incidents_only_where_an_endpoint_opts_in() -> anyhow::Result<()>
{
    let everything = Receiver::start().await;
    let public = Receiver::start().await;
    let endpoint = |name: &str, url: String, restricted: bool| Endpoint {
        name: name.into(),
        url,
        secret: None,
        format: Format::Json,
        events: Some(vec!["declared".into(), "statusChanged".into()]),
        drills: true,
        restricted,
    };
    let (everything_url, public_url) = (everything.url("/all"), public.url("/public"));
    let server = TestServer::start_with(|config| {
        config.webhooks = vec![
            endpoint("everything", everything_url, true),
            endpoint("public", public_url, false),
        ];
        config.webhook_delivery = DeliverySettings {
            retry_initial_ms: 100,
            ..DeliverySettings::default()
        };
    })
    .await;
    let alice = server.token("alice", "write").await;
    let secret = declare(&server, &alice, "Leaked key", "security", None).await;
    let open = declare(&server, &alice, "Checkout errors", "incident", None).await;
    for id in [&secret, &open] {
        op(
            &server,
            &alice,
            id,
            json!({"op": "setStatus", "status": "active"}),
        )
        .await;
    }
    let about = |deliveries: Vec<tests::Delivery>| -> Vec<String> {
        deliveries
            .iter()
            .map(|d| {
                let event = d.json();
                format!(
                    "{} {}",
                    event["incident"]["id"].as_str().unwrap_or_default(),
                    event["event"]["type"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    let heard = eventually(
        "four events at the opted-in endpoint",
        Duration::from_secs(20),
        || {
            let got = about(everything.accepted());
            async move { (got.len() == 4).then_some(got) }
        },
    )
    .await?;
    ensure!(
        heard.iter().filter(|e| e.starts_with(&secret)).count() == 2,
        "{heard:?}"
    );
    let public_heard = eventually("two events at the other", Duration::from_secs(20), || {
        let got = about(public.accepted());
        async move { (got.len() == 2).then_some(got) }
    })
    .await?;
    ensure!(
        public_heard.iter().all(|e| e.starts_with(&open)),
        "{public_heard:?}"
    );
    // Nothing about the restricted incident was even queued for it (queued with the change, in one transaction).
    let (_, log) = server
        .call(
            Method::GET,
            "/api/webhooks/public/deliveries",
            Some(&server.admin_token),
            None,
        )
        .await;
    ensure!(!log.to_string().contains(&secret), "{log}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restriction_through_one_postgres_node_counts_on_the_other_at_once() -> anyhow::Result<()>
{
    let db = TestDatabase::create();
    let config = format!("database-url = \"{}\"\n", db.url());
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    let carol = node1.token("carol", "write").await;
    let id = declare(&node1, &alice, "Checkout errors", "incident", None).await;
    let outsider = connected(&node2, &carol, &id).await?;
    ensure!(read_status(&node2, &carol, &id).await == StatusCode::OK);

    let started = Instant::now();
    op(
        &node1,
        &alice,
        &id,
        json!({"op": "setRestricted", "restricted": true}),
    )
    .await;
    // The index row committed with the change: node 2 answers from it at once, no waiting.
    ensure!(read_status(&node2, &carol, &id).await == StatusCode::NOT_FOUND);
    let (_, list) = node2
        .call(Method::GET, "/api/incidents", Some(&carol), None)
        .await;
    ensure!(!list.to_string().contains(&id), "{list}");
    closed_within(
        outsider,
        started,
        "carol's connection to node 2, after the restriction",
    )
    .await?;

    // Adding her through node 2 lets her in through node 1.
    op(
        &node2,
        &alice,
        &id,
        json!({"op": "addMember", "person": "carol"}),
    )
    .await;
    ensure!(read_status(&node1, &carol, &id).await == StatusCode::OK);
    let member = connected(&node1, &carol, &id).await?;
    let started = Instant::now();
    op(
        &node2,
        &alice,
        &id,
        json!({"op": "removeMember", "person": "carol"}),
    )
    .await;
    closed_within(
        member,
        started,
        "carol's connection to node 1, after her removal",
    )
    .await?;
    node2.stop().await;
    node1.stop().await;
    Ok(())
}

/// The audit log's entries about incident `id`, oldest first, as `actor action detail`.
async fn audited(server: &TestServer, id: &str) -> anyhow::Result<Vec<String>> {
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/api/audit?target={id}&action=incident."),
            Some(&server.admin_token),
            None,
        )
        .await;
    ensure!(status == StatusCode::OK, "{status} {page}");
    let mut entries: Vec<String> = page["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["actor"].as_str().unwrap_or_default(),
                e["action"].as_str().unwrap_or_default(),
                e["detail"]
            )
        })
        .collect();
    entries.reverse();
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_access_are_audited_whichever_way_they_arrive() -> anyhow::Result<()> {
    let Cast {
        server,
        alice,
        bob,
        id,
        ..
    } = Cast::declare("Leaked key", "security").await;
    // Bob's raw attempt is put back: nothing changed, nothing to audit.
    let mut intruder = SyncClient::connect(&server.ws_url(&bob)).await?;
    intruder.set_author("bob");
    intruder.open(&id).await?;
    intruder.raw_change(|doc| {
        let (_, access) = doc.get(automerge::ROOT, "access")?.expect("access");
        doc.put(&access, "restricted", false)
    })?;
    intruder
        .sync_until_acknowledged(Duration::from_secs(10))
        .await?;
    // The commander's own change over /sync is recorded as hers.
    let mut commander = SyncClient::connect(&server.ws_url(&alice)).await?;
    commander.set_author("alice");
    commander.open(&id).await?;
    commander.apply_local(incident_doc::Operation::RemoveMember {
        person: "bob".into(),
    })?;
    commander
        .sync_until_acknowledged(Duration::from_secs(10))
        .await?;
    let want = [
        r#"alice incident.restriction_changed {"restricted":true,"via":"declaration"}"#,
        r#"alice incident.member_added {"person":"bob","via":"http"}"#,
        r#"alice incident.member_removed {"person":"bob","via":"sync"}"#,
    ];
    let entries = eventually("the three entries", Duration::from_secs(10), || async {
        let entries = audited(&server, &id).await.ok()?;
        (entries.len() >= want.len()).then_some(entries)
    })
    .await?;
    ensure!(entries == want, "{entries:#?}");
    server.stop().await;
    Ok(())
}
