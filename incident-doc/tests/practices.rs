//! The revert list (`deviations`) and the operations log (`changes`) through the model's public API: who is
//! recorded, what counts as uncoordinated, open deviations blocking a close, the raw changes `enforce` puts back,
//! and where both show (exports, postmortem, status update, analytics, signals).

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use incident_doc::rules::Rule;
use incident_doc::schema::{Role, Status};
use incident_doc::update::{UpdateFormat, status_update};
use incident_doc::{FieldValue, Incident, OpError, Operation};

mod common;

use common::{at, t0};

fn declare() -> Incident {
    common::declare("incident", "Checkout errors", 1)
}

fn deviations(incident: &Incident) -> Vec<incident_doc::Deviation> {
    match incident.view().field("deviations").map(|f| f.value.clone()) {
        Some(FieldValue::Deviations(list)) => list,
        other => panic!("deviations: {other:?}"),
    }
}

fn changes(incident: &Incident) -> Vec<incident_doc::Change> {
    match incident.view().field("changes").map(|f| f.value.clone()) {
        Some(FieldValue::Changes(list)) => list,
        other => panic!("changes: {other:?}"),
    }
}

fn add_deviation(incident: &mut Incident, who: &str, minutes: i64) -> String {
    let add = Operation::AddDeviation {
        what: "Feature flag new-checkout off".into(),
        revert: "Turn new-checkout back on".into(),
        at: None,
    };
    incident
        .apply(&add, &at(who, minutes))
        .expect("add")
        .id
        .expect("an id")
}

fn close(reason: Option<&str>) -> Operation {
    Operation::SetStatus {
        status: Status::Closed,
        override_reason: reason.map(str::to_owned),
    }
}

fn finish_exit_criteria(incident: &mut Incident, minutes: i64) {
    let Some(FieldValue::Checklist(items)) = incident
        .view()
        .field("exitCriteria")
        .map(|f| f.value.clone())
    else {
        panic!("exit criteria");
    };
    for item in items {
        let done = Operation::SetItemDone {
            field: "exitCriteria".into(),
            id: item.id,
            done: true,
        };
        incident.apply(&done, &at("alice", minutes)).expect("done");
    }
}

#[test]
fn an_open_deviation_blocks_closing_until_reverted_or_overridden() {
    let mut incident = declare();
    finish_exit_criteria(&mut incident, 1);
    let id = add_deviation(&mut incident, "bob", 2);
    let list = deviations(&incident);
    assert_eq!(list[0].by, "bob");
    assert!(list[0].reverted.is_none());

    let Err(OpError::Forbidden(message)) = incident.apply(&close(None), &at("alice", 3)) else {
        panic!("an open deviation must block closing");
    };
    assert!(
        message.contains("deviation not reverted: Feature flag new-checkout off"),
        "{message}"
    );
    // Marking it reverted names whoever did, once.
    let revert = Operation::MarkReverted {
        id: id.clone(),
        note: Some("flag back on".into()),
    };
    incident.apply(&revert, &at("carol", 4)).expect("revert");
    assert!(matches!(
        incident.apply(&revert, &at("carol", 5)),
        Err(OpError::InvalidValue(_))
    ));
    let reverted = deviations(&incident)[0].reverted.clone().expect("reverted");
    assert_eq!(
        (reverted.by.as_str(), reverted.note.as_deref()),
        ("carol", Some("flag back on"))
    );
    incident
        .apply(&close(None), &at("alice", 6))
        .expect("closes");
}

#[test]
fn an_override_closes_over_open_deviations_and_says_so() {
    let mut incident = declare();
    finish_exit_criteria(&mut incident, 1);
    add_deviation(&mut incident, "bob", 2);
    incident
        .apply(
            &close(Some("the flag stays off until Monday")),
            &at("alice", 3),
        )
        .expect("override");
    let md = incident_doc::export::markdown(&incident.view());
    assert!(
        md.contains(
            "Closed with 1 exit criteria or deviations open (deviation not reverted: Feature flag"
        ),
        "{md}"
    );
    // The postmortem lists it and makes reverting it an action item.
    let record = incident.record(None);
    let postmortem = incident_doc::export::postmortem(&incident.view(), &record);
    assert!(
        postmortem.contains("## Deviations from normal (revert list)"),
        "{postmortem}"
    );
    assert!(
        postmortem.contains(
            "| Revert: Feature flag new-checkout off (Turn new-checkout back on) | mitigate |"
        ),
        "{postmortem}"
    );
    let facts = incident_doc::analytics::Facts::new("x", &incident.view(), &record);
    assert_eq!(
        (
            facts.deviations_total,
            facts.deviations_open,
            facts.deviations_reverted
        ),
        (1, 1, 0)
    );
}

