//! The command rules of the Incident Command System, checked on every change whichever way it arrives.
//!
//! - Only the current commander changes the command hierarchy (the roles field and planned handoffs) and the pins;
//!   the one exception is the named recipient accepting a handoff addressed to them. The holder of a role may also
//!   propose or cancel its handoff.
//! - Command itself changes hands only by an accepted handoff, never by a keystroke: the commander cannot assign it
//!   outright (a typo would lock everyone out). While nobody commands, anyone may take it for themselves; and an
//!   administrator may override it, which the server alone records ([`COMMAND_OVERRIDE`] in the audit trail, for
//!   the HTTP `overrideCommand` operation).
//! - The status moves forward along the lifecycle (declared → active → mitigated → resolved → closed), or back to
//!   active when the impact returns; never out of closed.
//! - The timeline is append-only: a new entry is its sender's (its `author`) and carries its own object id as `id`;
//!   nobody changes an entry's `id`, `author` or `at`, and only its author rewords or removes it, within
//!   [`EDIT_GRACE`] of its time.
//! - Whatever names a person (a pin's `by`, a handoff's `by`, a timeline entry's `author`) names the sender.
//! - Closing is a command decision: the commander (or an administrator) closes. It needs every exit criterion
//!   DONE, or an override whose reason is recorded (the server writes the `closeOverride` root key, and a timeline
//!   entry, for the `setStatus` operation's `overrideReason`).
//! - Who may see a restricted incident (root key `access`: the restriction and the members the commander added) is
//!   the commander's or an administrator's to change.
//! - The chat channel bound to the incident (root key `chatChannel`) is the commander's or an administrator's to
//!   change.
//! - The commander's check-ins ([`crate::checkins`]): only the commander answers the reconsider prompt, in their
//!   own name; a person raises or clears only their own help flag, and the commander may clear anyone's.
//! - A closed incident is an archive: no change at all (reopening is an administrator's action over HTTP).
//! - The server owns the schema: what creation writes never changes, what only the server writes (the audit
//!   trail, the authorship record, …) and root keys outside the schema are refused from clients
//!   ([`client_writable`]).
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

pub use crate::edit::FUTURE_SKEW;
use crate::edit::{Editor, closing_blockers};
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
    /// Someone other than the commander or an administrator closed the incident.
    Closing,
    /// A root key the server owns (written at creation or only by the server) or one outside the schema changed.
    Schema,
    /// Something written in a change names someone other than its sender (a stamp, pin, handoff, timeline entry),
    /// or a change came under an Automerge actor the server recorded for someone else.
    Authorship,
    /// The restriction or the added members changed, by someone other than the commander or an administrator.
    Access,
    /// The chat channel changed, by someone other than the commander or an administrator.
    Channel,
    /// A deviation was removed from the revert list, its reverting undone or misdated, or its `id`, `by` or `at`
    /// changed.
    Deviations,
    /// The operations log was rewritten (its entries are never changed or removed), an entry's uncoordinated mark
    /// is not the server's verdict, or the delegations were changed by someone who does not hold Operations.
    Operations,
    /// The reconsider prompt was answered by someone other than the commander, or a help flag was raised or
    /// cleared by someone other than its person (a commander may clear one).
    CheckIn,
}

/// The `rule` of the audit entry an administrator's override of command writes: not a broken rule but the record
/// that lets command change hands without a handoff. Only the server writes the audit trail, so a client cannot
/// claim one.
pub const COMMAND_OVERRIDE: &str = "commandOverride";

