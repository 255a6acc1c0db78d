//! The command rules of the Incident Command System, checked on every change whichever way it arrives.
//!
//! - Only the current commander changes the command hierarchy (the roles field and planned handoffs) and the pins;
//!   the one exception is the named recipient accepting a handoff addressed to them. The holder of a role may also
//!   propose or cancel its handoff.
//! - The status moves forward along the lifecycle (declared → active → mitigated → resolved → closed), or back to
//!   active when the impact returns; never out of closed.
//! - Nobody edits another person's timeline entry once [`EDIT_GRACE`] has passed since it was written.
//! - An incident closes only with every exit criterion DONE, or with an override whose reason is recorded
//!   (the `closeOverride` root key, and a timeline entry when it is done through an operation).
//! - A closed incident is an archive: no change at all (reopening is an administrator's action over HTTP).
//!
//! Typed operations (HTTP, the browser client) are checked before they commit and refused with
//! [`OpError::Forbidden`](crate::OpError::Forbidden). Raw Automerge changes (any automerge-repo client over
//! `/sync`) cannot be refused once merged, so the server checks them after merging and reverts what breaks a rule
//! in a change of its own, recording the attempt in the document's audit trail ([`Incident::enforce`]).
//!
//! [`Incident::enforce`]: crate::Incident::enforce

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::operation::open_exit_criteria;
use crate::read::Reader;
use crate::schema::{FieldDef, FieldKind, Role, Status, keys};

/// How long the author alone may still reword a timeline entry before it becomes everyone's record.
pub const EDIT_GRACE: Duration = Duration::minutes(5);

/// Which rule a change broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// The roles or the planned handoffs changed, by someone who may not change them.
    CommandHierarchy,
    /// The pins changed, by someone other than the commander.
    Pins,
    /// The status moved backwards.
    Lifecycle,
    /// Someone else's timeline entry was reworded after the grace period.
    TimelineEdit,
    /// The incident was closed with exit criteria still open and no override reason.
    ExitCriteria,
    /// The incident is closed: its document is an archive and takes no edits (an admin reopens it over HTTP).
    Archived,
}

/// One broken rule, with words for the person who broke it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// What was refused and why.
    pub message: String,
}

/// The parts of the document the rules read, at one moment.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct CommandState {
    /// Role → person, for the assigned roles.
    pub roles: BTreeMap<Role, String>,
    /// Role → the person a handoff of it is proposed to.
    pub handoffs: BTreeMap<Role, String>,
    /// Pins in pin order: (field key, who pinned it, when).
    pub pins: Vec<(String, Option<String>, Option<DateTime<Utc>>)>,
    /// The lifecycle state.
    pub status: Option<Status>,
    /// Timeline entries by id: (author, time, text). Read only when the timeline changed.
    pub entries: BTreeMap<String, (String, DateTime<Utc>, String)>,
    /// The exit criteria not yet DONE.
    pub open_exit_criteria: Vec<String>,
    /// The reason given for closing with exit criteria open, if the incident was closed that way.
    pub close_override: Option<String>,
}

impl CommandState {
    /// Reads the state at `heads` (`None`: now); the timeline only if `with_timeline`.
    pub(crate) fn read<D: ReadDoc>(
        doc: &D,
        layout: &[FieldDef],
        heads: Option<&[ChangeHash]>,
        with_timeline: bool,
    ) -> CommandState {
        let r = Reader::new(doc, heads);
        let field = |kind: FieldKind| layout.iter().find(|f| f.kind == kind);
        let mut state = CommandState::default();
        if let Some(roles) = field(FieldKind::Roles).and_then(|def| r.map(&ROOT, def.key.as_str()))
        {
            state.roles = read_roles(&r, &roles, None);
        }
        if let Some(handoffs) = r.map(&ROOT, keys::HANDOFFS) {
            state.handoffs = read_roles(&r, &handoffs, Some("to"));
        }
        if let Some(pins) = r.list(&ROOT, keys::PINS) {
            for pin in r.maps_in(&pins) {
                if let Some(key) = r.str(&pin, "field")
                    && !state.pins.iter().any(|(k, _, _)| *k == key)
                {
                    state
                        .pins
                        .push((key, r.str(&pin, "by"), r.time(&pin, "at")));
                }
            }
        }
        state.status = field(FieldKind::Status)
            .and_then(|def| r.str(&ROOT, def.key.as_str()))
            .and_then(|s| s.parse().ok());
        state.open_exit_criteria = open_exit_criteria(&r, layout);
        state.close_override = r
            .map(&ROOT, keys::CLOSE_OVERRIDE)
            .and_then(|over| r.str(&over, "reason"))
            .filter(|reason| !reason.trim().is_empty());
        if with_timeline
            && let Some(list) =
                field(FieldKind::Timeline).and_then(|def| r.list(&ROOT, def.key.as_str()))
        {
            for entry in r.maps_in(&list) {
                if let (Some(id), Some(author), Some(at)) = (
                    r.str(&entry, "id"),
                    r.str(&entry, "author"),
                    r.time(&entry, "at"),
                ) {
                    let text = r.text(&entry, "text").unwrap_or_default();
                    state.entries.insert(id, (author, at, text));
                }
            }
        }
        state
    }