#[test]
fn changes_outside_operations_are_marked_uncoordinated() {
    let mut incident = declare();
    let log = |what: &str| Operation::LogChange {
        what: what.into(),
        target: "payments-api".into(),
        at: None,
    };
    // The commander holds Operations while nobody else does.
    incident
        .apply(&log("restarted pods"), &at("alice", 1))
        .expect("log");
    incident
        .apply(&log("drained eu-west"), &at("bob", 2))
        .expect("log");
    // Only the holder of Operations delegates.
    let delegate = Operation::DelegateOperations {
        person: "bob".into(),
    };
    assert!(matches!(
        incident.apply(&delegate, &at("carol", 3)),
        Err(OpError::Forbidden(_))
    ));
    incident
        .apply(&delegate, &at("alice", 3))
        .expect("delegate");
    incident
        .apply(&log("scaled up"), &at("bob", 4))
        .expect("log");
    // Once someone else holds Operations, the commander freelances too.
    let assign = Operation::AssignRole {
        role: Role::Operations,
        person: Some("dave".into()),
    };
    incident.apply(&assign, &at("alice", 5)).expect("assign");
    incident
        .apply(&log("rolled back"), &at("alice", 6))
        .expect("log");
    let revoke = Operation::RevokeDelegation {
        person: "bob".into(),
    };
    assert!(matches!(
        incident.apply(&revoke, &at("alice", 7)),
        Err(OpError::Forbidden(_))
    ));
    incident.apply(&revoke, &at("dave", 7)).expect("revoke");
    incident
        .apply(&log("flushed cache"), &at("bob", 8))
        .expect("log");
    let marks: Vec<(String, bool)> = changes(&incident)
        .into_iter()
        .map(|c| (c.by, c.uncoordinated))
        .collect();
    assert_eq!(
        marks,
        [
            ("alice".to_owned(), false),
            ("bob".to_owned(), true),
            ("bob".to_owned(), false),
            ("alice".to_owned(), true),
            ("bob".to_owned(), true),
        ]
    );
    let view = incident.view();
    let update = status_update(&view, None, t0(), UpdateFormat::Text);
    assert!(
        update.contains("Uncoordinated change by bob on payments-api: drained eu-west"),
        "{update}"
    );
    let md = incident_doc::export::markdown(&view);
    assert!(
        md.contains("**bob** on payments-api: drained eu-west · **uncoordinated**"),
        "{md}"
    );
    let facts = incident_doc::analytics::Facts::new("x", &view, &incident.record(None));
    assert_eq!((facts.changes_total, facts.changes_uncoordinated), (5, 3));
}

#[test]
fn an_uncoordinated_change_is_a_signal_naming_operations_and_the_commander() {
    let mut incident = declare();
    let assign = Operation::AssignRole {
        role: Role::Operations,
        person: Some("dave".into()),
    };
    incident.apply(&assign, &at("alice", 1)).expect("assign");
    let before = incident.signals();
    let log = Operation::LogChange {
        what: "restarted the primary".into(),
        target: "db-1".into(),
        at: None,
    };
    incident.apply(&log, &at("mallory", 2)).expect("log");
    let events = incident_doc::signals::events(&before, &incident.signals());
    assert_eq!(
        events,
        [incident_doc::signals::Event::UncoordinatedChange {
            by: "mallory".into(),
            target: "db-1".into(),
            what: "restarted the primary".into(),
            operations: Some("dave".into()),
            commander: Some("alice".into()),
        }]
    );
}

/// The list object of root key `key`.
fn list(incident: &mut Incident, key: &str) -> automerge::ObjId {
    incident
        .doc_mut()
        .get(ROOT, key)
        .expect("read")
        .expect("a list")
        .1
}

