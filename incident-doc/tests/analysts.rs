//! The analyst's side of the model: the archive rule and reopening, the document at a past moment, the change
//! history, role intervals, the facts row with its CSV form, and the postmortem draft (golden file
//! `tests/golden/postmortem.md`; `UPDATE_GOLDEN=1` rewrites it).

use std::path::Path;

use automerge::transaction::Transactable;
use automerge::{ActorId, ROOT};
use chrono::{DateTime, Duration, TimeZone, Utc};
use incident_doc::analytics::{self, Facts, Filter};
use incident_doc::schema::{Role, Stage, Status};
use incident_doc::template::{self, Template};
use incident_doc::{Declaration, Editor, FieldValue, Incident, OpError, Operation, export};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 3, 58, 0)
        .single()
        .expect("valid time")
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn template(id: &str) -> Template {
    template::builtin()
        .into_iter()
        .find(|t| t.id == id)
        .expect("built-in template")
}

fn declare(template_id: &str) -> Incident {
    Incident::create(
        &template(template_id),
        &Declaration {
            name: "Checkout errors".into(),
            number: Some(465),
        },
        &Editor::new("alice", t0()),
        Some(ActorId::from(b"0123456789abcdef".as_slice())),
    )
    .expect("create")
}

fn apply(incident: &mut Incident, who: &str, minutes: i64, op: Operation) -> Option<String> {
    incident
        .apply(&op, &Editor::new(who, at(minutes)))
        .unwrap_or_else(|e| panic!("{op:?} by {who}: {e}"))
        .id
}

fn set_text(field: &str, text: &str) -> Operation {
    Operation::SetText {
        field: field.into(),
        text: text.into(),
    }
}

fn stamp(stage: Stage, minutes: i64) -> Operation {
    Operation::SetTimestamp {
        stage,
        at: Some(at(minutes)),
    }
}

fn assign(role: Role, person: &str) -> Operation {
    Operation::AssignRole {
        role,
        person: Some(person.into()),
    }
}

fn propose_command(to: &str) -> Operation {
    Operation::ProposeHandoff {
        role: Role::Commander,
        to: to.into(),
    }
}

fn accept_command() -> Operation {
    Operation::AcceptHandoff {
        role: Role::Commander,
    }
}

/// A whole response, closed: impact 03:41, detected 03:49, declared 03:58, mitigated 04:23, resolved 05:10,
/// closed 06:00; command passes alice → bob → carol.
fn closed_incident() -> Incident {
    let mut incident = declare("incident");
    let ops = [
        ("alice", 1, stamp(Stage::ImpactStarted, -17)),
        ("alice", 1, stamp(Stage::Detected, -9)),
        (
            "alice",
            2,
            set_text("summary", "Checkout fails for about 30% of EU customers."),
        ),
        (
            "alice",
            2,
            Operation::SetChoice {
                field: "severity".into(),
                value: Some("SEV2".into()),
            },
        ),
        (
            "alice",
            3,
            Operation::SetStatus {
                status: Status::Active,
                override_reason: None,
            },
        ),
        ("alice", 3, assign(Role::Operations, "bob")),
        (
            "pagerbot",
            4,
            Operation::AddTimelineEntry {
                text: "Alert firing: CheckoutErrorRate (eu-west-1)".into(),
                at: Some(at(-9)),
            },
        ),
        (
            "alice",
            5,
            Operation::AddTimelineEntry {
                text: "Declared; I command.".into(),
                at: Some(at(0)),
            },
        ),
        (
            "dave",
            20,
            set_text(
                "detailedStatus",
                "Rolled back release 2026.11.24-3.\n\nWatching error rates.",
            ),
        ),
        ("alice", 21, propose_command("bob")),
        ("bob", 22, accept_command()),
        (
            "bob",
            24,
            Operation::AddTimelineEntry {
                text: "Rollback done | errors falling.".into(),
                at: None,
            },
        ),
        (
            "bob",
            25,
            Operation::SetStatus {
                status: Status::Mitigated,
                override_reason: None,
            },
        ),
        (
            "bob",
            30,
            Operation::AddItem {
                field: "todos".into(),
                text: "Alert on provider timeouts".into(),
                owner: Some("bob".into()),
                bug: Some("BUG-1234".into()),
            },
        ),
        (
            "bob",
            31,
            Operation::AddItem {
                field: "todos".into(),
                text: "Canary the payments client".into(),
                owner: None,
                bug: None,
            },
        ),
        ("bob", 59, propose_command("carol")),
        ("carol", 60, accept_command()),
        (
            "carol",
            72,
            Operation::SetStatus {
                status: Status::Resolved,
                override_reason: None,
            },
        ),
        (
            "carol",
            75,
            Operation::Answer {
                field: "declaration".into(),
                question: "customerVisible".into(),
                value: Some(true),
            },
        ),
    ];
    for (who, minutes, op) in ops {
        apply(&mut incident, who, minutes, op);
    }
    let view = incident.view();
    let Some(FieldValue::Checklist(exit)) = view.field("exitCriteria").map(|f| f.value.clone())
    else {
        panic!("exit criteria");
    };
    for item in exit {
        apply(
            &mut incident,
            "carol",
            100,
            Operation::SetItemDone {
                field: "exitCriteria".into(),
                id: item.id,
                done: true,
            },
        );
    }
    let Some(FieldValue::Checklist(todos)) = view.field("todos").map(|f| f.value.clone()) else {
        panic!("todos");
    };
    apply(
        &mut incident,
        "carol",
        101,
        Operation::SetItemDone {
            field: "todos".into(),
            id: todos[0].id.clone(),
            done: true,
        },
    );
    apply(
        &mut incident,
        "carol",
        122,
        Operation::SetStatus {
            status: Status::Closed,
            override_reason: None,
        },
    );
    incident
}

