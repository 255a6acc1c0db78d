//! The command rules, enforced by the server whichever way a change arrives:
//! - over HTTP, a handoff takes effect only when the named recipient accepts it (and writes the timeline entry),
//!   only the commander assigns roles and pins, the status never leaves the lifecycle, and each refusal is a 403
//!   with the rule's words;
//! - over `/sync`, raw Automerge changes that break a rule (a non-commander making themselves commander, pinning,
//!   moving the status backwards) are reverted by the server at once: every replica ends with the old values, the
//!   sender hears why in an ephemeral message, the audit trail records the attempt and `/metrics` counts it;
//! - command changes hands only by an accepted handoff: the commander's typo is refused, and an administrator's
//!   override over HTTP is the recorded way to recover from an absent commander;
//! - closing waits for every exit criterion DONE, or an override reason given over HTTP;
//! - the document's history answers "who was commander at T";
//! - the incident list names each incident's commander, and follows a handoff.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{SyncClient, TestServer};

const DEADLINE: Duration = Duration::from_secs(30);

/// The command routes of one incident, called with a given token; each answers (status, JSON body).
struct Command<'a> {
    server: &'a TestServer,
    base: String,
}

impl Command<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .server
            .request(method, &format!("{}{path}", self.base), Some(token));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn assign(
        &self,
        token: &str,
        role: &str,
        person: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body = json!({ "person": person });
        self.call(Method::PUT, &format!("/roles/{role}"), token, Some(body))
            .await
    }

    async fn pins(&self, token: &str, fields: &[&str]) -> anyhow::Result<(StatusCode, Value)> {
        let body = json!({ "fields": fields });
        self.call(Method::PUT, "/pins", token, Some(body)).await
    }

    async fn propose(
        &self,
        token: &str,
        role: &str,
        to: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body = json!({ "role": role, "to": to });
        self.call(Method::POST, "/handoffs", token, Some(body))
            .await
    }

    async fn accept(&self, token: &str, role: &str) -> anyhow::Result<(StatusCode, Value)> {
        let body = json!({ "role": role });
        self.call(Method::POST, "/handoffs/accept", token, Some(body))
            .await
    }

    async fn cancel(&self, token: &str, role: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::DELETE, &format!("/handoffs/{role}"), token, None)
            .await
    }
}

