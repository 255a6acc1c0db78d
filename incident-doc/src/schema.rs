//! The document schema: root keys, field kinds, roles, lifecycle stages and the field layout stored in every
//! document.
//!
//! `docs/schema.md` describes the same schema for clients that read the Automerge document directly; the two must
//! change together (and `SCHEMA_VERSION` with them when a change is not backwards compatible).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Written under [`keys::SCHEMA_VERSION`] so that readers can refuse or migrate documents they do not understand.
pub const SCHEMA_VERSION: i64 = 1;

/// Keys of the root map that are not template fields.
pub mod keys {
    /// Integer: the schema version the document was created with.
    pub const SCHEMA_VERSION: &str = "schemaVersion";
    /// String: the id of the template the document was created from.
    pub const TEMPLATE: &str = "template";
    /// String: the display name of that template.
    pub const TEMPLATE_NAME: &str = "templateName";
    /// String: the version of that template (a hash of its source, [`crate::template::version_of`]), so incidents
    /// declared from different versions of one template can be told apart. Documents declared before templates
    /// had versions lack it.
    pub const TEMPLATE_VERSION: &str = "templateVersion";
    /// Timestamp: when the incident was declared in commandpost.
    pub const CREATED_AT: &str = "createdAt";
    /// String: who declared it.
    pub const CREATED_BY: &str = "createdBy";
    /// Integer: the incident number (`#465`), allocated by the server.
    pub const NUMBER: &str = "incidentNumber";
    /// Boolean: a drill (role-play of a past incident) rather than a real incident.
    pub const DRILL: &str = "drill";
    /// List of maps: the template's fields in order, so that a document renders without its template.
    pub const LAYOUT: &str = "layout";
    /// Map from field key to `{at, by}`: who last changed each field and when.
    pub const UPDATED: &str = "updated";
    /// List of maps `{field, by, at}`: the pinned fields in pin order.
    pub const PINS: &str = "pins";
    /// Map from role to `{to, by, at}`: a proposed handoff of that role, until the recipient accepts it.
    pub const HANDOFFS: &str = "handoffs";
    /// List of maps `{at, by, rule, message}`: changes that broke a command rule and were reverted.
    pub const AUDIT: &str = "audit";
    /// Map from Automerge actor id (hex) to the person the server received that actor's changes from (or made
    /// them for): the authorship record. Written only by the server, once per actor; history and analytics read
    /// authors here, never from what a change says about itself.
    pub const AUTHORS: &str = "authors";
    /// Map `{reason, by, at}`: the commander closed the incident with exit criteria still open, and why. Deleted
    /// when the incident is reopened.
    pub const CLOSE_OVERRIDE: &str = "closeOverride";
    /// Map from an Alertmanager fingerprint to `{status, startsAt}`: the last state of that alert the timeline
    /// recorded, so that a repeated notification adds nothing.
    pub const ALERTS: &str = "alerts";
    /// Map `{at, by, heads}`: the last status update sent, when, by whom, and the document heads it described.
    pub const LAST_UPDATE: &str = "lastUpdate";
    /// Map `{restricted, members}`: whether only the incident's members may see it (boolean), and the people the
    /// commander added to them (list of names) beside the declarer and the role holders, who are members anyway.
    /// Written at declaration when restricted; changed only by the commander or an administrator (the command
    /// rules). Absent: open, nobody added.
    pub const ACCESS: &str = "access";
    /// Map `{network, name, id?}`: the chat channel bound to the incident (`crate::channel`). Written only by the
    /// `bindChannel`/`unbindChannel` operations, which the command rules let the commander or an administrator
    /// send; absent: no channel.
    pub const CHAT_CHANNEL: &str = "chatChannel";
    /// List of names: the people the Operations lead delegated changes to production to (`delegateOperations`),
    /// so their entries in the operations log count as coordinated. Changed only by whoever holds Operations (the
    /// command rules).
    pub const OPERATIONS_DELEGATES: &str = "operationsDelegates";
    /// Map `{reconsiderMinutes?, helpFlag?, reconsidered?: {at, by, note}, reconsiderations?}`: the commander's
    /// check-ins the template turned on (written at declaration) and the last answer to the reconsider prompt
    /// (`crate::checkins`). Written only by the server (the `reconsider` operation).
    pub const CHECKINS: &str = "checkins";
    /// Map from person to `{state?, at, raised}`: each responder's "I need help" / "I am overloaded" flag
    /// (`state` absent once cleared) and how often they raised one (`crate::checkins`). Written only by the server
    /// (the `setHelp` operation).
    pub const HELP: &str = "help";
    /// Map `{source, sourceNumber, speedCenti, step, total}`: the incident a replay drill replays, how fast
    /// (hundredths of ×1), how many of its steps were delivered and of how many (`crate::replay`). Written only by
    /// the server; absent on anything but a replay drill.
    pub const REPLAY: &str = "replay";
}