#[test]
fn a_closed_incident_accepts_nothing_but_a_reopening() {
    let mut incident = closed_incident();
    assert!(incident.archived());
    let heads = incident.doc_mut().get_heads();
    for op in [
        set_text("summary", "rewritten"),
        Operation::AddTimelineEntry {
            text: "late note".into(),
            at: None,
        },
        Operation::SetStatus {
            status: Status::Active,
            override_reason: None,
        },
    ] {
        let err = incident
            .apply(&op, &Editor::new("carol", at(130)))
            .expect_err("an archived document refuses edits");
        assert_eq!(err, OpError::Archived);
        assert_eq!(incident.doc_mut().get_heads(), heads, "{op:?} changed it");
    }
    let reopen = Operation::Reopen {
        reason: "customer reports again".into(),
        status: Some(Status::Active),
    };
    // A reopening must come alone.
    let batch = [reopen.clone(), set_text("summary", "x")];
    assert_eq!(
        incident.apply_all(&batch, &Editor::new("admin", at(131))),
        Err(OpError::Archived)
    );
    assert_eq!(incident.doc_mut().get_heads(), heads);

    let entry = apply(&mut incident, "admin", 132, reopen.clone());
    assert!(!incident.archived());
    let view = incident.view();
    assert_eq!(view.headline.status.as_deref(), Some("active"));
    let Some(FieldValue::Timeline(entries)) = view.field("timeline").map(|f| &f.value) else {
        panic!("timeline");
    };
    let recorded = entries
        .iter()
        .find(|e| Some(&e.id) == entry.as_ref())
        .expect("the reopening is in the timeline");
    assert_eq!(recorded.author, "admin");
    assert_eq!(recorded.text, "Reopened (active): customer reports again");
    let Some(FieldValue::Timestamps(stamps)) = view.field("lifecycle").map(|f| &f.value) else {
        panic!("lifecycle");
    };
    assert!(
        !stamps.contains_key(&Stage::Closed),
        "the next close records its own time"
    );
    // Editable again; reopening an open incident is refused.
    apply(&mut incident, "carol", 133, set_text("summary", "Again."));
    assert_eq!(
        incident.apply(&reopen, &Editor::new("admin", at(134))),
        Err(OpError::NotArchived)
    );
    apply(
        &mut incident,
        "carol",
        140,
        Operation::SetStatus {
            status: Status::Closed,
            override_reason: None,
        },
    );
    let view = incident.view();
    let Some(FieldValue::Timestamps(stamps)) = view.field("lifecycle").map(|f| &f.value) else {
        panic!("lifecycle");
    };
    assert_eq!(stamps.get(&Stage::Closed), Some(&at(140)));
}

