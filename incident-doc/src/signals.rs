//! What the world outside the document (chat, paging, status pages: webhook receivers) hears about an incident:
//! a small snapshot of the facts they follow ([`Signals`]) and the [`Event`]s between two snapshots.
//!
//! The server takes a snapshot before and after each batch of changes, whichever way they arrived (typed
//! operations over HTTP or raw Automerge changes over `/sync`), so events follow the document itself and not the
//! API that changed it. Snapshots skip the timeline and most checklists, so taking two per batch stays cheap.

use std::collections::BTreeMap;

use automerge::ROOT;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Incident;
use crate::checkins::HelpState;
use crate::read::Reader;
use crate::schema::{FieldKind, Role, Status, keys};
use crate::view::{FieldValue, Headline, read_layout, read_value};

/// The key of the field whose completion is "exit criteria all met" (every built-in template has it).
pub const EXIT_CRITERIA_KEY: &str = "exitCriteria";

/// The key of the field whose edits are "summary changed".
pub const SUMMARY_KEY: &str = "summary";

/// The facts webhook receivers follow, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signals {
    /// Title, number, status, severity, drill.
    pub headline: Headline,
    /// The summary field's text.
    pub summary: String,
    /// Who holds each role (assigned roles only).
    pub roles: BTreeMap<Role, String>,
    /// Pending handoffs: role → the person it is proposed to.
    pub handoffs: BTreeMap<Role, String>,
    /// The exit criteria checklist: (items, items done); `None` without such a field.
    pub exit_criteria: Option<(usize, usize)>,
    /// Whether the incident is restricted to its members: only endpoints that opt in hear of it.
    pub restricted: bool,
    /// The chat channel bound to the incident, where the server posts these events too.
    pub channel: Option<crate::channel::Channel>,
    /// The alerts recorded: fingerprint → (status and start, the timeline's text), so that a channel hears each
    /// alert as it is recorded.
    pub alerts: BTreeMap<String, (String, String)>,
    /// The operations log's uncoordinated entries: id → the entry, so that each is announced once.
    pub uncoordinated: BTreeMap<String, crate::view::Change>,
    /// The help flags raised now: person → state.
    pub help: BTreeMap<String, HelpState>,
}

impl Signals {
    /// Whether every exit criterion is met (and there is at least one).
    pub fn exit_criteria_met(&self) -> bool {
        matches!(self.exit_criteria, Some((total, done)) if total > 0 && done == total)
    }
}