    /// The commander, if assigned.
    pub(crate) fn commander(&self) -> Option<&str> {
        self.roles.get(&Role::Commander).map(String::as_str)
    }

    /// Who holds `role`: its assignee, or the commander for an undelegated role.
    fn holder(&self, role: Role) -> Option<&str> {
        match self.roles.get(&role) {
            Some(person) => Some(person),
            None if role.defaults_to_commander() => self.commander(),
            None => None,
        }
    }
}

/// Role → person from a map whose values are names (the roles field) or maps with a name under `inner`.
fn read_roles<D: ReadDoc>(
    r: &Reader<'_, D>,
    map: &ObjId,
    inner: Option<&str>,
) -> BTreeMap<Role, String> {
    Role::ALL
        .iter()
        .filter_map(|role| {
            let person = match inner {
                None => r.str(map, role.as_str()),
                Some(key) => r.map(map, role.as_str()).and_then(|m| r.str(&m, key)),
            };
            Some((*role, person?))
        })
        .collect()
}

/// The rules `who` broke by turning `before` into `after` at `now`; empty when the change is allowed.
pub(crate) fn check(
    before: &CommandState,
    after: &CommandState,
    who: &str,
    now: DateTime<Utc>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let commander = before.commander();
    // With nobody in command, anyone may take it: an incident must never be left without a way to assign roles.
    let is_commander = commander.is_none_or(|c| c == who);

    // A role change is the commander's, or the named recipient accepting: the role becomes theirs and the
    // handoff addressed to them goes away.
    let accepting = |role: &Role| {
        before.handoffs.get(role).map(String::as_str) == Some(who)
            && after.roles.get(role).map(String::as_str) == Some(who)
            && !after.handoffs.contains_key(role)
    };
    let changed_roles: BTreeSet<Role> = changed_keys(&before.roles, &after.roles);
    let changed_handoffs: BTreeSet<Role> = changed_keys(&before.handoffs, &after.handoffs);
    let refused_roles: Vec<Role> = changed_roles
        .iter()
        .filter(|role| !is_commander && !accepting(role))
        .copied()
        .collect();
    let refused_handoffs: Vec<Role> = changed_handoffs
        .iter()
        .filter(|role| {
            let proposer = before.holder(**role) == Some(who) && after.roles == before.roles;
            !is_commander && !proposer && !accepting(role)
        })
        .copied()
        .collect();
    if !refused_roles.is_empty() || !refused_handoffs.is_empty() {
        let roles: BTreeSet<&str> = refused_roles
            .iter()
            .chain(&refused_handoffs)
            .map(|r| r.label())
            .collect();
        violations.push(Violation {
            rule: Rule::CommandHierarchy,
            message: format!(
                "only the Incident Commander ({}) changes the command hierarchy; {who} may not change {}",
                commander.unwrap_or("nobody yet"),
                roles.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }

    let pinned = |state: &CommandState| {
        state
            .pins
            .iter()
            .map(|(k, _, _)| k.clone())
            .collect::<Vec<_>>()
    };
    if pinned(before) != pinned(after) && !is_commander {
        violations.push(Violation {
            rule: Rule::Pins,
            message: format!(
                "only the Incident Commander ({}) pins fields; {who} may not",
                commander.unwrap_or("nobody yet")
            ),
        });
    }

    if let (Some(from), Some(to)) = (before.status, after.status)
        && !lifecycle_allows(from, to)
    {
        violations.push(Violation {
            rule: Rule::Lifecycle,
            message: format!(
                "the status moves forward (declared → active → mitigated → resolved → closed), or back to active \
                 when the impact returns; not from {from} to {to}"
            ),
        });
    }

    let closing = after.status == Some(Status::Closed) && before.status != Some(Status::Closed);
    let overridden =
        after.close_override.is_some() && after.close_override != before.close_override;
    if closing && !after.open_exit_criteria.is_empty() && !overridden {
        violations.push(Violation {
            rule: Rule::ExitCriteria,
            message: format!(
                "closing needs every exit criterion DONE; still open: {}. Mark them done, or close with an \
                 override reason for the timeline",
                after.open_exit_criteria.join("; ")
            ),
        });
    }

    for (id, (author, at, text)) in &before.entries {
        let reworded = after
            .entries
            .get(id)
            .is_some_and(|(_, _, now_text)| now_text != text);
        if reworded && author != who && now - *at > EDIT_GRACE {
            violations.push(Violation {
                rule: Rule::TimelineEdit,
                message: format!(
                    "the timeline entry {id} is {author}'s and older than {} minutes; add a new entry instead",
                    EDIT_GRACE.num_minutes()
                ),
            });
        }
    }
    violations
}

/// Forward along the lifecycle, or back to active from mitigated or resolved (the impact returned). A closed
/// incident is an archive: reopening it is an administrator's action, not an edit.
fn lifecycle_allows(from: Status, to: Status) -> bool {
    to >= from || (to == Status::Active && from != Status::Closed)
}

/// The keys whose values differ between two maps.
fn changed_keys<K: Ord + Copy, V: PartialEq>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
) -> BTreeSet<K> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(k) != b.get(k))
        .copied()
        .collect()
}

