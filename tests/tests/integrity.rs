//! Integrity of the record: the server, not the client, decides what an incident document is and who wrote what.
//! Each test is a hostile write client (not the commander) attacking over `/sync` with raw Automerge changes, as
//! any automerge-repo client can, or over HTTP; each attack is refused or harmless, the document and its history
//! stay correct, and honest peers keep syncing. The stock JavaScript client's attacks are in `js_interop.rs`;
//! the same attacks across two PostgreSQL nodes are at the end.
//!
//! - schema: what creation writes (`layout`, `createdBy`, …), what only the server writes (`audit`, `authors`,
//!   `closeOverride`, …) and keys outside the schema are put back, audited, and the sender told;
//! - authorship: history names the person whose token sent a change, whatever its commit message claims; stamps,
//!   pins and timeline entries naming someone else are put back; changes under another person's actor are
//!   refused whole;
//! - the timeline is append-only; closing is the commander's (or an admin's);
//! - changes held back for a missing dependency complete only through their own sender.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use automerge::sync::{self, MessageVersion};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ObjType, ROOT, ReadDoc};
use incident_doc::Incident;
use incident_doc::schema::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use tests::{SyncClient, TestDatabase, TestServer, eventually};
use wire::Message;

const DEADLINE: Duration = Duration::from_secs(30);

/// A sync client of `server` with `token`, stamping its edits as `author`, holding incident `id`.
async fn open_as(
    server: &TestServer,
    token: &str,
    author: &str,
    id: &str,
) -> anyhow::Result<SyncClient> {
    let mut client = SyncClient::connect(&server.ws_url(token)).await?;
    client.set_author(author);
    client.open(id).await?;
    Ok(client)
}

/// Polls `check` until it holds (a revert the server makes after acknowledging the change that caused it).
async fn until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, DEADLINE, move || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// The root keys of the server's copy.
fn root_keys(incident: &Incident) -> BTreeSet<String> {
    incident.doc().keys(ROOT).collect()
}

