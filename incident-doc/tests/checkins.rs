//! The commander's check-ins in the model: the template's `reconsider=` and `help-flag`, the reconsider prompt
//! answered by the commander (due again after the interval, in the timeline), help flags raised and cleared by their
//! person or cleared by the commander (each in the timeline and an event), everyone else refused, raw changes of
//! either key put back (the keys are the server's), and the postmortem's "Check-ins" line.

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use chrono::Duration;
use incident_doc::checkins::HelpState;
use incident_doc::signals::{Event, events};
use incident_doc::{Incident, OpError, Operation, Template, template};

mod common;

use common::{at, markdown, t0};

fn declare_from(template: &Template) -> Incident {
    common::declare_from(template, "Checkout errors", 465, &at("alice", 0))
}

fn declare() -> Incident {
    common::declare("incident", "Checkout errors", 465)
}

fn reconsider(note: &str) -> Operation {
    Operation::Reconsider { note: note.into() }
}

fn help(state: Option<HelpState>, person: Option<&str>) -> Operation {
    Operation::SetHelp {
        state,
        person: person.map(str::to_owned),
    }
}

#[test]
fn templates_turn_check_ins_on_and_bad_intervals_are_refused() {
    let incident = template::builtin()
        .into_iter()
        .find(|t| t.id == "incident")
        .expect("incident");
    assert_eq!(incident.checkins.reconsider_minutes, Some(30));
    assert!(incident.checkins.help_flag);
    let src = |attrs: &str| {
        format!(
            "# T\n<!-- commandpost {attrs} -->\n\n## Title\n<!-- commandpost key=title kind=text -->\n"
        )
    };
    let parsed = Template::parse("t", "t.md", &src("reconsider=1h")).expect("valid");
    assert_eq!(parsed.checkins.reconsider_minutes, Some(60));
    assert!(!parsed.checkins.help_flag);
    for bad in ["reconsider=often", "reconsider=0m", "reconsider"] {
        let err = Template::parse("t", "t.md", &src(bad)).expect_err(bad);
        assert!(err.to_string().contains("t.md:"), "{err}");
    }
    // A template with neither writes no `checkins` key: its documents are as they were.
    let plain = Template::parse("t", "t.md", &src("")).expect("valid");
    assert_eq!(declare_from(&plain).view().checkins, None);
    assert!(matches!(
        declare_from(&plain).apply(&reconsider("fine"), &at("alice", 1)),
        Err(OpError::InvalidValue(_))
    ));
}

#[test]
fn the_commander_answers_the_reconsider_prompt_and_it_falls_due_again() {
    let mut incident = declare();
    let view = incident.view();
    let checkins = view.checkins.expect("check-ins");
    assert_eq!(
        checkins.reconsider_due_at,
        Some(t0() + Duration::minutes(30))
    );
    assert_eq!(checkins.reconsiderations, 0);

    incident
        .apply(
            &reconsider("  Still right: the rollback is the fastest path.  "),
            &at("alice", 31),
        )
        .expect("the commander answers");
    let checkins = incident.view().checkins.expect("check-ins");
    assert_eq!(checkins.reconsiderations, 1);
    assert_eq!(
        checkins.reconsider_due_at,
        Some(t0() + Duration::minutes(61))
    );
    let last = checkins.reconsidered.expect("answer");
    assert_eq!(
        (last.by.as_str(), last.note.as_str()),
        ("alice", "Still right: the rollback is the fastest path.")
    );
    assert!(markdown(&incident).contains(
        "alice reconsidered the approach: Still right: the rollback is the fastest path."
    ));

    // Not the commander, not two lines, not empty.
    assert!(matches!(
        incident.apply(&reconsider("switch to plan B"), &at("bob", 32)),
        Err(OpError::Forbidden(_))
    ));
    for bad in ["", "   ", "one\ntwo"] {
        assert!(matches!(
            incident.apply(&reconsider(bad), &at("alice", 32)),
            Err(OpError::InvalidValue(_))
        ));
    }
    assert_eq!(
        incident
            .view()
            .checkins
            .expect("check-ins")
            .reconsiderations,
        1
    );

    // Resolved: nobody is asked any more.
    incident
        .apply(
            &Operation::SetStatus {
                status: incident_doc::schema::Status::Resolved,
                override_reason: None,
            },
            &at("alice", 40),
        )
        .expect("resolve");
    assert_eq!(
        incident
            .view()
            .checkins
            .expect("check-ins")
            .reconsider_due_at,
        None
    );
}