/// The name the server writes its own changes under (reverts of refused changes, the authorship record, bots'
/// bookkeeping): no token may carry it, so nobody else's changes can be recorded as the server's.
pub const SERVER_NAME: &str = "commandpost";

/// The key every template must have: the incident's title, `<name>: <date>`.
pub const TITLE_KEY: &str = "title";

/// The choice field whose value selects severity-specific cadences, by its key in the built-in templates.
pub const SEVERITY_KEY: &str = "severity";

/// The checklist field whose items are the exit criteria, by its key in the built-in templates; closing waits
/// for all of them.
pub const EXIT_CRITERIA_KEY: &str = "exitCriteria";

/// How a field's value is stored and edited. Serialized in lower case, as in templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// One line of plain text in an Automerge Text (the title).
    Text,
    /// Markdown prose in an Automerge Text, merged character by character.
    Markdown,
    /// The lifecycle state (a string), shown with the incident number.
    Status,
    /// One of the template's options (a string), e.g. severity.
    Choice,
    /// A yes/no flag, e.g. restricted visibility.
    Flag,
    /// The command hierarchy: a map from role to person.
    Roles,
    /// A list of items, each TODO/DONE with optional owner and bug reference.
    Checklist,
    /// The incident timeline: a list of entries with time, author and text.
    Timeline,
    /// The lifecycle timestamps: a map from stage to time.
    Timestamps,
    /// Yes/no answers to the template's questions (e.g. the three declaration questions).
    Questions,
    /// The revert list: changes made to production away from its normal state, each with how to revert it and
    /// whether it has been; open ones block closing like open exit criteria.
    Deviations,
    /// The operations log: who changed what on which system; entries by people outside the Operations role (and
    /// not delegated by its lead) are marked uncoordinated by the rules.
    Changes,
}

impl FieldKind {
    /// Every kind, for error messages and documentation.
    pub const ALL: [FieldKind; 12] = [
        FieldKind::Text,
        FieldKind::Markdown,
        FieldKind::Status,
        FieldKind::Choice,
        FieldKind::Flag,
        FieldKind::Roles,
        FieldKind::Checklist,
        FieldKind::Timeline,
        FieldKind::Timestamps,
        FieldKind::Questions,
        FieldKind::Deviations,
        FieldKind::Changes,
    ];

    /// The name used in templates and in the stored layout.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Markdown => "markdown",
            FieldKind::Status => "status",
            FieldKind::Choice => "choice",
            FieldKind::Flag => "flag",
            FieldKind::Roles => "roles",
            FieldKind::Checklist => "checklist",
            FieldKind::Timeline => "timeline",
            FieldKind::Timestamps => "timestamps",
            FieldKind::Questions => "questions",
            FieldKind::Deviations => "deviations",
            FieldKind::Changes => "changes",
        }
    }

    /// Kinds that hold state the operations find by kind rather than by key, so a template may have at most one.
    pub fn is_singleton(self) -> bool {
        matches!(
            self,
            FieldKind::Status
                | FieldKind::Roles
                | FieldKind::Timeline
                | FieldKind::Timestamps
                | FieldKind::Deviations
                | FieldKind::Changes
        )
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FieldKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// Generates a small string enum with its stored names, so roles, stages and states share one shape. The names are
/// `tt`, not `literal`: a `literal` fragment reaches derive macros wrapped in an invisible group, where utoipa's
/// reading of `#[serde(rename)]` missed it and described `Commander` where the JSON says `commander`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in display order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name stored in the document and used in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ();

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or(())
            }
        }
    };
}