#[test]
fn raw_writes_cannot_forge_authors_marks_or_rewrite_the_logs() {
    let mut incident = declare();
    let id = add_deviation(&mut incident, "bob", 1);

    // Mallory marks Bob's deviation reverted in Carol's name: put back.
    let before = incident.doc_mut().get_heads();
    let devs = list(&mut incident, "deviations");
    let doc = incident.doc_mut();
    let (_, entry) = doc.get(&devs, 0).expect("read").expect("entry");
    doc.put(&entry, "revertedBy", "carol").expect("put");
    doc.put(
        &entry,
        "revertedAt",
        automerge::ScalarValue::Timestamp(t0().timestamp_millis()),
    )
    .expect("put");
    doc.commit();
    let rules: Vec<Rule> = incident
        .enforce(&before, &at("mallory", 2), &at("commandpost", 2))
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, [Rule::Authorship]);
    assert!(deviations(&incident)[0].reverted.is_none());

    // Deleting it from the revert list: put back.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.delete(&devs, 0).expect("delete");
    doc.commit();
    let rules: Vec<Rule> = incident
        .enforce(&before, &at("bob", 3), &at("commandpost", 3))
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, [Rule::Deviations]);
    assert_eq!(deviations(&incident)[0].id, id);

    // A new deviation naming someone else goes.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    let forged = doc.insert_object(&devs, 1, ObjType::Map).expect("insert");
    doc.put(&forged, "id", forged.to_string()).expect("put");
    doc.put(&forged, "by", "alice").expect("put");
    doc.put(
        &forged,
        "at",
        automerge::ScalarValue::Timestamp(t0().timestamp_millis()),
    )
    .expect("put");
    doc.put(&forged, "what", "nothing").expect("put");
    doc.put(&forged, "revert", "nothing").expect("put");
    doc.commit();
    let rules: Vec<Rule> = incident
        .enforce(&before, &at("mallory", 4), &at("commandpost", 4))
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, [Rule::Authorship]);
    assert_eq!(deviations(&incident).len(), 1);

    // Mallory (no Operations role) logs a change marked coordinated: it stays, with the server's mark.
    let before = incident.doc_mut().get_heads();
    let log = list(&mut incident, "changes");
    let doc = incident.doc_mut();
    let entry = doc.insert_object(&log, 0, ObjType::Map).expect("insert");
    doc.put(&entry, "id", entry.to_string()).expect("put");
    doc.put(&entry, "by", "mallory").expect("put");
    doc.put(
        &entry,
        "at",
        automerge::ScalarValue::Timestamp(t0().timestamp_millis()),
    )
    .expect("put");
    doc.put(&entry, "what", "restarted db").expect("put");
    doc.put(&entry, "target", "db-1").expect("put");
    doc.put(&entry, "uncoordinated", false).expect("put");
    doc.commit();
    let rules: Vec<Rule> = incident
        .enforce(&before, &at("mallory", 5), &at("commandpost", 5))
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, [Rule::Operations]);
    let logged = changes(&incident);
    assert_eq!(logged.len(), 1);
    assert!(logged[0].uncoordinated);

    // Clearing the mark later, or removing the entry: put back.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.put(&entry, "uncoordinated", false).expect("put");
    doc.commit();
    assert!(
        !incident
            .enforce(&before, &at("mallory", 6), &at("commandpost", 6))
            .is_empty()
    );
    assert!(changes(&incident)[0].uncoordinated);
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.delete(&log, 0).expect("delete");
    doc.commit();
    assert!(
        !incident
            .enforce(&before, &at("mallory", 7), &at("commandpost", 7))
            .is_empty()
    );
    assert_eq!(changes(&incident).len(), 1);

    // Delegating oneself: put back.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    let delegates = doc
        .put_object(ROOT, "operationsDelegates", ObjType::List)
        .expect("list");
    doc.insert(&delegates, 0, "mallory").expect("insert");
    doc.commit();
    let rules: Vec<Rule> = incident
        .enforce(&before, &at("mallory", 8), &at("commandpost", 8))
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, [Rule::Operations]);
    assert!(
        incident
            .doc()
            .get(ROOT, "operationsDelegates")
            .expect("read")
            .is_none()
    );
}

#[test]
fn a_raw_close_over_an_open_deviation_is_put_back() {
    let mut incident = declare();
    finish_exit_criteria(&mut incident, 1);
    add_deviation(&mut incident, "bob", 2);
    let before = incident.doc_mut().get_heads();
    incident
        .doc_mut()
        .put(ROOT, "status", "closed")
        .expect("put");
    incident.doc_mut().commit();
    let violations = incident.enforce(&before, &at("alice", 3), &at("commandpost", 3));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].rule, Rule::ExitCriteria);
    assert!(
        violations[0]
            .message
            .contains("deviation not reverted: Feature flag new-checkout off")
    );
    assert_eq!(incident.view().headline.status.as_deref(), Some("declared"));
}