/// The root keys a client may change: the template's fields and the maps people edit beside them (stamps, pins,
/// handoffs, access; the command rules judge who). Everything else is written at creation or only by the server, or is not part of the schema.
pub fn client_writable(layout: &[FieldDef], key: &str) -> bool {
    [
        keys::UPDATED,
        keys::PINS,
        keys::HANDOFFS,
        keys::ACCESS,
        keys::OPERATIONS_DELEGATES,
    ]
    .contains(&key)
        || layout.iter().any(|f| f.key == key)
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
    /// Role → who proposed its handoff, as written.
    pub handoff_by: BTreeMap<Role, String>,
    /// Pins in pin order: (field key, who pinned it, when).
    pub pins: Vec<(String, Option<String>, Option<DateTime<Utc>>)>,
    /// The lifecycle state.
    pub status: Option<Status>,
    /// Timeline entries by their Automerge object (the `id` field is the entry's to keep, not to trust). Read only
    /// when a log (the timeline, the revert list, the operations log) changed, as are the next two.
    pub entries: BTreeMap<ObjId, EntryState>,
    /// The revert list's deviations (their author under `by`), by their Automerge object.
    pub deviations: BTreeMap<ObjId, EntryState>,
    /// The operations log's entries (their author under `by`), by their Automerge object.
    pub changes: BTreeMap<ObjId, EntryState>,
    /// What keeps the incident from closing: the exit criteria not yet DONE and the deviations not reverted.
    pub open_exit_criteria: Vec<String>,
    /// The people the Operations lead delegated changes to production to.
    pub delegates: Vec<String>,
    /// The reason given for closing with exit criteria open, if the incident was closed that way.
    pub close_override: Option<String>,
    /// How many overrides of command the audit trail records: one more after a change is an administrator's
    /// override, which may change the commander.
    pub command_overrides: usize,
    /// Whether the incident is restricted, and the members the commander added, as written.
    pub access: (bool, Vec<String>),
    /// The chat channel bound to the incident.
    pub channel: Option<crate::channel::Channel>,
    /// The last answer to the reconsider prompt (who) and how many there were.
    pub reconsidered: (Option<String>, i64),
    /// Person → their help flag's state, for everyone who ever raised one.
    pub help: BTreeMap<String, Option<crate::checkins::HelpState>>,
}

/// One timeline entry as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EntryState {
    /// Its position in the list, to put a removed entry back where it was.
    pub index: usize,
    /// The `id`, `author` and `at` fields, which never change once written.
    pub id: Option<String>,
    pub author: Option<String>,
    pub at: Option<DateTime<Utc>>,
    /// Every other field (the text first of all), rendered for comparison: only the author changes them.
    pub content: BTreeMap<String, String>,
    /// A deviation's reverting: who and when, which never change once written.
    pub reverted: (Option<String>, Option<DateTime<Utc>>),
    /// An operations log entry's uncoordinated mark, as written.
    pub uncoordinated: Option<bool>,
}

/// The fields of a log entry that are not its content: the fixed ones and those the rules read apart.
const ENTRY_KEYS: [&str; 7] = [
    "id",
    "author",
    "by",
    "at",
    "revertedBy",
    "revertedAt",
    "uncoordinated",
];

