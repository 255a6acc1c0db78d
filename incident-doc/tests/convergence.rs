//! Property: replicas that apply random concurrent operations and merge in random orders end with identical
//! documents and byte-identical exports.

use automerge::ActorId;
use chrono::{Duration, TimeZone, Utc};
use incident_doc::schema::{Role, Status};
use incident_doc::template;
use incident_doc::{Declaration, Editor, FieldValue, Incident, OpError, Operation, export};
use proptest::prelude::*;

/// One step of a replica's life: an edit (with its parameters as fractions, resolved against the replica's own
/// state so most edits are valid) or a partial merge from another replica.
#[derive(Debug, Clone)]
enum Step {
    Type {
        replica: usize,
        at: f64,
        delete: usize,
        text: String,
    },
    Timeline {
        replica: usize,
        text: String,
    },
    AddTodo {
        replica: usize,
        text: String,
    },
    Toggle {
        replica: usize,
        which: f64,
        done: bool,
    },
    Severity {
        replica: usize,
        level: usize,
    },
    Assign {
        replica: usize,
        role: usize,
        person: usize,
    },
    Pin {
        replica: usize,
        field: usize,
        pin: bool,
    },
    Status {
        replica: usize,
        status: usize,
    },
    Merge {
        into: usize,
        from: usize,
    },
}

const PEOPLE: [&str; 3] = ["alice", "bob", "carol"];
const PINNABLE: [&str; 4] = ["summary", "exitCriteria", "todos", "severity"];

fn step() -> impl Strategy<Value = Step> {
    let r = 0..3usize;
    prop_oneof![
        4 => (r.clone(), 0.0..1.0f64, 0..3usize, "[a-zé🙂 ]{0,6}")
            .prop_map(|(replica, at, delete, text)| Step::Type { replica, at, delete, text }),
        2 => (r.clone(), "[a-z]{1,8}").prop_map(|(replica, text)| Step::Timeline { replica, text }),
        2 => (r.clone(), "[a-z]{1,8}").prop_map(|(replica, text)| Step::AddTodo { replica, text }),
        2 => (r.clone(), 0.0..1.0f64, any::<bool>()).prop_map(|(replica, which, done)| Step::Toggle { replica, which, done }),
        1 => (r.clone(), 0..4usize).prop_map(|(replica, level)| Step::Severity { replica, level }),
        1 => (r.clone(), 0..5usize, 0..3usize).prop_map(|(replica, role, person)| Step::Assign { replica, role, person }),
        1 => (r.clone(), 0..4usize, any::<bool>()).prop_map(|(replica, field, pin)| Step::Pin { replica, field, pin }),
        1 => (r.clone(), 0..5usize).prop_map(|(replica, status)| Step::Status { replica, status }),
        2 => (r.clone(), r).prop_map(|(into, from)| Step::Merge { into, from }),
    ]
}

fn summary_len(incident: &Incident) -> usize {
    match incident.view().field("summary").map(|f| f.value.clone()) {
        Some(FieldValue::Text(t)) => t.chars().count(),
        _ => 0,
    }
}

fn todo_ids(incident: &Incident) -> Vec<String> {
    match incident.view().field("todos").map(|f| f.value.clone()) {
        Some(FieldValue::Checklist(items)) => items.into_iter().map(|i| i.id).collect(),
        _ => Vec::new(),
    }
}

