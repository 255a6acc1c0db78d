//! Typed edits of an incident document.
//!
//! Every way commandpost changes a document (HTTP, the browser client, bots) goes through an [`Operation`], so the
//! schema's rules live in one place: which kind of field an edit applies to, the *last updated* stamp, the commit
//! message that records who did what. An operation that fails changes nothing.
//!
//! This module holds the operations' JSON form and [`apply`], which hands each to the submodule of its family; what
//! every operation shares (the editor, the errors, the stamps, the field lookups) is in `edit`.

use automerge::AutoCommit;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::channel::Network;
use crate::checkins::HelpState;
use crate::edit::{Edited, Editor, OpError, stamped};
use crate::replay::Step;
use crate::schema::{FieldDef, Role, Stage, Status};

mod access;
mod alert;
mod changes;
mod channel;
mod checkins;
mod checklist;
mod deviations;
mod fields;
mod lifecycle;
mod pins;
mod replay;
mod roles;
mod timeline;
mod update_sent;

pub(crate) use checklist::insert_item;

/// One edit. The JSON form (`{"op": "spliceText", …}`) is what the HTTP API and the browser client send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Operation {
    /// Delete `delete` characters at `pos` of a text or markdown field, or of the text of one item of a checklist
    /// field, then insert `insert` there. Positions count Unicode code points.
    #[serde(rename_all = "camelCase")]
    SpliceText {
        /// The field key.
        field: String,
        /// The id of the checklist item whose text is edited; absent for the field's own text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<String>,
        /// Where, in code points from the start.
        pos: usize,
        /// How many code points to delete.
        #[serde(default)]
        delete: usize,
        /// What to insert.
        #[serde(default)]
        insert: String,
    },
    /// Replace a text or markdown field's content; Automerge diffs it so concurrent edits elsewhere survive.
    SetText {
        /// The field key.
        field: String,
        /// The new content.
        text: String,
    },
    /// Set or clear a choice field (e.g. severity) to one of its options.
    SetChoice {
        /// The field key.
        field: String,
        /// One of the field's option keys, or `null` to clear.
        value: Option<String>,
    },
    /// Move the incident to a lifecycle state; entering mitigated, resolved or closed stamps that moment once.
    /// Closing needs every exit criterion DONE, or `overrideReason`, which goes into the timeline.
    #[serde(rename_all = "camelCase")]
    SetStatus {
        /// The new state.
        status: Status,
        /// Why the incident closes although exit criteria are still open; only with `closed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        override_reason: Option<String>,
    },
    /// Set a flag field.
    SetFlag {
        /// The field key.
        field: String,
        /// The new value.
        value: bool,
    },
    /// Answer (or clear the answer to) one question of a questions field.
    Answer {
        /// The field key.
        field: String,
        /// The question key.
        question: String,
        /// Yes, no, or `null` for unanswered.
        value: Option<bool>,
    },
    /// Put a person in a role, or clear it (`null`). Not the Incident Commander's, which changes hands only by an
    /// accepted handoff, by someone taking command while nobody holds it (recorded in the timeline), or by an
    /// administrator's [`Operation::OverrideCommand`].
    AssignRole {
        /// The role.
        role: Role,
        /// The person (a token name), or `null`.
        person: Option<String>,
    },
    /// Add a timeline entry; `at` defaults to now.
    AddTimelineEntry {
        /// What happened (Markdown).
        text: String,
        /// When it happened, if not now (e.g. a bot reporting an alert's start).
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// Replace a timeline entry's text.
    EditTimelineEntry {
        /// The entry id.
        id: String,
        /// The new text.
        text: String,
    },
    /// Remove a timeline entry: only its author, within the grace period after its time (the command rules); the
    /// timeline is otherwise append-only.
    RemoveTimelineEntry {
        /// The entry id.
        id: String,
    },
    /// Add an item to a checklist field.
    AddItem {
        /// The field key.
        field: String,
        /// What to do or check.
        text: String,
        /// Who is on it.
        #[serde(default)]
        owner: Option<String>,
        /// A bug reference.
        #[serde(default)]
        bug: Option<String>,
    },
    /// Replace a checklist item's text.
    EditItem {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
        /// The new text.
        text: String,
    },
    /// Set a checklist item's owner and bug reference (`null` clears).
    SetItemDetails {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
        /// The owner, or `null`.
        owner: Option<String>,
        /// The bug reference, or `null`.
        bug: Option<String>,
    },
    /// Mark a checklist item DONE or back to TODO.
    SetItemDone {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
        /// DONE when true.
        done: bool,
    },
    /// Remove a checklist item.
    RemoveItem {
        /// The field key.
        field: String,
        /// The item id.
        id: String,
    },
    /// Pin a field so it renders before everything else (after the fields pinned earlier).
    Pin {
        /// The field key.
        field: String,
    },
    /// Unpin a field.
    Unpin {
        /// The field key.
        field: String,
    },
    /// Propose handing `role` to `to`; nothing changes until they accept. The commander or the role's holder
    /// proposes; a new proposal replaces a pending one.
    ProposeHandoff {
        /// The role handed over.
        role: Role,
        /// The person (a token name) who is to take it.
        to: String,
    },
    /// Accept the handoff of `role` proposed to the editor: "you're now the incident commander". Only the named
    /// recipient can accept; the role changes hands and the timeline records it.
    AcceptHandoff {
        /// The role taken over.
        role: Role,
    },
    /// Withdraw a pending handoff of `role`.
    CancelHandoff {
        /// The role.
        role: Role,
    },
    /// An administrator makes `person` (themselves or someone else) the Incident Commander without a handoff, to
    /// recover from an absent commander: recorded in the timeline and in the audit trail, with the reason. Any
    /// pending handoff of command is withdrawn. The server lets only admins send it, over HTTP.
    OverrideCommand {
        /// The new commander (a token name).
        person: String,
        /// Why command is taken without a handoff; recorded in the timeline and the audit trail.
        reason: String,
    },
    /// Set or clear a lifecycle timestamp.
    SetTimestamp {
        /// The stage.
        stage: Stage,
        /// The moment, or `null` to clear. Required: a forgotten field would otherwise read as `null` and erase
        /// the stage's time.
        #[serde(deserialize_with = "Option::deserialize")]
        #[cfg_attr(feature = "openapi", schema(required = true))]
        at: Option<DateTime<Utc>>,
    },
    /// Record an alert notification (from the Alertmanager hook) in the timeline, once: a fingerprint already
    /// recorded with the same state and start adds nothing (see `alert`).
    #[serde(rename_all = "camelCase")]
    RecordAlert {
        /// Alertmanager's fingerprint of the alert.
        fingerprint: String,
        /// Firing (`true`) or resolved.
        firing: bool,
        /// When the alert started firing.
        starts_at: DateTime<Utc>,
        /// The timeline entry (Markdown).
        text: String,
        /// The entry's time: the alert's start when firing, its end when resolved.
        at: DateTime<Utc>,
    },
    /// Record that the Communications lead sent a status update: `lastUpdate` and a timeline entry. The
    /// Communications lead's fields with a cadence fall due again counted from it; their stamps stay (see
    /// `update_sent`).
    MarkUpdateSent {
        /// The document heads the update described (hex), so the next one can say what changed since.
        #[serde(default)]
        heads: Vec<String>,
        /// Where it went or what it said, for the timeline.
        #[serde(default)]
        note: Option<String>,
    },
    /// Restrict the incident to its members (the declarer, the role holders, the people the commander added, and
    /// administrators), or open it to everyone again. Only the commander or an administrator; recorded in the
    /// timeline. Everyone else is answered as if the incident did not exist.
    SetRestricted {
        /// Whether only members may see the incident.
        restricted: bool,
    },
    /// Add a person (a token name) to the members of the incident. Only the commander or an administrator;
    /// recorded in the timeline. Adding someone already added changes nothing.
    AddMember {
        /// The person.
        person: String,
    },
    /// Remove a person the commander added from the members; their live connections to a restricted incident
    /// close. Only the commander or an administrator; recorded in the timeline. The declarer and role holders stay
    /// members by their role.
    RemoveMember {
        /// The person.
        person: String,
    },
    /// Bind the incident to a chat channel (replacing any other): the server's bots log its traffic with the
    /// incident and post the incident's events there. Only the commander or an administrator; recorded in the
    /// timeline. The server refuses a channel another open incident is bound to.
    BindChannel {
        /// The network.
        network: Network,
        /// IRC: the channel (`#inc-465-checkout`); Slack: the channel's name.
        name: String,
        /// Slack: the channel id (`C0123ABCD`); absent on IRC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Unbind the incident from its channel: the bots stop logging and posting there. Only the commander or an
    /// administrator; recorded in the timeline.
    UnbindChannel {},
    /// Add a deviation from normal to the revert list (the field of kind `deviations`): what was changed in
    /// production and how to revert it. The server records who (`by`, the editor) and when; open deviations block
    /// closing like open exit criteria.
    AddDeviation {
        /// What was changed away from normal (one line).
        what: String,
        /// How to put it back (one line).
        revert: String,
        /// When production was changed, if not now.
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// Reword a deviation's `what` or `revert` (absent: unchanged).
    EditDeviation {
        /// The deviation's id.
        id: String,
        /// What was changed.
        #[serde(default)]
        what: Option<String>,
        /// How to revert it.
        #[serde(default)]
        revert: Option<String>,
    },
    /// Mark a deviation reverted, by the editor, now; once reverted it stays so.
    MarkReverted {
        /// The deviation's id.
        id: String,
        /// How it was reverted, for the record.
        #[serde(default)]
        note: Option<String>,
    },
    /// Log a change to production in the operations log (the field of kind `changes`). The server records who
    /// (`by`, the editor) and marks the entry `uncoordinated` unless the editor holds the Operations role (the
    /// commander while nobody else does) or was delegated by its lead; uncoordinated changes are announced.
    LogChange {
        /// What was changed (one line).
        what: String,
        /// On what: the system, service or host (one line).
        target: String,
        /// When, if not now.
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// Delegate changes to production to `person`, so their operations log entries are coordinated. Only the
    /// holder of the Operations role (the commander while nobody else holds it); recorded in the timeline.
    DelegateOperations {
        /// The person (a token name).
        person: String,
    },
    /// Take back a delegation of changes to production. Only the holder of the Operations role; recorded in the
    /// timeline.
    RevokeDelegation {
        /// The person.
        person: String,
    },
    /// Answer the commander's check-in "reconsider the options: is the current approach still right?" with a
    /// one-line note: recorded in the timeline, and the prompt falls due again after the template's interval
    /// (`reconsider=…`). Only the Incident Commander.
    Reconsider {
        /// The answer, one line.
        note: String,
    },
    /// Raise ("I need help", "I am overloaded") or clear (`null`) a help flag, where the template turned it on
    /// (`help-flag`): recorded in the timeline and announced to the commander. A person raises or clears only
    /// their own flag; the Incident Commander may clear anyone's once dealt with.
    SetHelp {
        /// The new state, or `null` to clear.
        #[serde(deserialize_with = "Option::deserialize")]
        #[cfg_attr(feature = "openapi", schema(required = true))]
        state: Option<HelpState>,
        /// Whose flag (a token name); the sender's own when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        person: Option<String>,
    },
    /// Reopen a closed (archived) incident: the one edit an archived document accepts, alone in its batch. Moves
    /// the status to `status` (default `resolved`), clears the `closed` lifecycle stamp so that the next close
    /// records its own moment, and writes the reason to the timeline. The server lets only admins send it.
    Reopen {
        /// Why it is reopened; recorded in the timeline.
        reason: String,
        /// The state to reopen into; any but `closed`.
        #[serde(default)]
        status: Option<Status>,
    },
    /// Make a new drill a replay of a closed incident (root key `replay`, with a timeline entry). Only the server
    /// sends it, when a facilitator starts a replay (`POST /api/incidents/{id}/replay`).
    #[serde(rename_all = "camelCase")]
    BeginReplay {
        /// The source incident's id.
        source: String,
        /// The source incident's number.
        #[serde(default)]
        source_number: Option<i64>,
        /// How many times faster than the source (0.5 to 100, in hundredths).
        speed: f64,
        /// How many steps the replay delivers.
        total: u32,
    },
    /// Deliver step `step` (from 1) of a replay drill: the source's timeline entry naming its author, or its alert
    /// recorded again. Refused unless the document's last delivered step is `step - 1`, so no step lands twice.
    /// Only the server sends it.
    DeliverReplayStep {
        /// The step's number, from 1.
        step: u32,
        /// What it delivers.
        entry: Step,
    },
}

impl Operation {
    /// The name used in commit messages and history (the JSON `op`).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Reopen { .. } => "reopen",
            Operation::SpliceText { .. } => "spliceText",
            Operation::SetText { .. } => "setText",
            Operation::SetChoice { .. } => "setChoice",
            Operation::SetStatus { .. } => "setStatus",
            Operation::SetFlag { .. } => "setFlag",
            Operation::Answer { .. } => "answer",
            Operation::AssignRole { .. } => "assignRole",
            Operation::AddTimelineEntry { .. } => "addTimelineEntry",
            Operation::EditTimelineEntry { .. } => "editTimelineEntry",
            Operation::RemoveTimelineEntry { .. } => "removeTimelineEntry",
            Operation::AddItem { .. } => "addItem",
            Operation::EditItem { .. } => "editItem",
            Operation::SetItemDetails { .. } => "setItemDetails",
            Operation::SetItemDone { .. } => "setItemDone",
            Operation::RemoveItem { .. } => "removeItem",
            Operation::Pin { .. } => "pin",
            Operation::Unpin { .. } => "unpin",
            Operation::SetTimestamp { .. } => "setTimestamp",
            Operation::ProposeHandoff { .. } => "proposeHandoff",
            Operation::AcceptHandoff { .. } => "acceptHandoff",
            Operation::CancelHandoff { .. } => "cancelHandoff",
            Operation::OverrideCommand { .. } => "overrideCommand",
            Operation::RecordAlert { .. } => "recordAlert",
            Operation::MarkUpdateSent { .. } => "markUpdateSent",
            Operation::SetRestricted { .. } => "setRestricted",
            Operation::AddMember { .. } => "addMember",
            Operation::RemoveMember { .. } => "removeMember",
            Operation::BindChannel { .. } => "bindChannel",
            Operation::UnbindChannel {} => "unbindChannel",
            Operation::AddDeviation { .. } => "addDeviation",
            Operation::EditDeviation { .. } => "editDeviation",
            Operation::MarkReverted { .. } => "markReverted",
            Operation::LogChange { .. } => "logChange",
            Operation::DelegateOperations { .. } => "delegateOperations",
            Operation::RevokeDelegation { .. } => "revokeDelegation",
            Operation::Reconsider { .. } => "reconsider",
            Operation::SetHelp { .. } => "setHelp",
            Operation::BeginReplay { .. } => "beginReplay",
            Operation::DeliverReplayStep { .. } => "deliverReplayStep",
        }
    }
}

/// Applies `op` inside `doc`'s open transaction, then stamps the fields it touched. The caller commits on success
/// and rolls back on error.
pub(crate) fn apply(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    op: &Operation,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let edited = match op {
        Operation::SpliceText {
            field,
            item,
            pos,
            delete,
            insert,
        } => {
            let at = fields::TextAt {
                field,
                item: item.as_deref(),
                pos: *pos,
            };
            fields::splice_text(doc, layout, at, *delete, insert)
        }
        Operation::SetText { field, text } => fields::set_text(doc, layout, field, text),
        Operation::SetChoice { field, value } => {
            fields::set_choice(doc, layout, field, value.as_deref())
        }
        Operation::SetFlag { field, value } => fields::set_flag(doc, layout, field, *value),
        Operation::Answer {
            field,
            question,
            value,
        } => fields::answer(doc, layout, field, question, *value),
        Operation::SetStatus {
            status,
            override_reason,
        } => lifecycle::set_status(doc, layout, *status, override_reason.as_deref(), editor),
        Operation::SetTimestamp { stage, at } => lifecycle::set_timestamp(doc, layout, *stage, *at),
        Operation::Reopen { reason, status } => {
            lifecycle::reopen(doc, layout, reason, *status, editor)
        }
        Operation::AssignRole { role, person } => {
            roles::assign(doc, layout, *role, person.as_deref(), editor)
        }
        Operation::ProposeHandoff { role, to } => {
            roles::propose_handoff(doc, layout, *role, to, editor)
        }
        Operation::AcceptHandoff { role } => roles::accept_handoff(doc, layout, *role, editor),
        Operation::CancelHandoff { role } => roles::cancel_handoff(doc, layout, *role),
        Operation::OverrideCommand { person, reason } => {
            roles::override_command(doc, layout, person, reason, editor)
        }
        Operation::AddTimelineEntry { text, at } => {
            timeline::add_dated(doc, layout, text, *at, editor)
        }
        Operation::EditTimelineEntry { id, text } => timeline::edit(doc, layout, id, text),
        Operation::RemoveTimelineEntry { id } => timeline::remove(doc, layout, id),
        Operation::AddItem {
            field,
            text,
            owner,
            bug,
        } => checklist::add(doc, layout, field, text, owner.as_deref(), bug.as_deref()),
        Operation::EditItem { field, id, text } => checklist::edit(doc, layout, field, id, text),
        Operation::SetItemDetails {
            field,
            id,
            owner,
            bug,
        } => checklist::set_details(doc, layout, field, id, owner.as_deref(), bug.as_deref()),
        Operation::SetItemDone { field, id, done } => {
            checklist::set_done(doc, layout, field, id, *done)
        }
        Operation::RemoveItem { field, id } => checklist::remove(doc, layout, field, id),
        Operation::Pin { field } => pins::pin(doc, layout, field, editor),
        Operation::Unpin { field } => pins::unpin(doc, layout, field),
        Operation::RecordAlert {
            fingerprint,
            firing,
            starts_at,
            text,
            at,
        } => {
            let alert = alert::Alert {
                fingerprint,
                firing: *firing,
                starts_at: *starts_at,
                text,
                at: *at,
            };
            alert::record(doc, layout, alert, editor)
        }
        Operation::MarkUpdateSent { heads, note } => {
            update_sent::mark_sent(doc, layout, heads, note.as_deref(), editor)
        }
        Operation::SetRestricted { restricted } => {
            access::set_restricted(doc, layout, *restricted, editor)
        }
        Operation::AddMember { person } => access::add_member(doc, layout, person, editor),
        Operation::RemoveMember { person } => access::remove_member(doc, layout, person, editor),
        Operation::BindChannel { network, name, id } => {
            channel::bind(doc, layout, *network, name, id.as_deref(), editor)
        }
        Operation::UnbindChannel {} => channel::unbind(doc, layout, editor),
        Operation::AddDeviation { what, revert, at } => {
            deviations::add(doc, layout, what, revert, *at, editor)
        }
        Operation::EditDeviation { id, what, revert } => {
            deviations::edit(doc, layout, id, what.as_deref(), revert.as_deref())
        }
        Operation::MarkReverted { id, note } => {
            deviations::mark_reverted(doc, layout, id, note.as_deref(), editor)
        }
        Operation::LogChange { what, target, at } => {
            changes::log(doc, layout, what, target, *at, editor)
        }
        Operation::DelegateOperations { person } => {
            changes::delegate(doc, layout, person, true, editor)
        }
        Operation::RevokeDelegation { person } => {
            changes::delegate(doc, layout, person, false, editor)
        }
        Operation::Reconsider { note } => checkins::reconsider(doc, layout, note, editor),
        Operation::SetHelp { state, person } => {
            checkins::set_help(doc, layout, person.as_deref(), *state, editor)
        }
        Operation::BeginReplay {
            source,
            source_number,
            speed,
            total,
        } => {
            let begin = replay::Begin {
                source,
                source_number: *source_number,
                speed: *speed,
                total: *total,
            };
            replay::begin(doc, layout, begin, editor)
        }
        Operation::DeliverReplayStep { step, entry } => {
            replay::deliver(doc, layout, *step, entry, editor)
        }
    }?;
    stamped(doc, editor, edited)
}