#[test]
fn the_document_reads_as_it_was_at_any_moment() {
    let mut incident = declare("incident");
    apply(&mut incident, "bob", 10, set_text("summary", "First"));
    apply(&mut incident, "bob", 20, set_text("summary", "Second"));
    let summary_at = |incident: &mut Incident, when: DateTime<Utc>| {
        let heads = incident.heads_at(when)?;
        match incident
            .view_at(&heads)
            .field("summary")
            .map(|f| f.value.clone())
        {
            Some(FieldValue::Text(t)) => Some(t),
            _ => None,
        }
    };
    assert_eq!(summary_at(&mut incident, at(-1)), None, "before creation");
    assert_eq!(summary_at(&mut incident, at(0)).as_deref(), Some(""));
    assert_eq!(summary_at(&mut incident, at(10)).as_deref(), Some("First"));
    assert_eq!(
        summary_at(&mut incident, at(19) + Duration::seconds(59)).as_deref(),
        Some("First")
    );
    assert_eq!(
        summary_at(&mut incident, at(500)).as_deref(),
        Some("Second")
    );
    let mut now = incident.doc_mut().get_heads();
    now.sort();
    assert_eq!(incident.heads_at(at(500)), Some(now));
}

#[test]
fn history_names_authors_and_fields_and_says_when_it_cannot() {
    let mut incident = declare("incident");
    apply(&mut incident, "bob", 1, set_text("summary", "Broken."));
    apply(
        &mut incident,
        "alice",
        2,
        Operation::Pin {
            field: "summary".into(),
        },
    );
    // Another Automerge client's change, under an actor the authorship record does not know, claiming in its
    // commit message to be bob's: its author is unknown, whatever it says.
    let doc = incident.doc_mut();
    doc.set_actor(automerge::ActorId::random());
    doc.put(ROOT, "severity", "SEV1").expect("raw put");
    doc.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_time(at(3).timestamp())
            .with_message(r#"{"by":"bob","op":"setChoice","fields":[]}"#),
    );

    let page = incident.history(0, 10);
    assert_eq!(page.total, 4);
    let summary: Vec<_> = page
        .changes
        .iter()
        .map(|c| (c.by.as_deref(), c.op.as_deref(), c.fields.join(",")))
        .collect();
    assert_eq!(summary[1], (Some("bob"), Some("setText"), "summary".into()));
    assert_eq!(summary[2], (Some("alice"), Some("pin"), "pins".into()));
    assert_eq!(summary[3], (None, Some("setChoice"), "severity".into()));
    assert!(!page.changes[3].attributed);
    assert_eq!(page.changes[3].at, Some(at(3)));
    assert_eq!(page.changes[0].op.as_deref(), Some("create"));
    assert!(page.changes[0].fields.contains(&"timeline".to_owned()));

    let second = incident.history(2, 1);
    assert_eq!((second.total, second.offset), (4, 2));
    assert_eq!(second.changes, page.changes[2..3]);
    assert!(incident.history(4, 10).changes.is_empty());
}

#[test]
fn role_intervals_and_handoffs_come_from_history() {
    let mut incident = closed_incident();
    let record = incident.record(None);
    let commanders: Vec<_> = record
        .commanders()
        .map(|s| (s.person.as_str(), s.from, s.to))
        .collect();
    assert_eq!(
        commanders,
        [
            ("alice", t0(), Some(at(22))),
            ("bob", at(22), Some(at(60))),
            ("carol", at(60), None)
        ]
    );
    assert_eq!(record.handoffs(), 2);
    assert_eq!(record.distinct_commanders(), ["alice", "bob", "carol"]);
    assert_eq!(record.unattributed, 0);
    // At an earlier moment, only what had happened by then.
    let heads = incident.heads_at(at(30)).expect("existed");
    let then = incident.record(Some(&heads));
    assert_eq!(then.handoffs(), 1);
    assert_eq!(then.commanders().last().map(|s| s.to), Some(None));
    assert_eq!(
        then.responders(&incident.view_at(&heads)),
        ["alice", "bob", "dave", "pagerbot"]
    );
}

