//! Replay drills in the model: the schedule read from a closed incident (entries at their offsets from the
//! declaration, alerts found in the history), steps delivered once and in order, only by the server, and a raw
//! `/sync` write to the server-owned `replay` key put back.

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use chrono::Duration;
use incident_doc::replay::{Step, compare};
use incident_doc::schema::{SERVER_NAME, Status};
use incident_doc::{Editor, Incident, OpError, Operation};

mod common;

use common::{at, t0};

fn declare(template_id: &str, name: &str, by: &str, minutes: i64) -> Incident {
    common::declare_from(&common::builtin(template_id), name, 12, &at(by, minutes))
}

/// A closed incident: two entries, an alert firing and resolving, a mitigation and a close.
fn source() -> Incident {
    let mut incident = declare("incident", "Checkout errors", "alice", 0);
    let ops = [
        (
            "alice",
            3,
            Operation::AddTimelineEntry {
                text: "Error rate up on checkout".into(),
                at: None,
            },
        ),
        (
            "alertmanager",
            5,
            Operation::RecordAlert {
                fingerprint: "f00d".into(),
                firing: true,
                starts_at: t0() + Duration::minutes(4),
                text: "[FIRING] CheckoutErrors".into(),
                at: t0() + Duration::minutes(4),
            },
        ),
        (
            "alice",
            6,
            Operation::SetText {
                field: "summary".into(),
                text: "Checkout failed for a third of users.".into(),
            },
        ),
        (
            "alice",
            20,
            Operation::SetStatus {
                status: Status::Mitigated,
                override_reason: None,
            },
        ),
        (
            "alertmanager",
            21,
            Operation::RecordAlert {
                fingerprint: "f00d".into(),
                firing: false,
                starts_at: t0() + Duration::minutes(4),
                text: "[RESOLVED] CheckoutErrors".into(),
                at: t0() + Duration::minutes(21),
            },
        ),
        (
            "alice",
            30,
            Operation::SetStatus {
                status: Status::Closed,
                override_reason: Some("practice source".into()),
            },
        ),
    ];
    for (who, minutes, op) in ops {
        incident.apply(&op, &at(who, minutes)).expect("source edit");
    }
    incident
}

fn server(minutes: i64) -> Editor {
    at(SERVER_NAME, minutes)
}

fn drill(steps: u32) -> Incident {
    let mut drill = declare("drill", "Replay of #12", "carol", 60);
    drill
        .apply(
            &Operation::BeginReplay {
                source: "src".into(),
                source_number: Some(12),
                speed: 10.0,
                total: steps,
            },
            &server(60),
        )
        .expect("begin");
    drill
}

#[test]
fn the_schedule_has_every_entry_at_its_offset_and_the_alerts_found_in_history() {
    let mut incident = source();
    let schedule = incident.replay_schedule();
    assert_eq!(schedule.origin, t0());
    let offsets: Vec<i64> = schedule.steps.iter().map(|s| s.offset_ms).collect();
    // The entry, the alert firing (dated its start), the resolution, then the close's override entry.
    assert_eq!(offsets, vec![180_000, 240_000, 1_260_000, 1_800_000]);
    assert_eq!(schedule.steps[0].author, "alice");
    assert_eq!(schedule.steps[0].alert, None);
    let firing = schedule.steps[1].alert.as_ref().expect("an alert step");
    assert_eq!(
        (
            firing.fingerprint.as_str(),
            firing.firing,
            firing.started_before_ms
        ),
        ("f00d", true, 0)
    );
    let resolved = schedule.steps[2].alert.as_ref().expect("an alert step");
    assert!(!resolved.firing);
    assert_eq!(resolved.started_before_ms, 17 * 60_000);
    assert_eq!(schedule.steps[1].author, "alertmanager");
}