/// Puts back, in the open transaction of `doc`, what the violations changed: the roles and handoffs, the pins, the
/// status, reworded entries' text, each as it was in `before`. Other parts of the same change stay.
pub(crate) fn revert(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    before: &CommandState,
    violations: &[Violation],
) -> Result<(), automerge::AutomergeError> {
    let field = |kind: FieldKind| {
        layout
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.key.clone())
    };
    let rules: BTreeSet<Rule> = violations.iter().map(|v| v.rule).collect();
    if rules.contains(&Rule::CommandHierarchy) {
        // Key by key in the existing maps, so that concurrent changes elsewhere in them survive.
        if let Some(key) = field(FieldKind::Roles) {
            let roles = map_at_root(doc, &key)?;
            for role in Role::ALL {
                match before.roles.get(role) {
                    Some(person) => doc.put(&roles, role.as_str(), person.as_str())?,
                    None => delete_if_present(doc, &roles, role.as_str())?,
                }
            }
        }
        let handoffs = map_at_root(doc, keys::HANDOFFS)?;
        for role in Role::ALL {
            match before.handoffs.get(role) {
                Some(to) => {
                    let handoff = doc.put_object(&handoffs, role.as_str(), ObjType::Map)?;
                    doc.put(&handoff, "to", to.as_str())?;
                }
                None => delete_if_present(doc, &handoffs, role.as_str())?,
            }
        }
    }
    if rules.contains(&Rule::Pins) {
        let pins = match doc.get(ROOT, keys::PINS)? {
            Some((automerge::Value::Object(ObjType::List), pins)) => {
                for i in (0..doc.length(&pins)).rev() {
                    doc.delete(&pins, i)?;
                }
                pins
            }
            _ => doc.put_object(ROOT, keys::PINS, ObjType::List)?,
        };
        for (i, (key, by, at)) in before.pins.iter().enumerate() {
            let pin = doc.insert_object(&pins, i, ObjType::Map)?;
            doc.put(&pin, "field", key.as_str())?;
            if let Some(by) = by {
                doc.put(&pin, "by", by.as_str())?;
            }
            if let Some(at) = at {
                doc.put(&pin, "at", ScalarValue::Timestamp(at.timestamp_millis()))?;
            }
        }
    }
    if (rules.contains(&Rule::Lifecycle) || rules.contains(&Rule::ExitCriteria))
        && let (Some(key), Some(status)) = (field(FieldKind::Status), before.status)
    {
        doc.put(ROOT, key.as_str(), status.as_str())?;
    }
    if rules.contains(&Rule::TimelineEdit) {
        for (id, (_, _, text)) in &before.entries {
            if let Ok((entry, ObjType::Map)) = doc.import(id)
                && let Ok(Some((automerge::Value::Object(ObjType::Text), t))) =
                    doc.get(&entry, "text")
                && doc.text(&t).is_ok_and(|now| now != *text)
            {
                doc.update_text(&t, text)?;
            }
        }
    }
    Ok(())
}

