//! Who may see an incident: an incident is open to everyone who may read incidents, or restricted to its members
//! (root key [`keys::ACCESS`]). The members are the declarer, whoever holds a role (or is being handed one: they
//! must see the incident to accept), and the people the commander added; administrators see every incident. The server answers everyone else as if the incident did not exist,
//! and keeps [`Access::members`] in its index so that listings filter without loading documents.
//!
//! The restriction and the added members change only through the commander's (or an administrator's) typed
//! operations (`setRestricted`, `addMember`, `removeMember`), each recorded in the timeline; the command rules
//! put back a raw change by anyone else ([`crate::rules`]).

use std::collections::BTreeSet;

use automerge::{ROOT, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::incident::Incident;
use crate::read::Reader;
use crate::schema::{FieldKind, keys};
use crate::view::{FieldValue, read_value};

/// Who may see an incident, as the document says now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Whether only members (and administrators) may see it.
    pub restricted: bool,
    /// The people the commander added, in the order they were added.
    pub added: Vec<String>,
    /// Everyone who is a member: the declarer, the role holders, the recipients of pending handoffs and the added
    /// people, sorted, each once.
    pub members: Vec<String>,
}

impl Access {
    /// Whether `name` (an administrator when `admin`) may see the incident.
    pub fn allows(&self, name: &str, admin: bool) -> bool {
        !self.restricted || admin || self.members.iter().any(|m| m == name)
    }
}

/// The restriction and the added members as written (the part of [`Access`] the command rules guard).
pub(crate) fn read_access<D: ReadDoc>(r: &Reader<'_, D>) -> (bool, Vec<String>) {
    match r.map(&ROOT, keys::ACCESS) {
        Some(access) => (
            r.bool(&access, "restricted").unwrap_or(false),
            r.list(&access, "members")
                .map(|list| r.strings_in(&list))
                .unwrap_or_default(),
        ),
        None => (false, Vec::new()),
    }
}

impl Incident {
    /// Whether the incident is restricted and whom the commander added, as written: what changes only by the
    /// commander's or an administrator's hand, and what the server's audit log records changes of. One lookup of a
    /// root key for an open incident.
    pub fn restriction(&self) -> (bool, Vec<String>) {
        read_access(&Reader::new(self.doc(), None))
    }

    /// Who may see the incident now: cheap enough to read after every change (a few keys), which is how the server
    /// keeps its index and its live connections in step with the document.
    pub fn access(&mut self) -> Access {
        let layout = self.take_layout();
        let r = Reader::new(self.doc(), None);
        let (restricted, added) = read_access(&r);
        let mut members: BTreeSet<String> = added.iter().cloned().collect();
        members.extend(r.str(&ROOT, keys::CREATED_BY));
        if let Some(def) = layout.iter().find(|d| d.kind == FieldKind::Roles)
            && let FieldValue::Roles(roles) = read_value(&r, def)
        {
            members.extend(roles.into_values());
        }
        // Whoever a role is being handed to must see the incident to accept it.
        if let Some(handoffs) = r.map(&ROOT, keys::HANDOFFS) {
            for role in r.keys(&handoffs) {
                members.extend(
                    r.map(&handoffs, role.as_str())
                        .and_then(|h| r.str(&h, "to")),
                );
            }
        }
        self.keep_layout(layout);
        Access {
            restricted,
            added,
            members: members.into_iter().collect(),
        }
    }
}
