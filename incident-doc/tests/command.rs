//! The command rules and cadences through the model's public API, with the clock in the test's hands: handoffs,
//! who may change what, what `enforce` reverts in raw changes, and when a field goes stale.

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use chrono::Duration;
use incident_doc::rules::Rule;
use incident_doc::schema::{Role, Status};
use incident_doc::{Incident, OpError, Operation};

mod common;

use common::{at, markdown, t0};

fn declare() -> Incident {
    common::declare("incident", "Checkout errors", 1)
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
    let violations = incident.enforce(&before, &at("mallory", 5), &at("commandpost", 5));
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
            .enforce(&before, &at("alice", 6), &at("commandpost", 6))
            .is_empty()
    );
    assert_eq!(incident.view().audit.len(), 1);
}

#[test]
fn the_lifecycle_moves_forward_or_back_to_active_but_never_out_of_closed() {
    let mut incident = declare();
    let status = |s: Status| Operation::SetStatus {
        status: s,
        override_reason: None,
    };
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

#[test]
fn a_severe_incident_goes_stale_sooner() {
    let mut incident = declare();
    let due = |incident: &Incident| {
        incident
            .view()
            .field("detailedStatus")
            .and_then(|f| f.due_at)
    };
    // SEV3 by default: every 4 hours; SEV1: every hour (templates/incident.md).
    assert_eq!(due(&incident), Some(t0() + Duration::hours(4)));
    let sev1 = Operation::SetChoice {
        field: "severity".into(),
        value: Some("SEV1".into()),
    };
    incident.apply(&sev1, &at("alice", 10)).expect("severity");
    assert_eq!(due(&incident), Some(t0() + Duration::hours(1)));
    let at_70_minutes = t0() + Duration::minutes(70);
    assert!(
        incident
            .stale_fields(at_70_minutes)
            .contains(&"detailedStatus".to_owned())
    );
    let mut view = incident.view();
    view.mark_stale(at_70_minutes);
    assert!(view.field("detailedStatus").is_some_and(|f| f.stale));
}

#[test]
fn a_template_cadence_for_an_unknown_severity_is_refused() {
    let source = "# T\n<!-- commandpost -->\n## Title\n<!-- commandpost key=title kind=text -->\n\
                  ## Severity\n<!-- commandpost key=severity kind=choice -->\n- SEV1: Critical\n\
                  ## Status\n<!-- commandpost key=detailedStatus kind=markdown cadence=4h cadence.SEV9=1h -->\n";
    let error =
        incident_doc::Template::parse("t", "t.md", source).expect_err("SEV9 is not an option");
    assert!(error.to_string().contains("SEV9"), "{error}");
}

/// Alice marks every exit criterion DONE at minute `minute`.
fn all_exit_criteria_done(incident: &mut Incident, minute: i64) {
    let criteria = match &incident.view().field("exitCriteria").expect("exit").value {
        incident_doc::FieldValue::Checklist(items) => items.clone(),
        other => panic!("exit criteria: {other:?}"),
    };
    for item in criteria {
        let done = Operation::SetItemDone {
            field: "exitCriteria".into(),
            id: item.id,
            done: true,
        };
        incident.apply(&done, &at("alice", minute)).expect("done");
    }
}

fn close(reason: Option<&str>) -> Operation {
    Operation::SetStatus {
        status: Status::Closed,
        override_reason: reason.map(str::to_owned),
    }
}

#[test]
fn closing_waits_for_the_exit_criteria_or_a_reason() {
    let mut incident = declare();
    let refused = incident.apply(&close(None), &at("alice", 10));
    match refused {
        Err(OpError::Forbidden(message)) => {
            assert!(message.contains("Error rate and latency"), "{message}")
        }
        other => panic!("closing with open exit criteria: {other:?}"),
    }
    assert!(matches!(
        incident.apply(&close(Some("  ")), &at("alice", 11)),
        Err(OpError::InvalidValue(_))
    ));
    let resolve_with_reason = Operation::SetStatus {
        status: Status::Resolved,
        override_reason: Some("why".into()),
    };
    assert!(matches!(
        incident.apply(&resolve_with_reason, &at("alice", 12)),
        Err(OpError::InvalidValue(_))
    ));
    assert_eq!(incident.view().headline.status.as_deref(), Some("declared"));

    incident
        .apply(
            &close(Some("the remaining check is tracked in BUG-7")),
            &at("alice", 13),
        )
        .expect("an override closes");
    let view = incident.view();
    assert_eq!(view.headline.status.as_deref(), Some("closed"));
    let entries = match &view.field("timeline").expect("timeline").value {
        incident_doc::FieldValue::Timeline(entries) => entries.clone(),
        other => panic!("timeline: {other:?}"),
    };
    assert!(
        entries.iter().any(|e| e.author == "alice"
            && e.text.starts_with("Closed with 2 exit criteria open")
            && e.text.ends_with("tracked in BUG-7")),
        "{entries:?}"
    );

    // Reopening forgets the override: the next close is judged afresh.
    let reopen = Operation::Reopen {
        reason: "the errors are back".into(),
        status: None,
    };
    incident.apply(&reopen, &at("alice", 20)).expect("reopen");
    assert!(matches!(
        incident.apply(&close(None), &at("alice", 21)),
        Err(OpError::Forbidden(_))
    ));

    // With every criterion DONE, closing needs no reason.
    all_exit_criteria_done(&mut incident, 22);
    incident
        .apply(&close(None), &at("alice", 23))
        .expect("close");
}

#[test]
fn a_raw_close_with_open_exit_criteria_is_put_back() {
    let mut incident = declare();
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.put(automerge::ROOT, "status", "closed").expect("put");
    doc.commit();
    let violations = incident.enforce(&before, &at("mallory", 5), &at("commandpost", 5));
    let rules: Vec<_> = violations.iter().map(|v| v.rule).collect();
    // Not the commander's decision, and not ready either.
    assert_eq!(rules, [Rule::Closing, Rule::ExitCriteria], "{violations:?}");
    assert_eq!(incident.view().headline.status.as_deref(), Some("declared"));
    assert_eq!(incident.view().audit[0].rule, "closing");

    // A raw close that writes its own override is refused too: only the server records an override (the
    // `setStatus` operation over HTTP), so the reason cannot be forged or the record quietly rewritten.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.put(automerge::ROOT, "status", "closed").expect("put");
    let over = doc
        .put_object(automerge::ROOT, "closeOverride", automerge::ObjType::Map)
        .expect("map");
    doc.put(&over, "reason", "drill over").expect("put");
    doc.commit();
    let violations = incident.enforce(&before, &at("alice", 6), &at("commandpost", 6));
    let rules: Vec<_> = violations.iter().map(|v| v.rule).collect();
    assert_eq!(rules, [Rule::Schema, Rule::ExitCriteria], "{violations:?}");
    assert_eq!(incident.view().headline.status.as_deref(), Some("declared"));
    assert!(
        incident
            .doc()
            .get(automerge::ROOT, "closeOverride")
            .expect("read")
            .is_none()
    );

    // The commander's raw close, with every exit criterion DONE, stands.
    let criteria = match &incident.view().field("exitCriteria").expect("exit").value {
        incident_doc::FieldValue::Checklist(items) => items.clone(),
        other => panic!("exit criteria: {other:?}"),
    };
    for item in criteria {
        let done = Operation::SetItemDone {
            field: "exitCriteria".into(),
            id: item.id,
            done: true,
        };
        incident.apply(&done, &at("alice", 7)).expect("done");
    }
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    doc.put(automerge::ROOT, "status", "closed").expect("put");
    doc.commit();
    assert!(
        incident
            .enforce(&before, &at("alice", 8), &at("commandpost", 8))
            .is_empty()
    );
    assert_eq!(incident.view().headline.status.as_deref(), Some("closed"));
}

/// An entry's author corrects it soon after (rewords or removes it); nobody else does, and after the grace
/// period not even the author: the timeline is the record.
#[test]
fn only_the_author_removes_a_timeline_entry_within_the_grace_period() {
    let mut incident = declare();
    let add = |text: &str| Operation::AddTimelineEntry {
        text: text.into(),
        at: None,
    };
    let remove = |id: &str| Operation::RemoveTimelineEntry { id: id.into() };
    let typo = incident
        .apply(&add("Rolled back teh release"), &at("bob", 10))
        .expect("added")
        .id;
    let typo = typo.expect("an entry id");
    let kept = incident
        .apply(&add("Paged the database team"), &at("bob", 11))
        .expect("added")
        .id;
    let kept = kept.expect("an entry id");
    assert!(matches!(
        incident.apply(&remove(&typo), &at("carol", 12)),
        Err(OpError::Forbidden(_))
    ));
    assert!(incident.apply(&remove(&typo), &at("bob", 13)).is_ok());
    assert!(matches!(
        incident.apply(&remove(&kept), &at("bob", 30)),
        Err(OpError::Forbidden(_))
    ));
    assert!(matches!(
        incident.apply(&remove("1@00"), &at("bob", 13)),
        Err(OpError::UnknownItem { .. })
    ));
    let md = markdown(&incident);
    assert!(
        !md.contains("teh release") && md.contains("Paged the database team"),
        "{md}"
    );
}

fn timeline_texts(incident: &Incident) -> Vec<(String, String)> {
    match &incident.view().field("timeline").expect("timeline").value {
        incident_doc::FieldValue::Timeline(entries) => entries
            .iter()
            .map(|e| (e.author.clone(), e.text.clone()))
            .collect(),
        other => panic!("timeline: {other:?}"),
    }
}

fn assign_commander(person: Option<&str>) -> Operation {
    Operation::AssignRole {
        role: Role::Commander,
        person: person.map(str::to_owned),
    }
}

#[test]
fn a_typo_in_the_commander_box_hands_over_nothing() {
    let mut incident = declare();
    // The commander types "dvae" for "dave": command must not leave her without anyone accepting it.
    match incident.apply(&assign_commander(Some("dvae")), &at("alice", 1)) {
        Err(OpError::Forbidden(message)) => {
            assert!(message.contains("accepted handoff"), "{message}")
        }
        other => panic!("the commander assigning command outright: {other:?}"),
    }
    assert!(matches!(
        incident.apply(&assign_commander(None), &at("alice", 2)),
        Err(OpError::Forbidden(_))
    ));
    assert_eq!(commander(&incident).as_deref(), Some("alice"));
    // Other roles are still the commander's to assign outright.
    incident
        .apply(
            &Operation::AssignRole {
                role: Role::Operations,
                person: Some("bob".into()),
            },
            &at("alice", 3),
        )
        .expect("assign operations");

    // The same typo as a raw change (any automerge-repo client) is put back and audited.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    let (_, roles) = doc
        .get(automerge::ROOT, "roles")
        .expect("read")
        .expect("a roles map");
    doc.put(&roles, "commander", "dvae").expect("put");
    doc.commit();
    let violations = incident.enforce(&before, &at("alice", 4), &at("commandpost", 4));
    assert_eq!(
        violations.iter().map(|v| v.rule).collect::<Vec<_>>(),
        [Rule::CommandHierarchy],
        "{violations:?}"
    );
    assert_eq!(commander(&incident).as_deref(), Some("alice"));
    assert_eq!(incident.view().audit[0].rule, "commandHierarchy");
}

#[test]
fn with_nobody_in_command_anyone_takes_it_for_themselves_on_the_record() {
    let mut incident = declare();
    // A document whose commander was cleared (an older client, say): nobody commands.
    let doc = incident.doc_mut();
    let (_, roles) = doc
        .get(automerge::ROOT, "roles")
        .expect("read")
        .expect("a roles map");
    doc.delete(&roles, "commander").expect("delete");
    doc.commit();
    assert_eq!(commander(&incident), None);

    assert!(matches!(
        incident.apply(&assign_commander(Some("carol")), &at("bob", 1)),
        Err(OpError::Forbidden(_))
    ));
    incident
        .apply(&assign_commander(Some("bob")), &at("bob", 2))
        .expect("bob takes command");
    assert_eq!(commander(&incident).as_deref(), Some("bob"));
    assert!(
        timeline_texts(&incident)
            .contains(&("bob".into(), "bob took command (nobody held it).".into())),
        "{:?}",
        timeline_texts(&incident)
    );
}

#[test]
fn an_administrator_overrides_command_on_the_record() {
    let mut incident = declare();
    incident
        .apply(
            &Operation::ProposeHandoff {
                role: Role::Commander,
                to: "dvae".into(),
            },
            &at("alice", 1),
        )
        .expect("propose");
    let over = |person: &str| Operation::OverrideCommand {
        person: person.into(),
        reason: "alice is unreachable".into(),
    };
    // A writer cannot, however they phrase it.
    assert!(matches!(
        incident.apply(&over("bob"), &at("bob", 2)),
        Err(OpError::Forbidden(_))
    ));
    assert!(matches!(
        incident.apply(
            &Operation::OverrideCommand {
                person: "dave".into(),
                reason: " ".into()
            },
            &at("carol", 2).with_admin(true)
        ),
        Err(OpError::InvalidValue(_))
    ));
    incident
        .apply(&over("dave"), &at("carol", 3).with_admin(true))
        .expect("an administrator overrides");
    assert_eq!(commander(&incident).as_deref(), Some("dave"));
    assert!(
        incident.view().handoffs.is_empty(),
        "the typo'd handoff is moot"
    );
    let text =
        "dave is now the Incident Commander by carol's override (was alice): alice is unreachable";
    assert!(
        timeline_texts(&incident).contains(&("carol".into(), text.into())),
        "{:?}",
        timeline_texts(&incident)
    );
    let audit = incident.view().audit;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (
            audit[0].by.as_str(),
            audit[0].rule.as_str(),
            audit[0].message.as_str()
        ),
        ("carol", "commandOverride", text)
    );
    // The new commander commands.
    incident
        .apply(
            &Operation::Pin {
                field: "summary".into(),
            },
            &at("dave", 4),
        )
        .expect("dave pins");
}