#[test]
fn steps_are_delivered_once_in_order_and_only_by_the_server() {
    let steps = source().replay_schedule().steps;
    let mut drill = drill(steps.len() as u32);
    let deliver = |n: u32, step: &Step| Operation::DeliverReplayStep {
        step: n,
        entry: step.clone(),
    };
    // Nobody but the server, not even the drill's commander.
    assert!(matches!(
        drill.apply(&deliver(1, &steps[0]), &at("carol", 61)),
        Err(OpError::Forbidden(_))
    ));
    // Out of order: refused, nothing changes.
    let heads = drill.doc_mut().get_heads();
    assert!(drill.apply(&deliver(2, &steps[1]), &server(61)).is_err());
    assert_eq!(drill.doc_mut().get_heads(), heads);
    drill.apply(&deliver(1, &steps[0]), &server(61)).expect("1");
    // Twice: refused.
    assert!(drill.apply(&deliver(1, &steps[0]), &server(61)).is_err());
    drill.apply(&deliver(2, &steps[1]), &server(62)).expect("2");
    let replay = drill.replay().expect("a replay");
    assert_eq!((replay.step, replay.total), (2, 4));
    let markdown = incident_doc::export::markdown(&drill.view());
    assert!(markdown.contains("alice (replayed): Error rate up on checkout"));
    assert!(markdown.contains("alertmanager (replayed): [FIRING] CheckoutErrors"));
    assert!(
        markdown.contains("replays incident #12 at ×10: 2 of 4"),
        "{markdown}"
    );
    let json = serde_json::to_value(drill.view()).expect("json");
    assert_eq!(json["replay"]["step"], 2);
    // The alert is recorded as the hook records it.
    assert!(drill.doc().get(ROOT, "alerts").expect("read").is_some());
    // Beyond the last step: refused.
    drill.apply(&deliver(3, &steps[2]), &server(63)).expect("3");
    drill.apply(&deliver(4, &steps[3]), &server(64)).expect("4");
    assert!(drill.apply(&deliver(5, &steps[3]), &server(65)).is_err());
    let postmortem = incident_doc::export::postmortem(&drill.view(), &drill.record(None));
    assert!(
        postmortem.contains("replays incident #12 at ×10: 4 of 4"),
        "{postmortem}"
    );
}

#[test]
fn a_begin_needs_the_server_a_good_speed_and_no_replay_yet() {
    let mut drill = declare("drill", "Replay", "carol", 60);
    let begin = |speed: f64| Operation::BeginReplay {
        source: "src".into(),
        source_number: None,
        speed,
        total: 1,
    };
    assert!(matches!(
        drill.apply(&begin(2.0), &at("carol", 60)),
        Err(OpError::Forbidden(_))
    ));
    for bad in [0.0, 0.49, 100.5, f64::NAN, 1.234] {
        assert!(drill.apply(&begin(bad), &server(60)).is_err(), "{bad}");
    }
    drill.apply(&begin(0.5), &server(60)).expect("begin");
    assert!(drill.apply(&begin(2.0), &server(60)).is_err());
}

#[test]
fn a_raw_write_to_the_replay_key_is_put_back() {
    let mut drill = drill(4);
    for who in ["mallory", "carol"] {
        let before = drill.doc_mut().get_heads();
        let doc = drill.doc_mut();
        let replay = doc.put_object(ROOT, "replay", ObjType::Map).expect("put");
        doc.put(&replay, "source", "forged").expect("put");
        doc.put(&replay, "speedCenti", 10_000_i64).expect("put");
        doc.put(&replay, "step", 3_i64).expect("put");
        doc.put(&replay, "total", 4_i64).expect("put");
        doc.commit();
        let violations = drill.enforce(&before, &at(who, 65), &server(65));
        assert!(!violations.is_empty(), "{who}");
        let replay = drill.replay().expect("still a replay");
        assert_eq!((replay.source.as_str(), replay.step), ("src", 0), "{who}");
    }
}

#[test]
fn the_comparison_sets_the_drill_beside_its_source() {
    let mut original = source();
    let mut drill = drill(4);
    drill
        .apply(
            &Operation::SetText {
                field: "summary".into(),
                text: "Checkout down for some users.".into(),
            },
            &at("carol", 61),
        )
        .expect("summary");
    drill
        .apply(
            &Operation::SetStatus {
                status: Status::Mitigated,
                override_reason: None,
            },
            &at("carol", 62),
        )
        .expect("mitigate");
    let comparison = compare(&mut drill, &mut original).expect("a replay");
    assert_eq!(
        comparison.original.declared_to_mitigated_seconds,
        Some(1200)
    );
    assert_eq!(comparison.drill.declared_to_mitigated_seconds, Some(120));
    assert_eq!(
        comparison.drill_declared_to_mitigated_at_source_pace_seconds,
        Some(1200)
    );
    assert_eq!(comparison.drill.summary, "Checkout down for some users.");
    assert_eq!(
        comparison.original.summary,
        "Checkout failed for a third of users."
    );
    assert_eq!(comparison.original.commanders, vec!["alice".to_owned()]);
    assert!(compare(&mut source(), &mut drill).is_none());
}