named_enum! {
    /// The roles of the command hierarchy, as the Incident Command System names them.
    Role {
        /// Holds the high-level state and every role not delegated.
        Commander = "commander",
        /// The only people changing the production system.
        Operations = "operations",
        /// Files bugs, arranges handoffs, tracks deviations to revert later.
        Planning = "planning",
        /// Sends periodic updates and keeps the document accurate.
        Communications = "communications",
        /// A planned handoff, visible to everyone before it happens.
        NextCommander = "nextCommander",
    }
}

impl Role {
    /// How the role is written in exports and the UI.
    pub fn label(self) -> &'static str {
        match self {
            Role::Commander => "Incident Commander",
            Role::Operations => "Operations lead",
            Role::Planning => "Planning lead",
            Role::Communications => "Communications lead",
            Role::NextCommander => "Next Incident Commander",
        }
    }

    /// Whether the commander holds this role while nobody else is assigned to it.
    pub fn defaults_to_commander(self) -> bool {
        matches!(
            self,
            Role::Operations | Role::Planning | Role::Communications
        )
    }
}

named_enum! {
    /// The named moments of an incident; metrics are differences of pairs of them.
    Stage {
        /// The outage began (impact, not response).
        ImpactStarted = "impactStarted",
        /// Someone or something noticed.
        Detected = "detected",
        /// The incident was declared.
        Declared = "declared",
        /// The impact stopped.
        Mitigated = "mitigated",
        /// The underlying problem was fixed.
        Resolved = "resolved",
        /// The response ended and the document was closed.
        Closed = "closed",
    }
}

impl Stage {
    /// How the stage is written in exports and the UI.
    pub fn label(self) -> &'static str {
        match self {
            Stage::ImpactStarted => "Impact started",
            Stage::Detected => "Detected",
            Stage::Declared => "Declared",
            Stage::Mitigated => "Mitigated",
            Stage::Resolved => "Resolved",
            Stage::Closed => "Closed",
        }
    }
}

named_enum! {
    /// The lifecycle states of an incident, in the order an incident moves through them.
    Status {
        /// Declared, responders gathering.
        Declared = "declared",
        /// Being worked on.
        Active = "active",
        /// Impact stopped; cleanup and root cause continue.
        Mitigated = "mitigated",
        /// Fixed; the postmortem remains.
        Resolved = "resolved",
        /// Over; the document is an archive.
        Closed = "closed",
    }
}

impl Status {
    /// The lifecycle stage that entering this state stamps, if it is not stamped yet.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Status::Declared | Status::Active => None,
            Status::Mitigated => Some(Stage::Mitigated),
            Status::Resolved => Some(Stage::Resolved),
            Status::Closed => Some(Stage::Closed),
        }
    }
}

/// One option of a choice field or one question of a questions field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Choice {
    /// The stored value (choice) or answer key (questions).
    pub key: String,
    /// What people read.
    pub label: String,
}

/// One field of a document's layout: everything needed to render and edit it without its template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FieldDef {
    /// The root-map key holding the value; stable across template wording changes.
    pub key: String,
    /// The heading people read.
    pub label: String,
    /// How the value is stored and edited.
    pub kind: FieldKind,
    /// The role expected to keep this field current, if the template names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Role>,
    /// How often the field should be refreshed, in minutes; the UI flags it as stale after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cadence_minutes: Option<i64>,
    /// Cadences for particular severities (option key of the severity field → minutes), overriding
    /// `cadence_minutes`: a SEV1's status goes stale sooner than a SEV3's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cadence_by_severity: BTreeMap<String, i64>,
    /// Whether exports print the *last updated at … by …* stamp under the field.
    #[serde(default)]
    pub stamp: bool,
    /// A hint shown while the field is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The allowed values (choice) or the questions (questions); empty for other kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Choice>,
}

impl FieldDef {
    /// The refresh cadence in minutes while the incident has `severity`: the severity's own, else the default.
    pub fn cadence(&self, severity: Option<&str>) -> Option<i64> {
        severity
            .and_then(|s| self.cadence_by_severity.get(s))
            .copied()
            .or(self.cadence_minutes)
    }
}

/// The stored text encoding: every position in the API counts Unicode code points (`char`s), on the server and in
/// the browser alike, so an index means the same character everywhere.
pub const TEXT_ENCODING: automerge::TextEncoding = automerge::TextEncoding::UnicodeCodePoint;
