//! What the fuzz targets share: the server replica a fuzzed sync message is fed to, built the same way every run
//! so that seeds written by `write-seeds` keep applying to it (same actor, same times, so the same change hashes).

use automerge::ActorId;
use chrono::{DateTime, TimeZone, Utc};
use incident_doc::schema::Role;
use incident_doc::template::builtin;
use incident_doc::{DEFAULT_TEMPLATE, Declaration, Editor, Incident, Operation};

/// The person the server replica's commander is: the peer sending fuzzed messages is someone else, so the command
/// rules have something to refuse.
pub const COMMANDER: &str = "alice";

/// Whose changes the fuzzed sync messages are (a write token that is not the commander).
pub const PEER: &str = "mallory";

/// The name the server reverts rule-breaking changes under, as the real server does.
pub const SERVER: &str = "commandpost";

/// A fixed moment, so the replica's changes hash the same every run.
pub fn moment() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7)
        .single()
        .unwrap_or_default()
}

/// A declared incident with a commander, a summary and a timeline entry, as the server would hold it.
pub fn server_replica() -> Incident {
    let template = builtin()
        .into_iter()
        .find(|t| t.id == DEFAULT_TEMPLATE)
        .expect("the default template is built in");
    let alice = Editor::new(COMMANDER, moment());
    let declaration = Declaration {
        name: "Checkout errors".to_owned(),
        number: Some(7),
    };
    let actor = ActorId::from(&b"commandpost-fuzz-server"[..]);
    let mut incident = Incident::create(&template, &declaration, &alice, Some(actor))
        .expect("declaring the incident");
    let setup = [
        Operation::AssignRole {
            role: Role::Commander,
            person: Some(COMMANDER.to_owned()),
        },
        Operation::SpliceText {
            field: "summary".to_owned(),
            item: None,
            pos: 0,
            delete: 0,
            insert: "Payments fail for 5% of users.".to_owned(),
        },
        Operation::AddTimelineEntry {
            text: "Paged the payments team.".to_owned(),
            at: None,
        },
    ];
    incident
        .apply_all(&setup, &alice)
        .expect("setting the incident up");
    incident
}