fn run(steps: &[Step]) -> [Incident; 3] {
    let template = template::builtin().into_iter().next().expect("a template");
    let start = Utc
        .with_ymd_and_hms(2026, 11, 25, 4, 0, 0)
        .single()
        .expect("time");
    let mut origin = Incident::create(
        &template,
        &Declaration {
            name: "Prop".into(),
            number: Some(1),
        },
        &Editor::new("alice", start),
        Some(ActorId::from(b"origin".as_slice())),
    )
    .expect("create");
    let saved = origin.save();
    let mut replicas: [Incident; 3] = std::array::from_fn(|i| {
        let mut r = Incident::load(&saved).expect("load");
        r.doc_mut().set_actor(ActorId::from(vec![b'r', i as u8]));
        r
    });
    for (n, step) in steps.iter().enumerate() {
        let editor = |i: usize| Editor::new(PEOPLE[i], start + Duration::seconds(n as i64));
        let (i, op) = match step.clone() {
            Step::Merge { into, from } => {
                if into != from {
                    let [a, b] = replicas
                        .get_disjoint_mut([into, from])
                        .expect("distinct replicas");
                    a.doc_mut().merge(b.doc_mut()).expect("merge");
                }
                continue;
            }
            Step::Type {
                replica,
                at,
                delete,
                text,
            } => {
                let len = summary_len(&replicas[replica]);
                let pos = ((len as f64) * at) as usize;
                let delete = delete.min(len - pos);
                (
                    replica,
                    Operation::SpliceText {
                        field: "summary".into(),
                        item: None,
                        pos,
                        delete,
                        insert: text,
                    },
                )
            }
            Step::Timeline { replica, text } => {
                (replica, Operation::AddTimelineEntry { text, at: None })
            }
            Step::AddTodo { replica, text } => (
                replica,
                Operation::AddItem {
                    field: "todos".into(),
                    text,
                    owner: None,
                    bug: None,
                },
            ),
            Step::Toggle {
                replica,
                which,
                done,
            } => {
                let ids = todo_ids(&replicas[replica]);
                if ids.is_empty() {
                    continue;
                }
                let id = ids[((ids.len() as f64) * which) as usize].clone();
                (
                    replica,
                    Operation::SetItemDone {
                        field: "todos".into(),
                        id,
                        done,
                    },
                )
            }
            Step::Severity { replica, level } => (
                replica,
                Operation::SetChoice {
                    field: "severity".into(),
                    value: Some(format!("SEV{}", level + 1)),
                },
            ),
            Step::Assign {
                replica,
                role,
                person,
            } => (
                replica,
                Operation::AssignRole {
                    role: Role::ALL[role],
                    person: Some(PEOPLE[person].into()),
                },
            ),
            Step::Pin {
                replica,
                field,
                pin,
            } => {
                let field = PINNABLE[field].to_owned();
                (
                    replica,
                    if pin {
                        Operation::Pin { field }
                    } else {
                        Operation::Unpin { field }
                    },
                )
            }
            Step::Status { replica, status } => (
                replica,
                Operation::SetStatus {
                    status: Status::ALL[status],
                    override_reason: None,
                },
            ),
        };
        // A command rule may refuse a step (a backwards status, a role change by someone not in command on that
        // replica), and a closed incident refuses every edit; refused steps change nothing, and the replicas must
        // converge all the same.
        match replicas[i].apply(&op, &editor(i)) {
            Ok(_) | Err(OpError::Forbidden(_) | OpError::Archived) => {}
            Err(e) => panic!("generated operations are valid: {e}"),
        }
    }
    // Full exchange, each replica merging the others in its own order.
    for (into, order) in [(0, [1, 2]), (1, [2, 0]), (2, [0, 1])] {
        for from in order {
            let [a, b] = replicas.get_disjoint_mut([into, from]).expect("distinct");
            a.doc_mut().merge(b.doc_mut()).expect("merge");
        }
    }
    // The first replica merged before the others had everything; one more round settles it.
    let [a, b, _] = &mut replicas;
    a.doc_mut().merge(b.doc_mut()).expect("merge");
    replicas
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_to_identical_exports(steps in proptest::collection::vec(step(), 1..40)) {
        let mut replicas = run(&steps);
        let heads: Vec<_> = replicas.iter_mut().map(|r| r.doc_mut().get_heads()).collect();
        prop_assert_eq!(&heads[0], &heads[1]);
        prop_assert_eq!(&heads[1], &heads[2]);
        let views: Vec<_> = replicas.iter().map(Incident::view).collect();
        for v in &views[1..] {
            prop_assert_eq!(v, &views[0]);
            prop_assert_eq!(export::markdown(v), export::markdown(&views[0]));
            prop_assert_eq!(export::html(v), export::html(&views[0]));
            prop_assert_eq!(export::json(v), export::json(&views[0]));
        }
    }
}

#[test]
fn concurrent_typing_in_one_summary_keeps_both_edits() {
    let steps = [
        Step::Type {
            replica: 0,
            at: 0.0,
            delete: 0,
            text: "hello".into(),
        },
        Step::Type {
            replica: 1,
            at: 0.0,
            delete: 0,
            text: "world".into(),
        },
    ];
    let replicas = run(&steps);
    let Some(FieldValue::Text(text)) = replicas[2].view().field("summary").map(|f| f.value.clone())
    else {
        panic!("summary text");
    };
    assert!(text.contains("hello") && text.contains("world"), "{text}");
    assert_eq!(text.chars().count(), 10);
}