fn commander(view: &Value) -> Option<String> {
    view["fields"]
        .as_array()?
        .iter()
        .find(|f| f["kind"] == "roles")?["value"]["commander"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn handoffs_take_effect_only_when_the_recipient_accepts() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let carol = server.token("carol", "write").await;
    let id = server.declare(&alice, "Handoff drill").await.id;
    let command = Command {
        server: &server,
        base: format!("/api/incidents/{id}"),
    };

    // Only the commander assigns roles and pins.
    let (status, body) = command.assign(&bob, "commander", "bob").await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "bob made himself commander: {status} {body}"
    );
    ensure!(body["error"]["code"] == "command_rule", "{body}");
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("alice")),
        "{body}"
    );
    let (status, _) = command.pins(&bob, &["summary"]).await?;
    ensure!(status == StatusCode::FORBIDDEN, "bob pinned: {status}");
    let (status, body) = command.assign(&alice, "operations", "carol").await?;
    ensure!(
        status == StatusCode::OK && body["roles"]["operations"] == "carol",
        "{status} {body}"
    );

    // Alice proposes bob; nothing changes; carol cannot accept; bob can.
    let (status, body) = command.propose(&alice, "commander", "bob").await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    ensure!(body["handoffs"]["commander"]["to"] == "bob", "{body}");
    ensure!(body["roles"]["commander"] == "alice", "{body}");
    let (status, body) = command.accept(&carol, "commander").await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "carol accepted bob's handoff: {status} {body}"
    );
    let (status, body) = command.accept(&bob, "commander").await?;
    ensure!(
        status == StatusCode::OK && body["roles"]["commander"] == "bob",
        "{status} {body}"
    );
    ensure!(
        body["handoffs"].as_object().is_none_or(|h| h.is_empty()),
        "{body}"
    );
    let markdown = server.markdown(&alice, &id).await;
    ensure!(
        markdown.contains("bob is now the Incident Commander (handed over by alice)."),
        "no handoff entry in the timeline:\n{markdown}"
    );

    // Alice is no longer in command: she cannot pin; bob can, and the pin order is his.
    let (status, _) = command.pins(&alice, &["summary"]).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "the former commander pinned: {status}"
    );
    let (status, body) = command.pins(&bob, &["status", "summary"]).await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let pinned: Vec<&str> = body["pins"]
        .as_array()
        .context("pins")?
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    ensure!(pinned == ["status", "summary"], "{body}");

    // A proposal can be withdrawn; a withdrawn one cannot be accepted.
    command.propose(&bob, "commander", "carol").await?;
    let (status, _) = command.cancel(&bob, "commander").await?;
    ensure!(status == StatusCode::OK, "{status}");
    let (status, _) = command.accept(&carol, "commander").await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "a withdrawn handoff was accepted: {status}"
    );

    // The lifecycle: forward, back to active when impact returns, never backwards otherwise.
    let set_status = |status: &str| json!([{"op": "setStatus", "status": status}]);
    for (status, expected) in [
        ("mitigated", StatusCode::OK),
        ("active", StatusCode::OK),
        ("declared", StatusCode::FORBIDDEN),
    ] {
        let response = server.operations(&bob, &id, set_status(status)).await;
        let got = response.status();
        ensure!(
            got == expected,
            "setStatus {status}: {got} {}",
            response.text().await.unwrap_or_default()
        );
    }
    // An unknown role is one mistake with one answer, in the path or in the body.
    for (route, (status, body)) in [
        ("assign", command.assign(&bob, "chief", "x").await?),
        ("propose", command.propose(&bob, "chief", "x").await?),
        ("accept", command.accept(&bob, "chief").await?),
        ("cancel", command.cancel(&bob, "chief").await?),
    ] {
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY && body["error"]["code"] == "unprocessable",
            "unknown role on {route}: {status} {body}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rule_breaking_sync_changes_are_reverted_and_audited() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Sync rules").await.id;

    let mut m = SyncClient::connect(&server.ws_url(&mallory)).await?;
    m.open(&id).await?;
    // Mallory's client writes the roles map and the pins directly, as any Automerge client could, and types in
    // the summary in the same change (that part is allowed and must stay).
    m.raw_change(|doc| {
        let (_, roles) = doc
            .get(ROOT, "roles")?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        doc.put(&roles, "commander", "mallory")?;
        let pins = match doc.get(ROOT, "pins")? {
            Some((_, pins)) => pins,
            None => doc.put_object(ROOT, "pins", ObjType::List)?,
        };
        let pin = doc.insert_object(&pins, 0, ObjType::Map)?;
        doc.put(&pin, "field", "summary")?;
        let (_, summary) = doc
            .get(ROOT, "summary")?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        doc.splice_text(&summary, 0, 0, "typed by mallory. ")?;
        Ok(())
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    // The server's revert comes with its answer; keep syncing until our copy shows alice in command again.
    m.sync_until(
        |c| {
            c.incident()
                .view()
                .holder(incident_doc::schema::Role::Commander)
                .map(|(p, _)| p)
                == Some("alice")
        },
        DEADLINE,
    )
    .await
    .context("the revert reaching the sender")?;
    let view = m.incident().view();
    ensure!(
        view.pins.is_empty(),
        "mallory's pin stands: {:?}",
        view.pins
    );
    ensure!(
        m.text("summary").starts_with("typed by mallory. "),
        "the allowed part of the change was lost"
    );

    // The sender heard why.
    let refusals: Vec<String> = m
        .take_ephemeral()
        .iter()
        .filter_map(|data| wire::map_text(data, wire::REFUSED_KEY))
        .collect();
    ensure!(
        refusals.len() == 2,
        "expected two refusals, got {refusals:?}"
    );
    ensure!(
        refusals.iter().any(|r| r.contains("command hierarchy")),
        "{refusals:?}"
    );
    ensure!(refusals.iter().any(|r| r.contains("pins")), "{refusals:?}");

    // The server's copy, the audit trail and the metrics.
    let json = server.incident_json(&alice, &id).await;
    ensure!(
        commander(&json).as_deref() == Some("alice"),
        "server copy: {json}"
    );
    let audit = json["audit"].as_array().context("an audit trail")?;
    ensure!(
        audit.len() == 2 && audit.iter().all(|a| a["by"] == "mallory"),
        "{audit:?}"
    );
    let metrics = server.metrics().await;
    ensure!(
        metrics.contains("commandpost_rule_violations_total 2"),
        "{metrics}"
    );

    // A status moved backwards over sync is put back too; the commander's own changes stand.
    let mut a = SyncClient::connect(&server.ws_url(&alice)).await?;
    a.open(&id).await?;
    a.apply_local(incident_doc::Operation::SetStatus {
        status: incident_doc::schema::Status::Resolved,
        override_reason: None,
    })?;
    a.sync_until_acknowledged(DEADLINE).await?;
    m.raw_change(|doc| doc.put(ROOT, "status", "declared"))?;
    m.sync_until_acknowledged(DEADLINE).await?;
    m.sync_until(
        |c| c.incident().view().headline.status.as_deref() == Some("resolved"),
        DEADLINE,
    )
    .await
    .context("the status revert reaching the sender")?;
    let json = server.incident_json(&alice, &id).await;
    ensure!(json["status"] == "resolved", "{}", json["status"]);
    Ok(())
}

#[tokio::test]
async fn history_answers_who_was_commander_at_a_moment() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let id = server.declare(&alice, "Who commanded").await.id;
    let before = server.heads(&alice, &id).await;
    let command = Command {
        server: &server,
        base: format!("/api/incidents/{id}"),
    };
    command.propose(&alice, "commander", "bob").await?;
    command.accept(&bob, "commander").await?;
    let mut doc = server.document(&alice, &id).await;
    let then = doc.view_at(&before);
    let now = doc.view();
    let holder = |v: &incident_doc::IncidentView| {
        v.holder(incident_doc::schema::Role::Commander)
            .map(|(p, _)| p.to_owned())
    };
    ensure!(
        holder(&then).as_deref() == Some("alice"),
        "then: {:?}",
        holder(&then)
    );
    ensure!(
        holder(&now).as_deref() == Some("bob"),
        "now: {:?}",
        holder(&now)
    );
    if doc.doc_mut().get_heads() == before {
        bail!("the handoff changed nothing");
    }
    Ok(())
}