#[test]
fn an_override_written_by_a_client_is_no_override() {
    let mut incident = declare();
    // An administrator's raw change: command to herself, with an audit entry claiming an override.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    let (_, roles) = doc
        .get(automerge::ROOT, "roles")
        .expect("read")
        .expect("a roles map");
    doc.put(&roles, "commander", "carol").expect("put");
    let audit = doc
        .put_object(automerge::ROOT, "audit", automerge::ObjType::List)
        .expect("list");
    let entry = doc
        .insert_object(&audit, 0, automerge::ObjType::Map)
        .expect("map");
    doc.put(&entry, "rule", "commandOverride").expect("put");
    doc.put(&entry, "by", "carol").expect("put");
    doc.commit();
    let violations = incident.enforce(
        &before,
        &at("carol", 5).with_admin(true),
        &at("commandpost", 5),
    );
    assert_eq!(
        violations.iter().map(|v| v.rule).collect::<Vec<_>>(),
        [Rule::Schema, Rule::CommandHierarchy],
        "{violations:?}"
    );
    assert_eq!(commander(&incident).as_deref(), Some("alice"));
    assert!(
        incident
            .view()
            .audit
            .iter()
            .all(|entry| entry.rule != "commandOverride")
    );
}

#[test]
fn a_normal_close_is_recorded_in_the_timeline_as_an_override_close_is() {
    let mut incident = declare();
    all_exit_criteria_done(&mut incident, 1);
    incident
        .apply(&close(None), &at("alice", 2))
        .expect("close");
    let entries = timeline_texts(&incident);
    assert_eq!(
        entries,
        [("alice".to_owned(), "Closed by alice.".to_owned())],
        "one entry, saying who closed it"
    );
}