#[test]
fn a_person_raises_and_clears_their_own_flag_and_the_commander_clears_any() {
    let mut incident = declare();
    let before = incident.signals();
    incident
        .apply(&help(Some(HelpState::Overloaded), None), &at("bob", 1))
        .expect("bob raises his own flag");
    let raised = incident.signals();
    assert_eq!(
        events(&before, &raised),
        vec![Event::HelpFlag {
            person: "bob".into(),
            state: Some(HelpState::Overloaded)
        }]
    );
    let checkins = incident.view().checkins.expect("check-ins");
    let flags: Vec<(&str, HelpState)> = checkins.raised().collect();
    assert_eq!(flags, vec![("bob", HelpState::Overloaded)]);
    assert!(markdown(&incident).contains("Help flag: bob is overloaded."));

    // The same state again writes nothing.
    let heads = incident.doc_mut().get_heads();
    incident
        .apply(
            &help(Some(HelpState::Overloaded), Some("bob")),
            &at("bob", 2),
        )
        .expect("again");
    assert_eq!(incident.doc_mut().get_heads(), heads);

    // Nobody raises or clears someone else's, but the commander clears one.
    for (op, who) in [
        (help(Some(HelpState::Help), Some("carol")), "bob"),
        (help(None, Some("bob")), "carol"),
        (help(Some(HelpState::Help), Some("bob")), "alice"),
    ] {
        assert!(
            matches!(incident.apply(&op, &at(who, 3)), Err(OpError::Forbidden(_))),
            "{who}: {op:?}"
        );
    }
    incident
        .apply(&help(None, Some("bob")), &at("alice", 4))
        .expect("the commander clears bob's flag");
    assert!(markdown(&incident).contains("Help flag: alice cleared bob's flag."));
    assert_eq!(
        events(&raised, &incident.signals()),
        vec![Event::HelpFlag {
            person: "bob".into(),
            state: None
        }]
    );
    incident
        .apply(&help(Some(HelpState::Help), None), &at("bob", 5))
        .expect("raised again");
    incident
        .apply(&help(None, None), &at("bob", 6))
        .expect("and cleared by bob");
    assert!(markdown(&incident).contains("Help flag: bob cleared their flag."));
    let checkins = incident.view().checkins.expect("check-ins");
    assert_eq!(checkins.raised().count(), 0);
    assert_eq!(checkins.help["bob"].raised, 2);

    incident
        .apply(&reconsider("Keep going."), &at("alice", 7))
        .expect("reconsider");
    let postmortem = incident_doc::export::postmortem(&incident.view(), &incident.record(None));
    assert!(
        postmortem.contains(
            "**Check-ins:** the approach was reconsidered 1 time; help flags were raised by bob (2)."
        ),
        "{postmortem}"
    );

    // The JSON form.
    let op: Operation =
        serde_json::from_str(r#"{"op": "setHelp", "state": "help"}"#).expect("JSON");
    assert_eq!(op, help(Some(HelpState::Help), None));
    assert!(serde_json::from_str::<Operation>(r#"{"op": "setHelp"}"#).is_err());
    assert!(serde_json::from_str::<Operation>(r#"{"op": "setHelp", "state": "panic"}"#).is_err());
}

#[test]
fn raw_changes_of_the_check_ins_are_put_back() {
    let mut incident = declare();
    incident
        .apply(&help(Some(HelpState::Help), None), &at("bob", 1))
        .expect("bob raises");
    let markdown_before = markdown(&incident);
    for who in ["mallory", "alice", "bob"] {
        let before = incident.doc_mut().get_heads();
        let doc = incident.doc_mut();
        // Clear bob's flag, raise carol's, and forge an answer to the prompt.
        let help = match doc.get(ROOT, "help").expect("get") {
            Some((_, help)) => help,
            None => panic!("help key"),
        };
        doc.delete(&help, "bob").expect("delete");
        let carol = doc.put_object(&help, "carol", ObjType::Map).expect("put");
        doc.put(&carol, "state", "overloaded").expect("put");
        let checkins = match doc.get(ROOT, "checkins").expect("get") {
            Some((_, checkins)) => checkins,
            None => panic!("checkins key"),
        };
        doc.put(&checkins, "reconsiderations", 7_i64).expect("put");
        doc.commit();
        let violations = incident.enforce(&before, &at(who, 5), &at("commandpost", 5));
        assert!(!violations.is_empty(), "{who}");
        let checkins = incident.view().checkins.expect("check-ins");
        let flags: Vec<(&str, HelpState)> = checkins.raised().collect();
        assert_eq!(flags, vec![("bob", HelpState::Help)], "{who}");
        assert_eq!(checkins.reconsiderations, 0, "{who}");
    }
    let after: String = markdown(&incident);
    assert_eq!(after, markdown_before);
}