#[tokio::test]
async fn a_closed_incident_undoes_every_synced_change() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let id = server.declare(&alice, "Archived").await.id;
    let close =
        json!([{"op": "setStatus", "status": "closed", "overrideReason": "archived for the test"}]);
    let response = server.operations(&alice, &id, close).await;
    ensure!(
        response.status() == StatusCode::OK,
        "closing: {}",
        response.status()
    );
    let before = server.incident_json(&alice, &id).await;

    // Even the commander's client cannot edit the archive over sync: the summary, a new timeline entry and the
    // status all come back as they were.
    let mut a = SyncClient::connect(&server.ws_url(&alice)).await?;
    a.open(&id).await?;
    let archived_summary = a.text("summary");
    a.raw_change(|doc| {
        let (_, summary) = doc
            .get(ROOT, "summary")?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        doc.splice_text(&summary, 0, 0, "rewritten history. ")?;
        let (_, timeline) = doc
            .get(ROOT, "timeline")?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        let entry = doc.insert_object(&timeline, 0, ObjType::Map)?;
        doc.put(&entry, "author", "alice")?;
        doc.put(&ROOT, "status", "active")?;
        Ok(())
    })?;
    a.sync_until_acknowledged(DEADLINE).await?;
    a.sync_until(|c| c.text("summary") == archived_summary, DEADLINE)
        .await
        .context("the archive's summary coming back")?;
    let after = server.incident_json(&alice, &id).await;
    ensure!(after["status"] == "closed", "{}", after["status"]);
    ensure!(
        after["fields"] == before["fields"],
        "the archive's fields changed"
    );
    let audit = after["audit"].as_array().context("an audit trail")?;
    ensure!(audit.iter().any(|a| a["rule"] == "archived"), "{audit:?}");
    Ok(())
}

#[tokio::test]
async fn closing_waits_for_the_exit_criteria_over_http_and_sync() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let id = server.declare(&alice, "Exit criteria").await.id;

    let refused = server
        .operations(
            &alice,
            &id,
            json!([{"op": "setStatus", "status": "closed"}]),
        )
        .await;
    ensure!(
        refused.status() == StatusCode::FORBIDDEN,
        "{}",
        refused.status()
    );
    let body: Value = refused.json().await?;
    ensure!(body["error"]["code"] == "command_rule", "{body}");
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit criterion")),
        "{body}"
    );
    ensure!(server.incident_json(&alice, &id).await["status"] == "declared");

    // The commander's own client closing over /sync, past the open criteria: put back and audited.
    let mut a = SyncClient::connect(&server.ws_url(&alice)).await?;
    a.open(&id).await?;
    a.raw_change(|doc| doc.put(&ROOT, "status", "closed"))?;
    a.sync_until_acknowledged(DEADLINE).await?;
    a.sync_until(
        |c| c.incident().view().headline.status.as_deref() == Some("declared"),
        DEADLINE,
    )
    .await
    .context("the status coming back")?;
    let after = server.incident_json(&alice, &id).await;
    let audit = after["audit"].as_array().context("an audit trail")?;
    ensure!(
        audit
            .iter()
            .any(|a| a["rule"] == "exitCriteria" && a["by"] == "alice"),
        "{audit:?}"
    );

    let reason = "the last check moves to the postmortem";
    let closed = server
        .operations(
            &alice,
            &id,
            json!([{"op": "setStatus", "status": "closed", "overrideReason": reason}]),
        )
        .await;
    ensure!(closed.status() == StatusCode::OK, "{}", closed.status());
    let archived = server.incident_json(&alice, &id).await;
    ensure!(archived["status"] == "closed");
    let timeline = archived["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["key"] == "timeline"))
        .context("a timeline")?;
    ensure!(
        timeline["value"].as_array().is_some_and(|entries| entries
            .iter()
            .any(|e| e["text"].as_str().is_some_and(|t| t.ends_with(reason)))),
        "{timeline}"
    );
    Ok(())
}

