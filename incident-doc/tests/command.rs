//! The command rules and cadences through the model's public API, with the clock in the test's hands: handoffs,
//! who may change what, what `enforce` reverts in raw changes, and when a field goes stale.

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use chrono::{DateTime, Duration, TimeZone, Utc};
use incident_doc::schema::{Role, Status};
use incident_doc::{Declaration, Editor, Incident, OpError, Operation, template};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
        .single()
        .expect("valid time")
}

fn at(name: &str, minutes: i64) -> Editor {
    Editor::new(name, t0() + Duration::minutes(minutes))
}

fn declare() -> Incident {
    let templates = template::builtin();
    let template = templates.first().expect("the shipped templates parse");
    Incident::create(
        template,
        &Declaration {
            name: "Checkout errors".into(),
            number: Some(1),
        },
        &at("alice", 0),
        None,
    )
    .expect("create")
}

fn commander(incident: &Incident) -> Option<String> {
    incident
        .view()
        .holder(Role::Commander)
        .map(|(person, _)| person.to_owned())
}

#[test]
fn a_handoff_needs_the_recipients_acceptance() {
    let mut incident = declare();
    let propose = Operation::ProposeHandoff {
        role: Role::Commander,
        to: "bob".into(),
    };
    let accept = Operation::AcceptHandoff {
        role: Role::Commander,
    };
    assert!(matches!(
        incident.apply(&propose, &at("carol", 1)),
        Err(OpError::Forbidden(_))
    ));
    assert!(incident.apply(&propose, &at("alice", 2)).is_ok());
    assert_eq!(commander(&incident).as_deref(), Some("alice"));
    assert!(matches!(
        incident.apply(&accept, &at("carol", 3)),
        Err(OpError::Forbidden(_))
    ));
    assert!(incident.apply(&accept, &at("bob", 4)).is_ok());
    assert_eq!(commander(&incident).as_deref(), Some("bob"));
    assert!(incident.view().handoffs.is_empty());
    assert!(
        markdown(&incident).contains("bob is now the Incident Commander (handed over by alice).")
    );
}

fn markdown(incident: &Incident) -> String {
    incident_doc::export::markdown(&incident.view())
}

#[test]
fn raw_changes_that_break_a_rule_are_put_back_and_audited() {
    let mut incident = declare();
    let before = incident.doc_mut().get_heads();
    // Mallory's raw change: herself as commander, plus a summary edit that breaks nothing.
    let doc = incident.doc_mut();
    let (_, roles) = doc
        .get(automerge::ROOT, "roles")
        .expect("read")
        .expect("a roles map");
    doc.put(&roles, "commander", "mallory").expect("put");
    let (_, summary) = doc
        .get(automerge::ROOT, "summary")
        .expect("read")
        .expect("a summary");
    doc.splice_text(&summary, 0, 0, "kept. ").expect("splice");
    doc.commit();
    let violations = incident.enforce(&before, "mallory", &at("commandpost", 5));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(commander(&incident).as_deref(), Some("alice"));
    let view = incident.view();
    assert_eq!(view.audit.len(), 1);
    assert_eq!(view.audit[0].by, "mallory");
    assert_eq!(view.audit[0].rule, "commandHierarchy");
    assert!(markdown(&incident).contains("kept."));

    // The commander's own raw change stands, and nothing is audited.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.put(&roles, "operations", "bob").expect("put");
    doc.commit();
    assert!(
        incident
            .enforce(&before, "alice", &at("commandpost", 6))
            .is_empty()
    );
    assert_eq!(incident.view().audit.len(), 1);
}

#[test]
fn the_lifecycle_moves_forward_or_back_to_active_but_never_out_of_closed() {
    let mut incident = declare();
    let status = |s: Status| Operation::SetStatus { status: s };
    assert!(
        incident
            .apply(&status(Status::Mitigated), &at("alice", 1))
            .is_ok()
    );
    assert!(
        incident
            .apply(&status(Status::Active), &at("alice", 2))
            .is_ok()
    );
    assert!(matches!(
        incident.apply(&status(Status::Declared), &at("alice", 3)),
        Err(OpError::Forbidden(_))
    ));
}

#[test]
fn fields_go_stale_after_their_cadence() {
    let mut incident = declare();
    // The summary and the detailed status are due every 4 hours (templates/incident.md).
    let due = t0() + Duration::hours(4);
    let view = incident.view();
    let summary = view.field("summary").expect("summary");
    assert_eq!(summary.due_at, Some(due));
    assert!(view.field("title").is_some_and(|f| f.due_at.is_none()));

    let mut early = incident.view();
    early.mark_stale(due - Duration::minutes(1));
    assert!(early.fields.iter().all(|f| !f.stale));
    let mut late = incident.view();
    late.mark_stale(due + Duration::minutes(1));
    assert!(late.field("summary").is_some_and(|f| f.stale));
    let json = serde_json::to_value(&late).expect("json");
    let summary_json = json["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "summary"))
        .expect("summary in JSON");
    assert_eq!(summary_json["stale"], true);
    assert!(summary_json["dueAt"].is_string());

    let later = due + Duration::minutes(1);
    let stale = incident.stale_fields(later);
    assert!(stale.contains(&"summary".to_owned()), "{stale:?}");
    // Updating the summary restarts its clock.
    let update = Operation::SetText {
        field: "summary".into(),
        text: "Payments failing for EU customers.".into(),
    };
    incident
        .apply(&update, &at("alice", 4 * 60 - 30))
        .expect("update");
    assert!(!incident.stale_fields(later).contains(&"summary".to_owned()));
}
