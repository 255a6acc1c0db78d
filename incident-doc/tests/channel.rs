//! Binding an incident to a chat channel in the model: the commander or an administrator binds and unbinds by typed
//! operation, each in the timeline; anyone else is refused; a raw change of the key is put back, the commander's
//! too (the key is the server's: channels are checked by the server, which keeps one open incident per channel).

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT};
use incident_doc::channel::{Channel, Network};
use incident_doc::{Incident, OpError, Operation};

mod common;

use common::{at, markdown};

fn declare() -> Incident {
    common::declare("incident", "Checkout errors", 465)
}

fn bind_irc(name: &str) -> Operation {
    Operation::BindChannel {
        network: Network::Irc,
        name: name.into(),
        id: None,
    }
}

#[test]
fn the_commander_binds_and_unbinds_with_timeline_entries() {
    let mut incident = declare();
    assert_eq!(incident.channel(), None);
    incident
        .apply(&bind_irc("#inc-465-checkout"), &at("alice", 1))
        .expect("bind");
    assert_eq!(
        incident.channel(),
        Some(Channel {
            network: Network::Irc,
            name: "#inc-465-checkout".into(),
            id: None
        })
    );
    assert!(
        markdown(&incident)
            .contains("alice bound the incident to the channel #inc-465-checkout (IRC).")
    );
    // Binding the same channel again writes nothing.
    let heads = incident.doc_mut().get_heads();
    incident
        .apply(&bind_irc("#inc-465-checkout"), &at("alice", 2))
        .expect("again");
    assert_eq!(incident.doc_mut().get_heads(), heads);

    let slack = Operation::BindChannel {
        network: Network::Slack,
        name: "#inc-465-checkout".into(),
        id: Some("C0123ABCD".into()),
    };
    incident.apply(&slack, &at("alice", 3)).expect("rebind");
    assert_eq!(
        incident.channel().map(|c| c.address().to_owned()),
        Some("C0123ABCD".into())
    );
    incident
        .apply(&Operation::UnbindChannel {}, &at("alice", 4))
        .expect("unbind");
    assert_eq!(incident.channel(), None);
    assert!(
        markdown(&incident)
            .contains("alice unbound the incident from the channel #inc-465-checkout (Slack).")
    );
}

#[test]
fn others_are_refused_and_bad_names_never_reach_the_document() {
    let mut incident = declare();
    assert!(matches!(
        incident.apply(&bind_irc("#mallory"), &at("mallory", 1)),
        Err(OpError::Forbidden(_))
    ));
    for bad in ["#a b", "#x\r\nQUIT", "nohash", ""] {
        assert!(matches!(
            incident.apply(&bind_irc(bad), &at("alice", 1)),
            Err(OpError::InvalidValue(_))
        ));
    }
    assert_eq!(incident.channel(), None);
    let mut admin = at("root", 2);
    admin.admin = true;
    incident
        .apply(&bind_irc("#ops"), &admin)
        .expect("an admin binds");
    assert!(matches!(
        incident.apply(&Operation::UnbindChannel {}, &at("mallory", 3)),
        Err(OpError::Forbidden(_))
    ));
    assert!(incident.channel().is_some());
    // The operation's JSON form.
    let op: Operation = serde_json::from_str(
        r##"{"op": "bindChannel", "network": "slack", "name": "inc-1", "id": "C0123ABCD"}"##,
    )
    .expect("JSON");
    assert!(matches!(
        op,
        Operation::BindChannel {
            network: Network::Slack,
            ..
        }
    ));
    assert!(
        serde_json::from_str::<Operation>(
            r#"{"op": "bindChannel", "network": "xmpp", "name": "x"}"#
        )
        .is_err()
    );
}

#[test]
fn a_raw_change_of_the_channel_is_put_back() {
    let mut incident = declare();
    incident
        .apply(&bind_irc("#inc-465-checkout"), &at("alice", 1))
        .expect("bind");
    for who in ["mallory", "alice"] {
        let before = incident.doc_mut().get_heads();
        let doc = incident.doc_mut();
        let channel = doc
            .put_object(ROOT, "chatChannel", ObjType::Map)
            .expect("put");
        doc.put(&channel, "network", "irc").expect("put");
        doc.put(&channel, "name", "#elsewhere").expect("put");
        doc.commit();
        let violations = incident.enforce(&before, &at(who, 5), &at("commandpost", 5));
        assert!(!violations.is_empty(), "{who}");
        assert_eq!(
            incident.channel().map(|c| c.name),
            Some("#inc-465-checkout".into()),
            "{who}"
        );
    }
}