/// The entries of the log field of `kind` (timeline, deviations, changes), by their Automerge object; `author` is
/// the key naming who wrote each.
fn read_entries<D: ReadDoc>(
    r: &Reader<'_, D>,
    layout: &[FieldDef],
    kind: FieldKind,
    author: &str,
) -> BTreeMap<ObjId, EntryState> {
    let Some(list) = layout
        .iter()
        .find(|f| f.kind == kind)
        .and_then(|def| r.list(&ROOT, def.key.as_str()))
    else {
        return BTreeMap::new();
    };
    r.maps_in(&list)
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let content = r
                .keys(&entry)
                .into_iter()
                .filter(|key| !ENTRY_KEYS.contains(&key.as_str()))
                .map(|key| {
                    let value = r.render(&entry, key.as_str());
                    (key, value)
                })
                .collect();
            let state = EntryState {
                index,
                id: r.str(&entry, "id"),
                author: r.str(&entry, author),
                at: r.time(&entry, "at"),
                content,
                reverted: (r.str(&entry, "revertedBy"), r.time(&entry, "revertedAt")),
                uncoordinated: r.bool(&entry, "uncoordinated"),
            };
            (entry, state)
        })
        .collect()
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
            state.handoff_by = read_roles(&r, &handoffs, Some("by"));
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
        state.open_exit_criteria = closing_blockers(&r, layout);
        state.close_override = r
            .map(&ROOT, keys::CLOSE_OVERRIDE)
            .and_then(|over| r.str(&over, "reason"))
            .filter(|reason| !reason.trim().is_empty());
        state.command_overrides = r.list(&ROOT, keys::AUDIT).map_or(0, |audit| {
            r.maps_in(&audit)
                .iter()
                .filter(|entry| r.str(entry, "rule").as_deref() == Some(COMMAND_OVERRIDE))
                .count()
        });
        state.access = crate::access::read_access(&r);
        state.channel = crate::channel::read_channel(&r);
        if let Some(checkins) = r.map(&ROOT, keys::CHECKINS) {
            let by = r
                .map(&checkins, "reconsidered")
                .and_then(|last| r.str(&last, "by"));
            state.reconsidered = (by, r.int(&checkins, "reconsiderations").unwrap_or(0));
        }
        state.help = crate::checkins::read_help(&r)
            .into_iter()
            .map(|(person, (flag, _, _))| (person, flag))
            .collect();
        state.delegates = r
            .list(&ROOT, keys::OPERATIONS_DELEGATES)
            .map(|list| r.strings_in(&list))
            .unwrap_or_default();
        if with_timeline {
            state.entries = read_entries(&r, layout, FieldKind::Timeline, "author");
            state.deviations = read_entries(&r, layout, FieldKind::Deviations, "by");
            state.changes = read_entries(&r, layout, FieldKind::Changes, "by");
        }
        state
    }

    /// The commander, if assigned.
    pub(crate) fn commander(&self) -> Option<&str> {
        self.roles.get(&Role::Commander).map(String::as_str)
    }

    /// Whether a change to production by `who` is coordinated: they hold Operations or its lead delegated to them.
    pub(crate) fn coordinates(&self, who: &str) -> bool {
        self.holder(Role::Operations) == Some(who) || self.delegates.iter().any(|d| d == who)
    }

    /// Forgets the logs, to compare with a state read without them.
    pub(crate) fn forget_logs(&mut self) {
        self.entries.clear();
        self.deviations.clear();
        self.changes.clear();
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

/// The rules `sender` broke by turning `before` into `after` at `now`; empty when the change is allowed.
pub(crate) fn check(
    before: &CommandState,
    after: &CommandState,
    sender: &Editor,
    now: DateTime<Utc>,
) -> Vec<Violation> {
    let who = sender.name.as_str();
    let commander = before.commander();
    // With nobody in command, anyone may take it: an incident must never be left without a way to assign roles.
    let is_commander = commander.is_none_or(|c| c == who);
    let (mut violations, forged_handoff) = check_hierarchy(before, after, sender, is_commander);

    // Pins, whoever and whenever they name, are the commander's.
    if before.pins != after.pins && !is_commander {
        violations.push(Violation {
            rule: Rule::Pins,
            message: format!(
                "only the Incident Commander ({}) pins fields; {who} may not",
                commander.unwrap_or("nobody yet")
            ),
        });
    }
    let forged_pin = is_commander
        && after
            .pins
            .iter()
            .filter(|pin| !before.pins.contains(pin))
            .any(|(_, by, _)| by.as_deref() != Some(who));

    violations.extend(check_status(before, after, sender, is_commander));
    if before.access != after.access && !is_commander && !sender.admin {
        violations.push(Violation {
            rule: Rule::Access,
            message: format!(
                "only the Incident Commander ({}) or an administrator changes who may see this incident; {who} \
                 may not",
                commander.unwrap_or("nobody yet")
            ),
        });
    }
    if before.channel != after.channel && !is_commander && !sender.admin {
        violations.push(Violation {
            rule: Rule::Channel,
            message: format!(
                "only the Incident Commander ({}) or an administrator binds the incident to a channel; {who} may not",
                commander.unwrap_or("nobody yet")
            ),
        });
    }
    let operations = before.holder(Role::Operations);
    if before.delegates != after.delegates && operations != Some(who) {
        violations.push(Violation {
            rule: Rule::Operations,
            message: format!(
                "only the Operations lead ({}) delegates changes to production; {who} may not",
                operations.unwrap_or("nobody yet")
            ),
        });
    }
    violations.extend(check_checkins(before, after, who, is_commander));
    violations.extend(
        check_timeline(before, after, who, now)
            .into_iter()
            .chain(check_deviations(before, after, who, now))
            .chain(check_changes(before, after, who, now))
            .map(|(_, violation)| violation),
    );
    if forged_handoff || forged_pin {
        violations.push(Violation {
            rule: Rule::Authorship,
            message: format!("a pin or handoff {who} writes names {who} as its author"),
        });
    }
    violations
}

/// The check-ins' rules: the reconsider prompt is the commander's to answer, in their own name; a help flag is its
/// person's to raise or clear, and the commander's to clear.
fn check_checkins(
    before: &CommandState,
    after: &CommandState,
    who: &str,
    is_commander: bool,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    if before.reconsidered != after.reconsidered {
        if !is_commander {
            violations.push(Violation {
                rule: Rule::CheckIn,
                message: format!(
                    "only the Incident Commander ({}) answers the reconsider prompt; {who} may not",
                    before.commander().unwrap_or("nobody yet")
                ),
            });
        } else if after.reconsidered.0.as_deref() != Some(who) {
            violations.push(Violation {
                rule: Rule::Authorship,
                message: format!("an answer to the reconsider prompt {who} writes names {who}"),
            });
        }
    }
    let people: BTreeSet<&String> = before.help.keys().chain(after.help.keys()).collect();
    for person in people {
        let (was, is) = (before.help.get(person), after.help.get(person));
        let clearing = is.is_none_or(Option::is_none);
        if was != is && person != who && !(clearing && is_commander) {
            violations.push(Violation {
                rule: Rule::CheckIn,
                message: format!(
                    "a help flag is its person's to raise or clear (the Incident Commander may clear one); {who} \
                     may not change {person}'s"
                ),
            });
        }
    }
    violations
}

/// The command hierarchy's rule: roles and handoffs change by the commander's hand, a holder proposing their own
/// role's handoff, or the named recipient accepting; command itself only by acceptance, by someone taking it while
/// nobody holds it, or by an administrator's override. Also says whether a handoff that stands names someone other
/// than the sender as its proposer.
fn check_hierarchy(
    before: &CommandState,
    after: &CommandState,
    sender: &Editor,
    is_commander: bool,
) -> (Vec<Violation>, bool) {
    let who = sender.name.as_str();
    let commander = before.commander();
    let mut violations = Vec::new();
    let overriding = sender.admin && after.command_overrides > before.command_overrides;
    // A role change is the commander's, or the named recipient accepting: the role becomes theirs and the
    // handoff addressed to them goes away.
    let accepting = |role: &Role| {
        before.handoffs.get(role).map(String::as_str) == Some(who)
            && after.roles.get(role).map(String::as_str) == Some(who)
            && !after.handoffs.contains_key(role)
    };
    let changed_roles: BTreeSet<Role> = changed_keys(&before.roles, &after.roles);
    let changed_handoffs: BTreeSet<Role> = changed_keys(&before.handoffs, &after.handoffs)
        .union(&changed_keys(&before.handoff_by, &after.handoff_by))
        .copied()
        .collect();
    let taking = commander.is_none() && after.commander() == Some(who);
    let command_allowed = accepting(&Role::Commander) || taking || overriding;
    // Not even the commander assigns command outright: a typo would hand it to nobody real and lock everyone out.
    if is_commander && changed_roles.contains(&Role::Commander) && !command_allowed {
        violations.push(Violation {
            rule: Rule::CommandHierarchy,
            message: format!(
                "command changes hands only by an accepted handoff: {who} may not make {} the Incident Commander \
                 outright (propose a handoff instead; an administrator can override command)",
                after.commander().unwrap_or("nobody")
            ),
        });
    }
    let refused_roles: Vec<Role> = changed_roles
        .iter()
        .filter(|role| match role {
            Role::Commander => !is_commander && !command_allowed,
            _ => !is_commander && !accepting(role),
        })
        .copied()
        .collect();
    let refused_handoffs: Vec<Role> = changed_handoffs
        .iter()
        .filter(|role| {
            let proposer = before.holder(**role) == Some(who) && after.roles == before.roles;
            let overridden = overriding && **role == Role::Commander;
            !is_commander && !proposer && !accepting(role) && !overridden
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
    // A handoff proposed (or changed) now names its proposer: the sender. (A refused change is put back anyway.)
    let forged_handoff = refused_handoffs.is_empty()
        && changed_handoffs.iter().any(|role| {
            after.handoffs.contains_key(role)
                && after.handoff_by.get(role).map(String::as_str) != Some(who)
        });
    (violations, forged_handoff)
}

/// The lifecycle's rules: the status moves forward (or back to active), and closing is the commander's or an
/// administrator's, with every exit criterion DONE or an override recorded.
fn check_status(
    before: &CommandState,
    after: &CommandState,
    sender: &Editor,
    is_commander: bool,
) -> Vec<Violation> {
    let who = sender.name.as_str();
    let commander = before.commander();
    let mut violations = Vec::new();
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
    if closing && !is_commander && !sender.admin {
        violations.push(Violation {
            rule: Rule::Closing,
            message: format!(
                "closing is the Incident Commander's decision ({}) or an administrator's; {who} may not close",
                commander.unwrap_or("nobody yet")
            ),
        });
    }
    let overridden =
        after.close_override.is_some() && after.close_override != before.close_override;
    if closing && !after.open_exit_criteria.is_empty() && !overridden {
        violations.push(Violation {
            rule: Rule::ExitCriteria,
            message: format!(
                "closing needs every exit criterion DONE and every deviation reverted; still open: {}. Mark them \
                 done or reverted, or close with an override reason for the timeline",
                after.open_exit_criteria.join("; ")
            ),
        });
    }
    violations
}

/// The timeline is append-only: new entries are the sender's, `id`/`author`/`at` never change, and only the
/// author rewords or removes an entry, within the grace period. Each violation comes with the entry it concerns,
/// for [`revert`].
fn check_timeline(
    before: &CommandState,
    after: &CommandState,
    who: &str,
    now: DateTime<Utc>,
) -> Vec<(ObjId, Violation)> {
    let mut violations = Vec::new();
    let label = |entry: &EntryState| entry.id.clone().unwrap_or_else(|| "without id".into());
    let in_grace = |entry: &EntryState| {
        entry.author.as_deref() == Some(who) && entry.at.is_some_and(|at| now - at <= EDIT_GRACE)
    };
    let refuse =
        |violations: &mut Vec<(ObjId, Violation)>, obj: &ObjId, rule: Rule, message: String| {
            violations.push((obj.clone(), Violation { rule, message }));
        };
    for (obj, was) in &before.entries {
        match after.entries.get(obj) {
            None if !in_grace(was) => refuse(
                &mut violations,
                obj,
                Rule::TimelineEdit,
                format!(
                    "the timeline is append-only: the entry {} is {}'s and only its author removes it, within \
                     {} minutes of its time",
                    label(was),
                    was.author.as_deref().unwrap_or("nobody"),
                    EDIT_GRACE.num_minutes()
                ),
            ),
            None => {}
            Some(is) if (&is.id, &is.author, is.at) != (&was.id, &was.author, was.at) => refuse(
                &mut violations,
                obj,
                Rule::TimelineEdit,
                format!(
                    "the id, author and time of the timeline entry {} never change",
                    label(was)
                ),
            ),
            Some(is) if is.content != was.content && !in_grace(was) => refuse(
                &mut violations,
                obj,
                Rule::TimelineEdit,
                format!(
                    "the timeline entry {} is {}'s; only its author rewords it, within {} minutes of its time; \
                     add a new entry instead",
                    label(was),
                    was.author.as_deref().unwrap_or("nobody"),
                    EDIT_GRACE.num_minutes()
                ),
            ),
            Some(_) => {}
        }
    }
    for (obj, is) in &after.entries {
        if !before.entries.contains_key(obj)
            && let Some(violation) = check_new(obj, is, who, now, "timeline entry")
        {
            violations.push((obj.clone(), violation));
        }
    }
    violations
}

/// A new log entry (`what` names the log's kind of entry) is its sender's, carries its own object id as `id` and
/// a time no later than [`FUTURE_SKEW`] from now.
fn check_new(
    obj: &ObjId,
    is: &EntryState,
    who: &str,
    now: DateTime<Utc>,
    what: &str,
) -> Option<Violation> {
    let own_id = is.id.as_deref() == Some(obj.to_string().as_str());
    let dated = is.at.is_some_and(|at| at <= now + FUTURE_SKEW);
    if is.author.as_deref() != Some(who) {
        Some(Violation {
            rule: Rule::Authorship,
            message: format!(
                "a {what} {who} adds names {who} as its author, not {}",
                is.author.as_deref().unwrap_or("nobody")
            ),
        })
    } else if !own_id || !dated {
        Some(Violation {
            rule: Rule::TimelineEdit,
            message: format!(
                "a new {what} carries its own object id as id and a time no later than {} minutes from now",
                FUTURE_SKEW.num_minutes()
            ),
        })
    } else {
        None
    }
}

/// The revert list keeps every deviation: none is removed, `id`, `by` and `at` never change, a reverting names
/// its sender and is dated no later than [`FUTURE_SKEW`] from now, and a reverted deviation stays reverted. What
/// was changed and how to revert it anyone may reword.
fn check_deviations(
    before: &CommandState,
    after: &CommandState,
    who: &str,
    now: DateTime<Utc>,
) -> Vec<(ObjId, Violation)> {
    let mut violations = Vec::new();
    let refuse = |rule: Rule, message: String| Violation { rule, message };
    for (obj, is) in &after.deviations {
        let label = is.id.clone().unwrap_or_else(|| "without id".into());
        let violation = match before.deviations.get(obj) {
            None => check_new(obj, is, who, now, "deviation").or_else(|| {
                is.reverted.0.as_ref().map(|_| {
                    refuse(
                        Rule::Deviations,
                        format!("the new deviation {label} is open; mark it reverted once it is"),
                    )
                })
            }),
            Some(was) if (&is.id, &is.author, is.at) != (&was.id, &was.author, was.at) => {
                Some(refuse(
                    Rule::Deviations,
                    format!("the id, author and time of the deviation {label} never change"),
                ))
            }
            Some(was) if was.reverted.0.is_some() && is.reverted != was.reverted => Some(refuse(
                Rule::Deviations,
                format!("the deviation {label} was reverted and stays so, by whoever reverted it"),
            )),
            Some(was) if was.reverted != is.reverted => match &is.reverted {
                (Some(by), _) if by != who => Some(refuse(
                    Rule::Authorship,
                    format!("a deviation {who} marks reverted names {who}, not {by}"),
                )),
                (Some(_), Some(at)) if *at <= now + FUTURE_SKEW => None,
                _ => Some(refuse(
                    Rule::Deviations,
                    format!(
                        "the deviation {label} is marked reverted with who and when (no later than {} minutes from \
                         now)",
                        FUTURE_SKEW.num_minutes()
                    ),
                )),
            },
            Some(_) => None,
        };
        violations.extend(violation.map(|v| (obj.clone(), v)));
    }
    for (obj, was) in &before.deviations {
        if !after.deviations.contains_key(obj) {
            violations.push((
                obj.clone(),
                refuse(
                    Rule::Deviations,
                    format!(
                        "the revert list keeps every deviation ({}): mark it reverted instead",
                        was.id.as_deref().unwrap_or("without id")
                    ),
                ),
            ));
        }
    }
    violations
}

/// The operations log is written once: no entry changes or goes, and a new one is its sender's, with the
/// uncoordinated mark the server would write (the sender neither holds Operations nor was delegated, before the
/// change).
fn check_changes(
    before: &CommandState,
    after: &CommandState,
    who: &str,
    now: DateTime<Utc>,
) -> Vec<(ObjId, Violation)> {
    let mut violations = Vec::new();
    let uncoordinated = !before.coordinates(who);
    for (obj, is) in &after.changes {
        let violation = match before.changes.get(obj) {
            None => check_new(obj, is, who, now, "operations log entry").or_else(|| {
                (is.uncoordinated != Some(uncoordinated)).then(|| Violation {
                    rule: Rule::Operations,
                    message: if uncoordinated {
                        format!(
                            "{who}'s change is uncoordinated: {who} neither holds the Operations role nor was \
                             delegated by its lead"
                        )
                    } else {
                        format!("{who}'s change is coordinated: {who} holds the Operations role or its delegation")
                    },
                })
            }),
            Some(was) if was != is => Some(rewritten_log()),
            Some(_) => None,
        };
        violations.extend(violation.map(|v| (obj.clone(), v)));
    }
    for obj in before.changes.keys() {
        if !after.changes.contains_key(obj) {
            violations.push((obj.clone(), rewritten_log()));
        }
    }
    violations
}

fn rewritten_log() -> Violation {
    Violation {
        rule: Rule::Operations,
        message: "the operations log is written once: its entries are never changed or removed"
            .into(),
    }
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
/// status, the timeline entries the rules protect (rewritten, put back where they were, or a forged new one
/// removed), each as it was in `before` (the document at `heads`). Other parts of the same change stay.
pub(crate) fn revert(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    (before, after): (&CommandState, &CommandState),
    heads: &[ChangeHash],
    sender: &Editor,
    now: DateTime<Utc>,
    violations: &[Violation],
) -> Result<(), automerge::AutomergeError> {
    let field = |kind: FieldKind| {
        layout
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.key.clone())
    };
    let rules: BTreeSet<Rule> = violations.iter().map(|v| v.rule).collect();
    if rules.contains(&Rule::CommandHierarchy) || rules.contains(&Rule::Authorship) {
        // Key by key in the existing maps, so that concurrent changes elsewhere in them survive.
        if let Some(key) = field(FieldKind::Roles)
            && rules.contains(&Rule::CommandHierarchy)
        {
            let roles = map_at_root(doc, &key)?;
            for role in Role::ALL {
                match before.roles.get(role) {
                    Some(person) => doc.put(&roles, role.as_str(), person.as_str())?,
                    None => delete_if_present(doc, &roles, role.as_str())?,
                }
            }
        }
        if before.handoffs != after.handoffs || before.handoff_by != after.handoff_by {
            let handoffs = map_at_root(doc, keys::HANDOFFS)?;
            for role in Role::ALL {
                match before.handoffs.get(role) {
                    Some(to) => {
                        let handoff = doc.put_object(&handoffs, role.as_str(), ObjType::Map)?;
                        doc.put(&handoff, "to", to.as_str())?;
                        if let Some(by) = before.handoff_by.get(role) {
                            doc.put(&handoff, "by", by.as_str())?;
                        }
                    }
                    None => delete_if_present(doc, &handoffs, role.as_str())?,
                }
            }
        }
    }
    if rules.contains(&Rule::Pins)
        || (rules.contains(&Rule::Authorship) && before.pins != after.pins)
    {
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
    if [Rule::Lifecycle, Rule::ExitCriteria, Rule::Closing]
        .iter()
        .any(|rule| rules.contains(rule))
        && let (Some(key), Some(status)) = (field(FieldKind::Status), before.status)
    {
        doc.put(ROOT, key.as_str(), status.as_str())?;
    }
    if rules.contains(&Rule::Access) {
        restore_key(doc, &ROOT, keys::ACCESS, heads)?;
    }
    if rules.contains(&Rule::Channel) {
        restore_key(doc, &ROOT, keys::CHAT_CHANNEL, heads)?;
    }
    if rules.contains(&Rule::Operations) {
        restore_key(doc, &ROOT, keys::OPERATIONS_DELEGATES, heads)?;
    }
    if rules.contains(&Rule::CheckIn) {
        restore_key(doc, &ROOT, keys::CHECKINS, heads)?;
        restore_key(doc, &ROOT, keys::HELP, heads)?;
    }
    let who = sender.name.as_str();
    let logs = [
        (
            FieldKind::Timeline,
            &before.entries,
            check_timeline(before, after, who, now),
        ),
        (
            FieldKind::Deviations,
            &before.deviations,
            check_deviations(before, after, who, now),
        ),
        (
            FieldKind::Changes,
            &before.changes,
            check_changes(before, after, who, now),
        ),
    ];
    for (kind, was, offenders) in logs {
        if let Some(key) = field(kind) {
            let offenders: BTreeMap<ObjId, Rule> = offenders
                .into_iter()
                .map(|(obj, violation)| (obj, violation.rule))
                .collect();
            let mark = (kind == FieldKind::Changes).then(|| !before.coordinates(who));
            put_back_entries(doc, &key, was, &offenders, heads, mark)?;
        }
    }
    Ok(())
}

/// Puts the `offenders` among the entries of the log field `key` back as they were in `was` (the document at
/// `heads`): a removed entry as a copy where it was, a changed one field by field, a forged new one removed. With
/// `mark` (the operations log), a new entry whose only fault is its mark (the rule `operations`) keeps its place
/// with the server's mark.
fn put_back_entries(
    doc: &mut AutoCommit,
    key: &str,
    was: &BTreeMap<ObjId, EntryState>,
    offenders: &BTreeMap<ObjId, Rule>,
    heads: &[ChangeHash],
    mark: Option<bool>,
) -> Result<(), automerge::AutomergeError> {
    let Some((automerge::Value::Object(ObjType::List), list)) = doc.get(ROOT, key)? else {
        return Ok(());
    };
    for (obj, rule) in offenders {
        let position =
            |doc: &AutoCommit| doc.list_range(&list, ..).position(|item| item.id() == *obj);
        match (was.get(obj), position(doc)) {
            // Removed: a copy as it was, where it was.
            (Some(was), None) => {
                let copy =
                    doc.insert_object(&list, was.index.min(doc.length(&list)), ObjType::Map)?;
                copy_object(doc, obj, &copy, ObjType::Map, heads)?;
            }
            // Changed: every field as it was.
            (Some(_), Some(_)) => restore_fields(doc, obj, heads)?,
            (None, Some(index)) => match mark {
                // Mismarked: the server's verdict, unless the entry is forged too.
                Some(uncoordinated) if *rule == Rule::Operations => {
                    doc.put(obj, "uncoordinated", uncoordinated)?;
                }
                // Forged: a new entry that is not its sender's, or misdated, goes.
                _ => doc.delete(&list, index)?,
            },
            (None, None) => {}
        }
    }
    Ok(())
}

/// Puts every field of map `obj` back as it was at `heads` (fields added since are deleted); a Text field that is
/// still the same object is updated in place, so carets anchored in it survive.
pub(crate) fn restore_fields(
    doc: &mut AutoCommit,
    obj: &ObjId,
    heads: &[ChangeHash],
) -> Result<(), automerge::AutomergeError> {
    let then: BTreeSet<String> = doc.keys_at(obj, heads).collect();
    let now: Vec<String> = doc.keys(obj).collect();
    for key in now.iter().filter(|key| !then.contains(*key)) {
        doc.delete(obj, key.as_str())?;
    }
    for key in then {
        restore_key(doc, obj, &key, heads)?;
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

/// Puts key `key` of map `map` back to its value at `heads`, whatever it holds: a scalar as it was, the same Text
/// object updated to its text then, any other object rebuilt from its content then (what matters is the content,
/// not object ids), an absent key deleted.
pub(crate) fn restore_key(
    doc: &mut AutoCommit,
    map: &ObjId,
    key: &str,
    heads: &[ChangeHash],
) -> Result<(), automerge::AutomergeError> {
    match doc.get_at(map, key, heads)? {
        None => delete_if_present(doc, map, key),
        Some((automerge::Value::Scalar(value), _)) => {
            if doc
                .get(map, key)?
                .is_some_and(|(now, _)| now.as_scalar() == Some(&value))
            {
                return Ok(());
            }
            doc.put(map, key, value.into_owned())
        }
        Some((automerge::Value::Object(ObjType::Text), old))
            if doc.get(map, key)?.is_some_and(|(_, now)| now == old) =>
        {
            let text = doc.text_at(&old, heads)?;
            doc.update_text(&old, &text)
        }
        Some((automerge::Value::Object(kind), old)) => {
            let new = doc.put_object(map, key, kind)?;
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