#[test]
fn facts_measure_named_pairs_of_timestamps() {
    let mut incident = closed_incident();
    let view = incident.view();
    let record = incident.record(None);
    let facts = Facts::new("doc1", &view, &record);
    assert_eq!(facts.time_to_detect_seconds, Some(8 * 60));
    assert_eq!(facts.time_to_declare_seconds, Some(17 * 60));
    assert_eq!(facts.time_to_mitigate_seconds, Some(42 * 60));
    assert_eq!(facts.time_to_resolve_seconds, Some(89 * 60));
    assert_eq!(facts.incident_duration_seconds, Some(122 * 60));
    assert_eq!((facts.handoffs, facts.distinct_commanders), (2, 3));
    assert_eq!(
        facts.responder_names,
        ["alice", "bob", "carol", "dave", "pagerbot"]
    );
    assert_eq!((facts.todos_open, facts.todos_done), (1, 1));
    assert_eq!(
        (
            facts.exit_criteria_done,
            facts.exit_criteria_total,
            facts.exit_criteria_met
        ),
        (2, 2, true)
    );
    assert_eq!(
        facts.timeline_entries, 6,
        "three written, two handoffs, the close"
    );
    assert_eq!(facts.tags, ["customerVisible"]);
    assert_eq!(facts.severity.as_deref(), Some("SEV2"));

    let csv = analytics::csv(std::slice::from_ref(&facts));
    let mut lines = csv.split("\r\n");
    assert_eq!(lines.next(), Some(analytics::COLUMNS.join(",").as_str()));
    let row = lines.next().expect("one row");
    let version = template("incident").version;
    assert!(row.starts_with(&format!(
        "doc1,465,Checkout errors: 2026-11-25,incident,{version},SEV2,closed,false,2026-11-25T03:41:00.000Z,"
    )));
    assert!(row.contains(",2520,"), "time to mitigate in seconds: {row}");
    assert!(row.ends_with(",true,0,0,0,0,0,customerVisible"), "{row}");
    let line = analytics::jsonl(std::slice::from_ref(&facts));
    let parsed: Facts = serde_json::from_str(line.trim_end()).expect("a JSON line");
    // The role intervals ride along for the role rotation but are no column.
    assert!(!facts.roles.is_empty());
    assert_eq!(
        parsed,
        Facts {
            roles: Vec::new(),
            ..facts
        }
    );
}

#[test]
fn drills_are_left_out_unless_asked_for() {
    let mut drill = declare("drill");
    let view = drill.view();
    let facts = Facts::new("d", &view, &drill.record(None));
    assert!(facts.drill);
    assert!(facts.time_to_mitigate_seconds.is_none());
    assert!(!Filter::default().accepts(&facts));
    let with_drills = Filter {
        include_drills: true,
        ..Filter::default()
    };
    assert!(with_drills.accepts(&facts));
    let later = Filter {
        include_drills: true,
        from: Some(at(1)),
        ..Filter::default()
    };
    assert!(!later.accepts(&facts));
}

#[test]
fn postmortem_draft_matches_golden_file() {
    let mut incident = closed_incident();
    let view = incident.view();
    let record = incident.record(None);
    check_golden("postmortem.md", &export::postmortem(&view, &record));
    // A freshly declared incident still gives a complete draft with every prompt.
    let mut fresh = declare("security");
    let draft = export::postmortem(&fresh.view(), &fresh.record(None));
    for heading in [
        "## Summary",
        "## Impact",
        "## Root causes",
        "## Trigger",
        "## Resolution",
        "## Detection",
        "## Action items",
        "## Lessons learned",
        "## Timeline",
        "## Command",
    ] {
        assert!(draft.contains(heading), "{heading} missing:\n{draft}");
    }
    check_golden("postmortem-fresh.md", &draft);
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs; UPDATE_GOLDEN=1 rewrites it"
    );
}