/// The audit trail's rules and senders, from the JSON read model.
fn audit(json: &Value) -> Vec<(String, String)> {
    json["audit"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["rule"].as_str().unwrap_or_default().to_owned(),
                        e["by"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The commander the JSON read model shows.
fn commander(json: &Value) -> Option<String> {
    json["fields"]
        .as_array()?
        .iter()
        .find(|f| f["kind"] == "roles")?["value"]["commander"]
        .as_str()
        .map(str::to_owned)
}

/// The refusals (`{"refused": …}` ephemeral messages) a client received.
fn refusals(client: &mut SyncClient) -> Vec<String> {
    client
        .take_ephemeral()
        .iter()
        .filter_map(|data| wire::map_text(data, wire::REFUSED_KEY))
        .collect()
}

/// The object id of root key `key` in a client's copy.
fn root_object(
    doc: &automerge::AutoCommit,
    key: &str,
) -> Result<automerge::ObjId, automerge::AutomergeError> {
    doc.get(ROOT, key)?
        .map(|(_, id)| id)
        .ok_or(automerge::AutomergeError::InvalidIndex(0))
}

/// Every attack on the schema in one change, with an allowed edit beside them: the allowed edit stands, everything
/// else is put back, and the incident reads exactly as before to everyone.
#[tokio::test]
async fn what_creation_and_the_server_write_cannot_be_rewritten() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Schema").await.id;
    let before = server.incident_json(&alice, &id).await;
    let fields = before["fields"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(fields >= 10, "the template has its fields: {before}");
    let keys_before = root_keys(&server.document(&alice, &id).await);

    let mut m = open_as(&server, &mallory, "mallory", &id).await?;
    m.raw_change(|doc| {
        doc.delete(ROOT, "layout")?;
        doc.put(ROOT, "createdBy", "mallory")?;
        doc.put(ROOT, "incidentNumber", 1)?;
        doc.put(ROOT, "template", "security")?;
        doc.put(ROOT, "templateVersion", "0000000000000000")?;
        doc.put(ROOT, "audit", "nothing to see")?;
        doc.put(ROOT, "authors", "nobody")?;
        let over = doc.put_object(ROOT, "closeOverride", ObjType::Map)?;
        doc.put(&over, "reason", "forged")?;
        doc.put(ROOT, "evil", "a key outside the schema")?;
        let summary = root_object(doc, "summary")?;
        doc.splice_text(&summary, 0, 0, "typed by mallory. ")?;
        Ok(())
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    m.sync_until(
        |c| {
            c.incident()
                .doc()
                .get(ROOT, "evil")
                .ok()
                .flatten()
                .is_none()
        },
        DEADLINE,
    )
    .await
    .context("the revert reaching the sender")?;

    let after = server.incident_json(&alice, &id).await;
    ensure!(
        after["fields"].as_array().map(Vec::len) == Some(fields),
        "every field still shows: {after}"
    );
    ensure!(commander(&after).as_deref() == Some("alice"), "{after}");
    for key in [
        "createdBy",
        "number",
        "template",
        "templateName",
        "templateVersion",
        "schemaVersion",
    ] {
        ensure!(
            after[key] == before[key],
            "{key} changed: {} -> {}",
            before[key],
            after[key]
        );
    }
    let doc = server.document(&alice, &id).await;
    ensure!(
        root_keys(&doc)
            == keys_before
                .iter()
                .cloned()
                .chain(["audit".to_owned()])
                .collect(),
        "root keys: {:?}",
        root_keys(&doc)
    );
    ensure!(
        m.text("summary").starts_with("typed by mallory. "),
        "the allowed part of the change stands"
    );
    ensure!(
        audit(&after)
            .iter()
            .any(|(rule, by)| rule == "schema" && by == "mallory"),
        "the attempt is audited: {:?}",
        audit(&after)
    );
    ensure!(
        refusals(&mut m).iter().any(|r| r.contains("evil")),
        "the sender hears which keys"
    );

    // One layout entry (the command hierarchy's) deleted: put back too, and the rules still see the roles.
    m.raw_change(|doc| {
        let layout = root_object(doc, "layout")?;
        let roles = (0..doc.length(&layout))
            .find(|i| {
                doc.get(&layout, *i)
                    .ok()
                    .flatten()
                    .and_then(|(_, entry)| doc.get(&entry, "kind").ok().flatten())
                    .is_some_and(|(kind, _)| kind.as_str() == Some("roles"))
            })
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        doc.delete(&layout, roles)?;
        let roles = root_object(doc, "roles")?;
        doc.put(&roles, "commander", "mallory")?;
        Ok(())
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    until("the layout entry and the commander put back", || async {
        let json = server.incident_json(&alice, &id).await;
        json["fields"].as_array().map(Vec::len) == Some(fields)
            && commander(&json).as_deref() == Some("alice")
    })
    .await?;
    Ok(())
}

/// History names the token that sent a change, never its commit message; stamps and timeline entries naming
/// someone else are put back; changes under another person's actor are refused before they are applied.
#[tokio::test]
async fn authorship_is_recorded_by_the_server_not_claimed_by_the_client() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Authorship").await.id;
    let mut a = open_as(&server, &alice, "alice", &id).await?;
    a.splice("summary", 0, 0, "alice was here. ").await?;

    let mut m = open_as(&server, &mallory, "alice", &id).await?;
    // A change whose commit message claims alice, with alice's stamp and a timeline entry in alice's name.
    m.raw_change(|doc| {
        let summary = root_object(doc, "summary")?;
        doc.splice_text(&summary, 0, 0, "edited by 'alice'. ")?;
        let updated = root_object(doc, "updated")?;
        let stamp = doc.put_object(&updated, "summary", ObjType::Map)?;
        doc.put(&stamp, "by", "alice")?;
        doc.put(
            &stamp,
            "at",
            automerge::ScalarValue::Timestamp(chrono::Utc::now().timestamp_millis()),
        )?;
        let timeline = root_object(doc, "timeline")?;
        let entry = doc.insert_object(&timeline, 0, ObjType::Map)?;
        doc.put(&entry, "id", entry.to_string())?;
        doc.put(&entry, "author", "alice")?;
        doc.put(
            &entry,
            "at",
            automerge::ScalarValue::Timestamp(chrono::Utc::now().timestamp_millis()),
        )?;
        let text = doc.put_object(&entry, "text", ObjType::Text)?;
        doc.splice_text(&text, 0, 0, "I, alice, resign.")?;
        Ok(())
    })?;
    let forged = m.heads();
    m.incident_mut().doc_mut().commit_with(
        CommitOptions::default()
            .with_message(r#"{"by":"alice","op":"setText","fields":["summary"]}"#),
    );
    m.sync_until_acknowledged(DEADLINE).await?;

    until("the forged stamp and entry put back", || async {
        let json = server.incident_json(&alice, &id).await;
        let summary = json["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["key"] == "summary").cloned())
            .unwrap_or_default();
        summary["updated"]["by"] == "alice"
            && summary["value"]
                .as_str()
                .is_some_and(|v| v.contains("edited by"))
            && !json.to_string().contains("I, alice, resign.")
            && audit(&json)
                .iter()
                .any(|(rule, by)| rule == "authorship" && by == "mallory")
    })
    .await?;
    // The stamp is alice's own from her edit, restored: not mallory's write. History says who sent what.
    let history: Value = server
        .request(
            Method::GET,
            &format!("/api/incidents/{id}/history?limit=1000"),
            Some(&alice),
        )
        .send()
        .await?
        .json()
        .await?;
    let changes = history["changes"].as_array().context("history")?.clone();
    let by_hash = |hash: &automerge::ChangeHash| {
        changes
            .iter()
            .find(|c| c["hash"] == hash.to_string())
            .and_then(|c| c["by"].as_str().map(str::to_owned))
    };
    for hash in &forged {
        ensure!(
            by_hash(hash).as_deref() == Some("mallory"),
            "mallory's change is hers in history: {history}"
        );
    }
    ensure!(
        changes.iter().all(|c| c["by"].is_string()),
        "every change has a recorded author: {history}"
    );

    // Writing under alice's actor: refused whole, with an error, and nothing of it applied.
    let heads_before = server.heads(&alice, &id).await;
    let alice_actor = a.incident().doc().get_actor().clone();
    m.incident_mut().doc_mut().set_actor(alice_actor.clone());
    m.raw_change(|doc| {
        let summary = root_object(doc, "summary")?;
        doc.splice_text(&summary, 0, 0, "ALICE SAYS: ")
    })?;
    m.flush().await?;
    let error = m.expect_error_then_close().await?;
    ensure!(
        error.contains(&alice_actor.to_hex_string()) && error.contains("alice"),
        "{error}"
    );
    ensure!(
        server.heads(&alice, &id).await == heads_before,
        "nothing was applied"
    );
    // Alice carries on.
    a.splice("summary", 0, 0, "still alice. ").await?;
    ensure!(!server.markdown(&alice, &id).await.contains("ALICE SAYS"));
    Ok(())
}

/// Only an entry's author edits or removes it, within the grace period; nobody changes its id, author or time.
#[tokio::test]
async fn the_timeline_is_append_only() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Timeline").await.id;
    let fresh = server
        .append_timeline(&alice, &id, "Paged the database team.")
        .await;
    let old_at = (chrono::Utc::now() - chrono::Duration::minutes(20)).to_rfc3339();
    let response = server
        .operations(
            &alice,
            &id,
            json!([{"op": "addTimelineEntry", "text": "Alert fired.", "at": old_at}]),
        )
        .await;
    ensure!(response.status() == StatusCode::OK, "{response:?}");

    let entry_by_id = |doc: &automerge::AutoCommit, wanted: &str| -> Option<automerge::ObjId> {
        let (_, timeline) = doc.get(ROOT, "timeline").ok()??;
        (0..doc.length(&timeline)).find_map(|i| {
            let (_, entry) = doc.get(&timeline, i).ok()??;
            let (id, _) = doc.get(&entry, "id").ok()??;
            (id.as_str() == Some(wanted)).then_some(entry)
        })
    };
    let mut m = open_as(&server, &mallory, "mallory", &id).await?;
    // Mallory removes alice's fresh entry and renames the old one's id and author.
    m.raw_change(|doc| {
        let (_, timeline) = doc
            .get(ROOT, "timeline")?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        let index = (0..doc.length(&timeline))
            .find(|i| {
                doc.get(&timeline, *i).ok().flatten().is_some_and(|(_, e)| {
                    doc.get(&e, "id")
                        .ok()
                        .flatten()
                        .and_then(|(v, _)| v.as_str().map(str::to_owned))
                        == Some(fresh.clone())
                })
            })
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        doc.delete(&timeline, index)?;
        Ok(())
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    until("the removed entry put back", || async {
        server
            .markdown(&alice, &id)
            .await
            .contains("Paged the database team.")
    })
    .await?;

    // Alice may reword her own fresh entry (within the grace period), not the one dated 20 minutes ago.
    let mut a = open_as(&server, &alice, "alice", &id).await?;
    a.raw_change(|doc| {
        let fresh_entry =
            entry_by_id(doc, &fresh).ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        let text = root_text(doc, &fresh_entry)?;
        doc.update_text(&text, "Paged the database team (and the network team).")
    })?;
    a.sync_until_acknowledged(DEADLINE).await?;
    a.raw_change(|doc| {
        let (_, timeline) = doc
            .get(ROOT, "timeline")?
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        let old = (0..doc.length(&timeline))
            .filter_map(|i| doc.get(&timeline, i).ok().flatten().map(|(_, e)| e))
            .find(|e| {
                root_text(doc, e)
                    .ok()
                    .and_then(|t| doc.text(&t).ok())
                    .as_deref()
                    == Some("Alert fired.")
            })
            .ok_or(automerge::AutomergeError::InvalidIndex(0))?;
        let text = root_text(doc, &old)?;
        doc.update_text(&text, "Alert fired (rewritten later).")?;
        doc.put(&old, "author", "pagerbot")?;
        Ok(())
    })?;
    a.sync_until_acknowledged(DEADLINE).await?;
    until(
        "the old entry put back, the fresh rewording kept",
        || async {
            let markdown = server.markdown(&alice, &id).await;
            markdown.contains("Paged the database team (and the network team).")
                && markdown.contains("Alert fired.")
                && !markdown.contains("rewritten later")
                && !markdown.contains("pagerbot")
        },
    )
    .await?;
    let json = server.incident_json(&alice, &id).await;
    let rules: Vec<(String, String)> = audit(&json);
    ensure!(
        rules.contains(&("timelineEdit".into(), "mallory".into()))
            && rules.contains(&("timelineEdit".into(), "alice".into())),
        "{rules:?}"
    );
    Ok(())
}

/// The Text object at key `text` of a timeline entry.
fn root_text(
    doc: &automerge::AutoCommit,
    entry: &automerge::ObjId,
) -> Result<automerge::ObjId, automerge::AutomergeError> {
    doc.get(entry, "text")?
        .map(|(_, id)| id)
        .ok_or(automerge::AutomergeError::InvalidIndex(0))
}

/// Closing freezes the record: the commander's decision or an admin's, over HTTP and over `/sync`.
#[tokio::test]
async fn closing_is_a_command_decision() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Closing").await.id;
    let close = json!([{"op": "setStatus", "status": "closed", "overrideReason": "done"}]);

    let response = server.operations(&mallory, &id, close.clone()).await;
    ensure!(response.status() == StatusCode::FORBIDDEN, "{response:?}");
    let body: Value = response.json().await?;
    ensure!(body["error"]["code"] == "command_rule", "{body}");

    let mut m = open_as(&server, &mallory, "mallory", &id).await?;
    m.raw_change(|doc| doc.put(ROOT, "status", "closed"))?;
    m.sync_until_acknowledged(DEADLINE).await?;
    until("mallory's close put back", || async {
        let json = server.incident_json(&alice, &id).await;
        json["status"] == "declared" && audit(&json).contains(&("closing".into(), "mallory".into()))
    })
    .await?;

    // An administrator closes (recovering from an absent commander), with the override recorded.
    let response = server.operations(&server.admin_token, &id, close).await;
    ensure!(response.status() == StatusCode::OK, "{response:?}");
    ensure!(server.incident_json(&alice, &id).await["status"] == "closed");
    Ok(())
}

/// A change held back for a missing dependency completes only through its sender's own messages: when another
/// peer's changes arrive first, it is dropped and its sender cut off (to resend it whole on reconnecting), so it
/// can never be applied unjudged, or judged as someone else's. Resent whole, it is judged as its sender's.
#[tokio::test]
async fn held_back_changes_complete_only_through_their_sender() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let alice = server.token("alice", "write").await;
    let mallory = server.token("mallory", "write").await;
    let id = server.declare(&alice, "Held back").await.id;
    let mut m = open_as(&server, &mallory, "mallory", &id).await?;
    // Change A (allowed) and change B on top of it (seizing command); the server gets only B.
    m.raw_change(|doc| {
        let summary = root_object(doc, "summary")?;
        doc.splice_text(&summary, 0, 0, "A. ")
    })?;
    m.raw_change(|doc| {
        let roles = root_object(doc, "roles")?;
        doc.put(&roles, "commander", "mallory")
    })?;
    let doc = m.incident_mut().doc_mut();
    let b = doc.get_heads();
    let b_change = doc
        .get_change_by_hash(&b[0])
        .context("change B")?
        .raw_bytes()
        .to_vec();
    let only_b = sync::Message {
        heads: b.clone(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![b_change].into(),
        flags: None,
        version: MessageVersion::V1,
    };
    let document_id = m.document_id().context("open")?;
    let server_peer = m.server_id().context("joined")?.clone();
    m.send(&Message::Sync {
        sender_id: m.peer_id().clone(),
        target_id: server_peer,
        document_id,
        data: only_b.encode(),
    })
    .await?;
    // The server holds B back and asks for A: only then does alice's edit arrive.
    loop {
        match m.recv_message(DEADLINE).await? {
            Some(Message::Sync { data, .. }) if !sync::Message::decode(&data)?.need.is_empty() => {
                break;
            }
            Some(Message::Error { message }) => anyhow::bail!("an error instead: {message}"),
            Some(_) => {}
            None => anyhow::bail!("the server closed the connection"),
        }
    }

    let mut a = open_as(&server, &alice, "alice", &id).await?;
    a.splice("summary", 0, 0, "alice. ").await?;
    let error = m.expect_error_then_close().await?;
    ensure!(error.contains("reconnect"), "{error}");
    let doc = server.document(&alice, &id).await;
    ensure!(
        doc.doc().get_change_by_hash(&b[0]).is_none(),
        "B was never applied"
    );
    ensure!(commander(&server.incident_json(&alice, &id).await).as_deref() == Some("alice"));

    // Mallory reconnects with both changes: B is judged as hers, and put back.
    let mut again = open_as(&server, &mallory, "mallory", &id).await?;
    let mine = m.incident_mut().save();
    let theirs = again.incident_mut().doc_mut();
    theirs.merge(&mut automerge::AutoCommit::load(&mine)?)?;
    again.raw_change(|_| Ok(()))?;
    again.sync_until_acknowledged(DEADLINE).await?;
    until("B judged as mallory's and put back", || async {
        let json = server.incident_json(&alice, &id).await;
        commander(&json).as_deref() == Some("alice")
            && audit(&json).contains(&("commandHierarchy".into(), "mallory".into()))
            && server.markdown(&alice, &id).await.contains("A.")
    })
    .await?;
    Ok(())
}

/// The same attacks against one node of two sharing PostgreSQL: the other node's clients and exports never see a
/// broken document, and both nodes' histories name the real sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_keep_the_record_whole() -> anyhow::Result<()> {
    let db = TestDatabase::create();
    let config = format!("database-url = \"{}\"\n", db.url());
    let node1 = TestServer::start_process_with_config(&config).await;
    let node2 = TestServer::start_node(&config, &node1.admin_token).await;
    let alice = node1.token("alice", "write").await;
    let mallory = node1.token("mallory", "write").await;
    let id = node1.declare(&alice, "Two nodes").await.id;
    let fields = node1.incident_json(&alice, &id).await["fields"]
        .as_array()
        .map(Vec::len);

    let mut viewer = open_as(&node1, &alice, "alice", &id).await?;
    let mut m = open_as(&node2, &mallory, "alice", &id).await?;
    m.raw_change(|doc| {
        doc.delete(ROOT, "layout")?;
        let roles = root_object(doc, "roles")?;
        doc.put(&roles, "commander", "mallory")?;
        let summary = root_object(doc, "summary")?;
        doc.splice_text(&summary, 0, 0, "from node 2. ")
    })?;
    m.sync_until_acknowledged(DEADLINE).await?;
    viewer
        .sync_until(|c| c.text("summary").starts_with("from node 2. "), DEADLINE)
        .await?;
    viewer
        .sync_until(
            |c| {
                c.incident().view().holder(Role::Commander).map(|(p, _)| p) == Some("alice")
                    && c.incident().view().fields.len() == fields.unwrap_or(0)
            },
            DEADLINE,
        )
        .await
        .context("node 1's client sees the document whole")?;
    for node in [&node1, &node2] {
        let json = node.incident_json(&alice, &id).await;
        ensure!(json["fields"].as_array().map(Vec::len) == fields, "{json}");
        ensure!(commander(&json).as_deref() == Some("alice"), "{json}");
        let history: Value = node
            .request(
                Method::GET,
                &format!("/api/incidents/{id}/history?limit=1000"),
                Some(&alice),
            )
            .send()
            .await?
            .json()
            .await?;
        let authors: BTreeSet<&str> = history["changes"]
            .as_array()
            .context("history")?
            .iter()
            .filter_map(|c| c["by"].as_str())
            .collect();
        ensure!(
            authors.contains("mallory") && authors.contains("alice"),
            "{authors:?}"
        );
    }
    Ok(())
}
