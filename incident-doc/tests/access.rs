//! Restricted incidents in the model: the security template declares restricted, who is a member, and that only
//! the commander or an administrator changes the restriction and the added members, by typed operation or raw
//! change alike.

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use incident_doc::schema::Role;
use incident_doc::{Incident, OpError, Operation};

mod common;

use common::at;

fn declare(template_id: &str) -> Incident {
    common::declare(template_id, "Leaked key", 1)
}

fn timeline(incident: &Incident) -> String {
    incident_doc::export::markdown(&incident.view())
}

#[test]
fn the_security_template_declares_restricted_and_others_open() {
    let mut security = declare("security");
    let access = security.access();
    assert!(access.restricted);
    assert_eq!(access.members, vec!["alice".to_owned()]);
    assert!(access.allows("alice", false));
    assert!(!access.allows("bob", false));
    assert!(access.allows("root", true));
    let mut open = declare("incident");
    assert!(!open.access().restricted);
    assert!(open.access().allows("bob", false));
}

#[test]
fn members_are_the_declarer_the_role_holders_and_the_added() {
    let mut incident = declare("security");
    let assign = Operation::AssignRole {
        role: Role::Operations,
        person: Some("olga".into()),
    };
    incident.apply(&assign, &at("alice", 1)).expect("assign");
    let add = Operation::AddMember {
        person: "bob".into(),
    };
    incident.apply(&add, &at("alice", 2)).expect("add");
    // Adding twice changes nothing.
    incident.apply(&add, &at("alice", 3)).expect("add again");
    let propose = Operation::ProposeHandoff {
        role: Role::Communications,
        to: "carol".into(),
    };
    incident.apply(&propose, &at("alice", 3)).expect("propose");
    let access = incident.access();
    assert_eq!(access.added, vec!["bob".to_owned()]);
    // Carol is being handed a role: she must see the incident to accept it.
    assert_eq!(access.members, vec!["alice", "bob", "carol", "olga"]);
    let md = timeline(&incident);
    assert_eq!(
        md.matches("alice added bob to the incident's members.")
            .count(),
        1
    );

    let remove = |person: &str| Operation::RemoveMember {
        person: person.into(),
    };
    incident
        .apply(&remove("bob"), &at("alice", 4))
        .expect("remove");
    assert!(!incident.access().allows("bob", false));
    assert!(timeline(&incident).contains("alice removed bob from the incident's members."));
    // A role holder is a member by the role, not by being added.
    assert!(matches!(
        incident.apply(&remove("olga"), &at("alice", 5)),
        Err(OpError::InvalidValue(_))
    ));
}

#[test]
fn only_the_commander_or_an_administrator_changes_access() {
    let mut incident = declare("incident");
    let restrict = Operation::SetRestricted { restricted: true };
    assert!(matches!(
        incident.apply(&restrict, &at("mallory", 1)),
        Err(OpError::Forbidden(_))
    ));
    assert!(matches!(
        incident.apply(
            &Operation::AddMember {
                person: "mallory".into()
            },
            &at("mallory", 1)
        ),
        Err(OpError::Forbidden(_))
    ));
    assert!(!incident.access().restricted);
    let mut admin = at("root", 2);
    admin.admin = true;
    incident
        .apply(&restrict, &admin)
        .expect("an admin restricts");
    assert!(incident.access().restricted);
    assert!(timeline(&incident).contains("root restricted the incident to its members"));
    incident
        .apply(
            &Operation::SetRestricted { restricted: false },
            &at("alice", 3),
        )
        .expect("the commander opens it");
    assert!(timeline(&incident).contains("alice opened the incident to everyone."));
}

#[test]
fn a_raw_change_of_access_by_anyone_else_is_put_back() {
    let mut incident = declare("security");
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    let (_, access) = doc.get(ROOT, "access").expect("read").expect("access");
    doc.put(&access, "restricted", false).expect("put");
    let (_, members) = doc.get(&access, "members").expect("read").expect("members");
    doc.insert(&members, 0, "mallory").expect("insert");
    doc.commit();
    let violations = incident.enforce(&before, &at("mallory", 5), &at("commandpost", 5));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(incident.view().audit[0].rule, "access");
    let access = incident.access();
    assert!(access.restricted);
    assert!(access.added.is_empty());

    // The commander's own raw change stands.
    let before = incident.doc_mut().get_heads();
    let doc = incident.doc_mut();
    let (_, access) = doc.get(ROOT, "access").expect("read").expect("access");
    let (_, members) = doc.get(&access, "members").expect("read").expect("members");
    doc.insert(&members, 0, "bob").expect("insert");
    doc.commit();
    assert!(
        incident
            .enforce(&before, &at("alice", 6), &at("commandpost", 6))
            .is_empty()
    );
    assert!(incident.access().allows("bob", false));
}