/// The map at root key `key`, created if the document lacks it (or holds something else there).
fn map_at_root(doc: &mut AutoCommit, key: &str) -> Result<ObjId, automerge::AutomergeError> {
    match doc.get(ROOT, key)? {
        Some((automerge::Value::Object(ObjType::Map), map)) => Ok(map),
        _ => doc.put_object(ROOT, key, ObjType::Map),
    }
}

fn delete_if_present(
    doc: &mut AutoCommit,
    map: &ObjId,
    key: &str,
) -> Result<(), automerge::AutomergeError> {
    if doc.get(map, key)?.is_some() {
        doc.delete(map, key)?;
    }
    Ok(())
}

/// The violation of changing a closed incident.
pub(crate) fn archived_violation(who: &str) -> Violation {
    Violation {
        rule: Rule::Archived,
        message: format!(
            "this incident is closed and archived: {who}'s change was undone (an admin can reopen it)"
        ),
    }
}

/// Puts root key `key` back to its value at `heads`, whatever it holds: a scalar as it was, an object rebuilt from
/// its content then (the archive's content is what matters, not its object ids), an absent key deleted.
pub(crate) fn restore(
    doc: &mut AutoCommit,
    key: &str,
    heads: &[ChangeHash],
) -> Result<(), automerge::AutomergeError> {
    match doc.get_at(ROOT, key, heads)? {
        None => delete_if_present(doc, &ROOT, key),
        Some((automerge::Value::Scalar(value), _)) => doc.put(ROOT, key, value.into_owned()),
        Some((automerge::Value::Object(kind), old)) => {
            let new = doc.put_object(ROOT, key, kind)?;
            copy_object(doc, &old, &new, kind, heads)
        }
    }
}

/// Copies object `from` as it was at `heads` into the empty object `to` of the same kind.
fn copy_object(
    doc: &mut AutoCommit,
    from: &ObjId,
    to: &ObjId,
    kind: ObjType,
    heads: &[ChangeHash],
) -> Result<(), automerge::AutomergeError> {
    match kind {
        ObjType::Text => {
            let text = doc.text_at(from, heads)?;
            doc.splice_text(to, 0, 0, &text)
        }
        ObjType::Map | ObjType::Table => {
            let entries: Vec<(String, automerge::Value<'static>, ObjId)> = doc
                .map_range_at(from, .., heads)
                .map(|item| {
                    let id = item.id();
                    (item.key.to_string(), item.value.into_value(), id)
                })
                .collect();
            for (key, value, id) in entries {
                match value {
                    automerge::Value::Scalar(v) => doc.put(to, key.as_str(), v.into_owned())?,
                    automerge::Value::Object(child_kind) => {
                        let child = doc.put_object(to, key.as_str(), child_kind)?;
                        copy_object(doc, &id, &child, child_kind, heads)?;
                    }
                }
            }
            Ok(())
        }
        ObjType::List => {
            let items: Vec<(automerge::Value<'static>, ObjId)> = doc
                .list_range_at(from, .., heads)
                .map(|item| {
                    let id = item.id();
                    (item.value.into_value(), id)
                })
                .collect();
            for (index, (value, id)) in items.into_iter().enumerate() {
                match value {
                    automerge::Value::Scalar(v) => doc.insert(to, index, v.into_owned())?,
                    automerge::Value::Object(child_kind) => {
                        let child = doc.insert_object(to, index, child_kind)?;
                        copy_object(doc, &id, &child, child_kind, heads)?;
                    }
                }
            }
            Ok(())
        }
    }
}