impl Incident {
    /// The facts webhook receivers follow, as the document is now.
    pub fn signals(&mut self) -> Signals {
        let headline = self.headline();
        let doc = self.doc();
        let r = Reader::new(doc, None);
        let layout = read_layout(&r);
        let value = |pred: &dyn Fn(FieldKind, &str) -> bool| {
            layout
                .iter()
                .find(|d| pred(d.kind, &d.key))
                .map(|d| read_value(&r, d))
        };
        let summary = match value(&|k, key| k == FieldKind::Markdown && key == SUMMARY_KEY) {
            Some(FieldValue::Text(t)) => t,
            _ => String::new(),
        };
        let roles = match value(&|k, _| k == FieldKind::Roles) {
            Some(FieldValue::Roles(roles)) => roles,
            _ => BTreeMap::new(),
        };
        let exit_criteria =
            match value(&|k, key| k == FieldKind::Checklist && key == EXIT_CRITERIA_KEY) {
                Some(FieldValue::Checklist(items)) => {
                    Some((items.len(), items.iter().filter(|i| i.done).count()))
                }
                _ => None,
            };
        let handoffs = r
            .map(&ROOT, keys::HANDOFFS)
            .map(|map| {
                Role::ALL
                    .iter()
                    .filter_map(|role| {
                        let handoff = r.map(&map, role.as_str())?;
                        Some((*role, r.str(&handoff, "to")?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let restricted = crate::access::read_access(&r).0;
        let channel = crate::channel::read_channel(&r);
        let alerts = r
            .map(&ROOT, keys::ALERTS)
            .map(|map| {
                r.keys(&map)
                    .into_iter()
                    .filter_map(|fingerprint| {
                        let state = r.map(&map, fingerprint.as_str())?;
                        let seen = format!(
                            "{} {}",
                            r.str(&state, "status").unwrap_or_default(),
                            r.time(&state, "startsAt")
                                .map(|t| t.timestamp_millis())
                                .unwrap_or_default()
                        );
                        let text = r.str(&state, "text").unwrap_or_default();
                        Some((fingerprint, (seen, text)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let uncoordinated = match value(&|k, _| k == FieldKind::Changes) {
            Some(FieldValue::Changes(list)) => list
                .into_iter()
                .filter(|c| c.uncoordinated)
                .map(|c| (c.id.clone(), c))
                .collect(),
            _ => BTreeMap::new(),
        };
        let help = crate::checkins::read_help(&r)
            .into_iter()
            .filter_map(|(person, (state, _, _))| Some((person, state?)))
            .collect();
        Signals {
            uncoordinated,
            headline,
            summary,
            roles,
            handoffs,
            exit_criteria,
            restricted,
            channel,
            alerts,
            help,
        }
    }
}

/// Something that happened to an incident, as webhook receivers hear it. The JSON form is the `event` object of
/// the webhook payload (`docs/integrations.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// The incident was declared.
    Declared,
    /// The status moved (other than to `closed`, which is [`Event::Closed`]).
    #[serde(rename_all = "camelCase")]
    StatusChanged {
        /// The status before.
        from: Option<String>,
        /// The status now.
        to: String,
    },
    /// The severity changed.
    #[serde(rename_all = "camelCase")]
    SeverityChanged {
        /// The severity before.
        from: Option<String>,
        /// The severity now.
        to: Option<String>,
    },
    /// The summary was edited (the server debounces these).
    #[serde(rename_all = "camelCase")]
    SummaryChanged {
        /// The summary now.
        summary: String,
    },
    /// A role's handoff was proposed.
    #[serde(rename_all = "camelCase")]
    HandoffProposed {
        /// The role.
        role: Role,
        /// Who is to take it.
        to: String,
        /// Who holds it now.
        from: Option<String>,
    },
    /// A role changed hands through its handoff.
    #[serde(rename_all = "camelCase")]
    HandoffAccepted {
        /// The role.
        role: Role,
        /// The new holder.
        to: String,
        /// Who held it.
        from: Option<String>,
    },
    /// A field with a cadence was not refreshed in time.
    #[serde(rename_all = "camelCase")]
    FieldStale {
        /// The field key.
        field: String,
        /// Its label.
        label: String,
        /// When it was due.
        due_at: DateTime<Utc>,
    },
    /// The commander's reconsider prompt (`reconsider=…` in the template) is past due: found by the server's sweep of
    /// open incidents, as [`Event::FieldStale`] is.
    #[serde(rename_all = "camelCase")]
    ReconsiderDue {
        /// When it was due.
        due_at: DateTime<Utc>,
    },
    /// Every exit criterion is checked.
    ExitCriteriaMet,
    /// An alert was recorded in the timeline (firing or resolved). Posted to the incident's chat channel; webhook
    /// receivers, which get the Alertmanager notification themselves, do not hear it.
    #[serde(rename_all = "camelCase")]
    AlertRecorded {
        /// Alertmanager's fingerprint.
        fingerprint: String,
        /// The timeline's text of the alert.
        text: String,
    },
    /// Someone outside the Operations role (and not delegated by its lead) logged a change to production:
    /// freelancing, announced to the Operations lead and the commander.
    #[serde(rename_all = "camelCase")]
    UncoordinatedChange {
        /// Who changed it.
        by: String,
        /// On what.
        target: String,
        /// What was changed.
        what: String,
        /// Who holds Operations (the commander while nobody else does).
        operations: Option<String>,
        /// The Incident Commander.
        commander: Option<String>,
    },
    /// A responder raised or cleared their help flag ("I need help", "I am overloaded"): the commander must see it
    /// at once.
    #[serde(rename_all = "camelCase")]
    HelpFlag {
        /// Whose flag.
        person: String,
        /// Raised as, or `null` once cleared.
        state: Option<HelpState>,
    },
    /// The incident was closed.
    Closed,
}

impl Event {
    /// The event's type name, as in the JSON (`statusChanged`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Declared => "declared",
            Event::StatusChanged { .. } => "statusChanged",
            Event::SeverityChanged { .. } => "severityChanged",
            Event::SummaryChanged { .. } => "summaryChanged",
            Event::HandoffProposed { .. } => "handoffProposed",
            Event::HandoffAccepted { .. } => "handoffAccepted",
            Event::FieldStale { .. } => "fieldStale",
            Event::ReconsiderDue { .. } => "reconsiderDue",
            Event::ExitCriteriaMet => "exitCriteriaMet",
            Event::AlertRecorded { .. } => "alertRecorded",
            Event::UncoordinatedChange { .. } => "uncoordinatedChange",
            Event::HelpFlag { .. } => "helpFlag",
            Event::Closed => "closed",
        }
    }

    /// Every type name, for validating configuration.
    pub const NAMES: [&'static str; 12] = [
        "declared",
        "statusChanged",
        "severityChanged",
        "summaryChanged",
        "handoffProposed",
        "handoffAccepted",
        "fieldStale",
        "reconsiderDue",
        "exitCriteriaMet",
        "uncoordinatedChange",
        "helpFlag",
        "closed",
    ];
}

/// The events between two snapshots of one incident, in a fixed order.
pub fn events(before: &Signals, after: &Signals) -> Vec<Event> {
    let mut out = Vec::new();
    let (was, is) = (&before.headline, &after.headline);
    if was.status != is.status {
        match is.status.as_deref() {
            Some(s) if s == Status::Closed.as_str() => out.push(Event::Closed),
            Some(s) => out.push(Event::StatusChanged {
                from: was.status.clone(),
                to: s.to_owned(),
            }),
            None => {}
        }
    }
    if was.severity != is.severity {
        out.push(Event::SeverityChanged {
            from: was.severity.clone(),
            to: is.severity.clone(),
        });
    }
    if before.summary != after.summary {
        out.push(Event::SummaryChanged {
            summary: after.summary.clone(),
        });
    }
    for (role, to) in &after.handoffs {
        if before.handoffs.get(role) != Some(to) {
            out.push(Event::HandoffProposed {
                role: *role,
                to: to.clone(),
                from: holder(after, *role),
            });
        }
    }
    for (role, to) in &before.handoffs {
        let taken = !after.handoffs.contains_key(role)
            && holder(after, *role).as_deref() == Some(to.as_str());
        if taken {
            out.push(Event::HandoffAccepted {
                role: *role,
                to: to.clone(),
                from: holder(before, *role),
            });
        }
    }
    if !before.exit_criteria_met() && after.exit_criteria_met() {
        out.push(Event::ExitCriteriaMet);
    }
    let people: std::collections::BTreeSet<&String> =
        before.help.keys().chain(after.help.keys()).collect();
    for person in people {
        if before.help.get(person) != after.help.get(person) {
            out.push(Event::HelpFlag {
                person: person.clone(),
                state: after.help.get(person).copied(),
            });
        }
    }
    for (fingerprint, (seen, text)) in &after.alerts {
        if before.alerts.get(fingerprint).map(|(was, _)| was) != Some(seen) {
            out.push(Event::AlertRecorded {
                fingerprint: fingerprint.clone(),
                text: text.clone(),
            });
        }
    }
    for (id, change) in &after.uncoordinated {
        if !before.uncoordinated.contains_key(id) {
            out.push(Event::UncoordinatedChange {
                by: change.by.clone(),
                target: change.target.clone(),
                what: change.what.clone(),
                operations: holder(after, Role::Operations),
                commander: after.roles.get(&Role::Commander).cloned(),
            });
        }
    }
    out
}

/// Who holds `role`: its assignee, or the commander for the roles the commander holds by default.
fn holder(signals: &Signals, role: Role) -> Option<String> {
    signals.roles.get(&role).cloned().or_else(|| {
        role.defaults_to_commander()
            .then(|| signals.roles.get(&Role::Commander).cloned())
            .flatten()
    })
}