/// The commander of incident `id` as `GET /api/incidents` lists it.
async fn listed_commander(server: &TestServer, token: &str, id: &str) -> anyhow::Result<Value> {
    let list: Value = server
        .request(Method::GET, "/api/incidents", Some(token))
        .send()
        .await?
        .json()
        .await?;
    let row = list["incidents"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["id"] == id))
        .with_context(|| format!("{id} is not listed: {list}"))?;
    Ok(row["commander"].clone())
}

/// The list names whom to call for each incident (the index keeps the commander), and the next commander once a
/// handoff is accepted.
#[tokio::test]
async fn the_incident_list_names_the_commander_and_follows_a_handoff() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let id = server.declare(&alice, "Queue backlog").await.id;
    let listed = listed_commander(&server, &bob, &id).await?;
    ensure!(listed == "alice", "the declarer commands: {listed}");
    let command = Command {
        server: &server,
        base: format!("/api/incidents/{id}"),
    };
    command.propose(&alice, "commander", "bob").await?;
    let listed = listed_commander(&server, &bob, &id).await?;
    ensure!(listed == "alice", "a proposal changes nothing: {listed}");
    let (status, body) = command.accept(&bob, "commander").await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let listed = listed_commander(&server, &bob, &id).await?;
    ensure!(listed == "bob", "after the handoff: {listed}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_administrator_overrides_command_over_http_and_writers_cannot() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let bob = server.token("bob", "write").await;
    let root = server.token("root", "admin").await;
    let id = server.declare(&alice, "Absent commander").await.id;
    let command = Command {
        server: &server,
        base: format!("/api/incidents/{id}"),
    };

    // The commander's typo hands nothing over, and an administrator's assignment is no override either.
    for token in [&alice, &root] {
        let (status, body) = command.assign(token, "commander", "dvae").await?;
        ensure!(
            status == StatusCode::FORBIDDEN && body["error"]["code"] == "command_rule",
            "assigning command outright: {status} {body}"
        );
    }
    let (_, body) = command.assign(&alice, "commander", "dvae").await?;
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("accepted handoff")),
        "{body}"
    );

    let over = |person: &str| json!([{"op": "overrideCommand", "person": person, "reason": "alice is unreachable"}]);
    let refused = server.operations(&bob, &id, over("bob")).await;
    let status = refused.status();
    let body: Value = refused.json().await?;
    ensure!(
        status == StatusCode::FORBIDDEN && body["error"]["code"] == "forbidden",
        "a writer overrode command: {status} {body}"
    );
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("override command")),
        "{body}"
    );

    let done = server.operations(&root, &id, over("bob")).await;
    ensure!(
        done.status() == StatusCode::OK,
        "the admin's override: {} {}",
        done.status(),
        done.text().await.unwrap_or_default()
    );
    let (_, view) = command.call(Method::GET, "", &alice, None).await?;
    ensure!(commander(&view).as_deref() == Some("bob"), "{view}");
    let text =
        "bob is now the Incident Commander by root's override (was alice): alice is unreachable";
    ensure!(
        view["audit"].as_array().is_some_and(|audit| audit
            .iter()
            .any(|e| e["rule"] == "commandOverride" && e["by"] == "root" && e["message"] == text)),
        "no override in the audit trail: {}",
        view["audit"]
    );
    let markdown = server.markdown(&alice, &id).await;
    ensure!(
        markdown.contains(text),
        "no override in the timeline:\n{markdown}"
    );
    // Bob commands now: he assigns roles.
    let (status, body) = command.assign(&bob, "operations", "carol").await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    Ok(())
}

#[tokio::test]
async fn writers_list_the_names_of_those_who_may_take_a_role_and_nothing_more() -> anyhow::Result<()>
{
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let root = server.token("root", "admin").await;
    server.token("bob", "write").await;
    server.token("reader", "read").await;
    server.token("gone", "write").await;
    let revoked = server
        .request(Method::DELETE, "/api/tokens/gone", Some(&root))
        .send()
        .await?;
    ensure!(
        revoked.status() == StatusCode::NO_CONTENT,
        "{}",
        revoked.status()
    );

    let response = server
        .request(Method::GET, "/api/people", Some(&alice))
        .send()
        .await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let body: Value = response.json().await?;
    // Read tokens cannot accept a handoff, and revoked ones are nobody: neither is suggested. Names only (`admin`
    // is the harness's own token).
    ensure!(
        body == json!({"people": ["admin", "alice", "bob", "root"]}),
        "{body}"
    );
    Ok(())
}
