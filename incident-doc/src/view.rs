//! The read model: a plain snapshot of an incident document that exports, the HTTP API and the UI render from.
//!
//! Its serde form *is* the JSON export, so field names and shapes here are a public, documented contract
//! (`docs/schema.md`). Everything is ordered deterministically, so the same document gives the same bytes.

use std::collections::BTreeMap;

use automerge::{ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::read::Reader;
use crate::schema::{
    Choice, FieldDef, FieldKind, Role, SCHEMA_VERSION, SEVERITY_KEY, Stage, TITLE_KEY, keys,
};

/// The whole incident as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    /// The schema version the document declares (0 if it declares none).
    pub schema_version: i64,
    /// That template's display name.
    pub template_name: String,
    /// That template's version (a hash of its source); absent in documents declared before templates had
    /// versions, whose JSON export therefore stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<String>,
    /// Template, title, number, status, severity, drill flag, creation time: what lists and headers need.
    #[serde(flatten)]
    pub headline: Headline,
    /// Who declared it.
    pub created_by: Option<String>,
    /// The pinned fields in pin order, each once.
    pub pins: Vec<Pin>,
    /// Every field in template order, with its value and stamp.
    pub fields: Vec<FieldView>,
    /// Handoffs proposed and not yet accepted, by role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handoffs: BTreeMap<Role, Handoff>,
    /// Changes that broke a command rule and were reverted by the server, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEntry>,
    /// Who may see the incident, when it was ever restricted or someone was added: absent for an incident that was
    /// always open, so such incidents' exports are what they always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessView>,
    /// The chat channel bound to the incident (its command post), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<crate::channel::Channel>,
    /// The people the Operations lead delegated changes to production to; absent when nobody is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations_delegates: Vec<String>,
    /// The commander's check-ins, where the template turned them on: the reconsider prompt's interval, last
    /// answer and due time, and the help flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkins: Option<crate::checkins::CheckIns>,
    /// The incident a replay drill replays, how fast, and how far it got; absent on anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayView>,
}

/// The restriction and the people the commander added (the declarer and role holders are members anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessView {
    /// Whether only members (and administrators) may see the incident.
    pub restricted: bool,
    /// The people added to the members, in the order they were added.
    pub members: Vec<String>,
}

/// A proposed handoff: the role goes to `to` once they accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Handoff {
    /// Who is to take the role.
    pub to: String,
    /// Who proposed it.
    pub by: Option<String>,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// One reverted attempt to break a command rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the server reverted it (or recorded the override).
    pub at: DateTime<Utc>,
    /// Whose change it was (the token name of the connection it came from), or the administrator who overrode.
    pub by: String,
    /// The rule (`commandHierarchy`, `pins`, `lifecycle`, `timelineEdit`, …), or `commandOverride` for an
    /// administrator's override of command.
    pub rule: String,
    /// What was refused and why.
    pub message: String,
}

/// A pinned field and who pinned it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pin {
    /// The pinned field's key.
    pub field: String,
    /// Who pinned it.
    pub by: String,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// Who last changed a field and when: the *last updated at … by …* stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// When the change was made.
    pub at: DateTime<Utc>,
    /// Who made it.
    pub by: String,
}

/// One field: its definition from the layout, its value and its stamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldView {
    /// Key, label, kind and the rest of the layout entry.
    #[serde(flatten)]
    pub def: FieldDef,
    /// The current value, shaped by the kind.
    pub value: FieldValue,
    /// The last change to this field, if any.
    pub updated: Option<Stamp>,
    /// When the field's owner should next refresh it: its last update (or the declaration) plus the template's
    /// cadence; absent for fields without a cadence.
    #[serde(rename = "dueAt", default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// Past its due time at the moment the view was served (see [`IncidentView::mark_stale`]); never set in
    /// exports, which must not depend on when they are made.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// A field's value; which variant depends on the field's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// `text` and `markdown`.
    Text(String),
    /// `status` and `choice`: the chosen value, if any.
    Choice(Option<String>),
    /// `flag`.
    Flag(bool),
    /// `roles`: role → person for the roles that are assigned.
    Roles(BTreeMap<Role, String>),
    /// `checklist`, in list order.
    Checklist(Vec<Item>),
    /// `timeline`, newest first.
    Timeline(Vec<Entry>),
    /// `timestamps`: stage → time for the stages that are stamped.
    Timestamps(BTreeMap<Stage, DateTime<Utc>>),
    /// `questions`: question key → answer for the questions answered.
    Questions(BTreeMap<String, bool>),
    /// `deviations`: the revert list, in the order deviations were added.
    Deviations(Vec<Deviation>),
    /// `changes`: the operations log, in the order changes were logged.
    Changes(Vec<Change>),
}

/// One deviation from normal on the revert list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deviation {
    /// Stable id to address the deviation.
    pub id: String,
    /// When production was changed.
    pub at: DateTime<Utc>,
    /// Who recorded it (the server writes the sender).
    pub by: String,
    /// What was changed away from normal.
    pub what: String,
    /// How to put it back.
    pub revert: String,
    /// Who reverted it and when; absent while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Reverted>,
}

/// The reverting of a deviation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// Who marked it reverted.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// How, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One entry of the operations log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Stable id.
    pub id: String,
    /// When the change was made.
    pub at: DateTime<Utc>,
    /// Who made it (the server writes the sender).
    pub by: String,
    /// What was changed.
    pub what: String,
    /// On what system.
    pub target: String,
    /// Made by someone who neither held the Operations role nor was delegated by its lead: freelancing.
    pub uncoordinated: bool,
}

/// One checklist item (an exit criterion, a TODO or a bug).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stable id to address the item while others insert and delete around it.
    pub id: String,
    /// What to do or check.
    pub text: String,
    /// DONE when true, TODO otherwise.
    pub done: bool,
    /// Who is on it.
    pub owner: Option<String>,
    /// A bug reference (id or URL).
    pub bug: Option<String>,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable id to address the entry.
    pub id: String,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
    /// Who wrote it (a person or a bot).
    pub author: String,
    /// What happened (Markdown).
    pub text: String,
}

impl IncidentView {
    /// Reads a document as it is now (`heads` = `None`) or as it was at `heads`.
    pub fn read<D: ReadDoc>(doc: &D, heads: Option<&[ChangeHash]>) -> IncidentView {
        let r = Reader::new(doc, heads);
        let layout_defs = read_layout(&r);
        let stamps = r.map(&ROOT, keys::UPDATED);
        let cadences = Cadences::read(&r, &layout_defs);
        let fields: Vec<FieldView> = layout_defs
            .iter()
            .cloned()
            .map(|def| {
                let updated = read_stamp(&r, stamps.as_ref(), &def.key);
                FieldView {
                    value: read_value(&r, &def),
                    due_at: cadences.due_at(&def, updated.as_ref()),
                    def,
                    updated,
                    stale: false,
                }
            })
            .collect();
        let headline = Headline::read_with(&r, &layout_defs);
        // A resolved or closed incident asks nobody to reconsider its approach.
        let settled = headline.status.as_deref().is_some_and(|s| {
            s == crate::schema::Status::Resolved.as_str()
                || s == crate::schema::Status::Closed.as_str()
        });
        IncidentView {
            schema_version: r.int(&ROOT, keys::SCHEMA_VERSION).unwrap_or(0),
            template_name: r.str(&ROOT, keys::TEMPLATE_NAME).unwrap_or_default(),
            template_version: r.str(&ROOT, keys::TEMPLATE_VERSION),
            headline,
            created_by: r.str(&ROOT, keys::CREATED_BY),
            pins: read_pins(&r, &fields),
            fields,
            handoffs: read_handoffs(&r),
            audit: read_audit(&r),
            access: r.map(&ROOT, keys::ACCESS).map(|_| {
                let (restricted, members) = crate::access::read_access(&r);
                AccessView {
                    restricted,
                    members,
                }
            }),
            channel: crate::channel::read_channel(&r),
            operations_delegates: r
                .list(&ROOT, keys::OPERATIONS_DELEGATES)
                .map(|list| r.strings_in(&list))
                .unwrap_or_default(),
            checkins: crate::checkins::read_checkins(&r, !settled),
            replay: crate::replay::read_replay(&r),
        }
    }

    /// Flags the fields whose due time has passed at `now`: the live view a responder or a bot reads, where an
    /// overdue *detailed status* must stand out.
    pub fn mark_stale(&mut self, now: DateTime<Utc>) {
        for field in &mut self.fields {
            field.stale = field.due_at.is_some_and(|due| due < now);
        }
    }

    /// Whether the document was written by a schema this crate understands.
    pub fn is_supported(&self) -> bool {
        (1..=SCHEMA_VERSION).contains(&self.schema_version)
    }

    /// The field with this key.
    pub fn field(&self, key: &str) -> Option<&FieldView> {
        self.fields.iter().find(|f| f.def.key == key)
    }

    /// The first field of this kind (status, roles, timeline and timestamps occur at most once).
    pub fn field_of_kind(&self, kind: FieldKind) -> Option<&FieldView> {
        self.fields.iter().find(|f| f.def.kind == kind)
    }

    /// Fields in render order: pinned fields first in pin order, then the rest in template order.
    pub fn render_order(&self) -> Vec<(&FieldView, bool)> {
        let mut out: Vec<(&FieldView, bool)> = self
            .pins
            .iter()
            .filter_map(|p| self.field(&p.field))
            .map(|f| (f, true))
            .collect();
        out.extend(
            self.fields
                .iter()
                .filter(|f| !self.pins.iter().any(|p| p.field == f.def.key))
                .map(|f| (f, false)),
        );
        out
    }

    /// The person holding `role`: the assignee, or the commander for undelegated roles.
    pub fn holder(&self, role: Role) -> Option<(&str, bool)> {
        let Some(FieldValue::Roles(roles)) = self.field_of_kind(FieldKind::Roles).map(|f| &f.value)
        else {
            return None;
        };
        match roles.get(&role) {
            Some(person) => Some((person.as_str(), false)),
            None if role.defaults_to_commander() => {
                roles.get(&Role::Commander).map(|c| (c.as_str(), true))
            }
            None => None,
        }
    }
}

/// The few facts that lists and indexes need, read without walking the timeline or checklists, so that keeping an
/// index current costs little on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headline {
    /// The template id.
    pub template: String,
    /// The title field's text.
    pub title: String,
    /// The incident number.
    pub number: Option<i64>,
    /// The lifecycle state.
    pub status: Option<String>,
    /// The severity, if set.
    pub severity: Option<String>,
    /// Whether this is a drill.
    pub drill: bool,
    /// When it was declared.
    pub created_at: Option<DateTime<Utc>>,
}

impl Headline {
    /// Reads the headline of a document as it is now.
    pub fn read<D: ReadDoc>(doc: &D) -> Headline {
        let r = Reader::new(doc, None);
        Headline::read_with(&r, &read_layout(&r))
    }

    /// Reads the headline given the document's layout, now or at the reader's heads.
    pub(crate) fn read_with<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> Headline {
        let value = |pred: &dyn Fn(&FieldDef) -> bool| {
            layout.iter().find(|d| pred(d)).map(|d| read_value(r, d))
        };
        let choice = |v: Option<FieldValue>| match v {
            Some(FieldValue::Choice(c)) => c,
            _ => None,
        };
        Headline {
            template: r.str(&ROOT, keys::TEMPLATE).unwrap_or_default(),
            title: match value(&|d| d.key == TITLE_KEY) {
                Some(FieldValue::Text(t)) => t,
                _ => String::new(),
            },
            number: r.int(&ROOT, keys::NUMBER),
            status: choice(value(&|d| d.kind == FieldKind::Status)),
            severity: read_severity(r, layout),
            drill: r.bool(&ROOT, keys::DRILL).unwrap_or(false),
            created_at: r.time(&ROOT, keys::CREATED_AT),
        }
    }
}

/// The incident's severity: the value of the choice field keyed [`SEVERITY_KEY`], if the layout has one.
pub(crate) fn read_severity<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> Option<String> {
    layout
        .iter()
        .find(|d| d.key == SEVERITY_KEY && d.kind == FieldKind::Choice)
        .and_then(|_| r.str(&ROOT, SEVERITY_KEY))
}

pub(crate) fn read_layout<D: ReadDoc>(r: &Reader<'_, D>) -> Vec<FieldDef> {
    let Some(list) = r.list(&ROOT, keys::LAYOUT) else {
        return Vec::new();
    };
    r.maps_in(&list)
        .into_iter()
        .filter_map(|m| {
            let key = r.str(&m, "key")?;
            let kind = r.str(&m, "kind")?.parse::<FieldKind>().ok()?;
            let options = r
                .list(&m, "options")
                .map(|l| {
                    r.maps_in(&l)
                        .into_iter()
                        .filter_map(|o| {
                            Some(Choice {
                                key: r.str(&o, "key")?,
                                label: r.str(&o, "label")?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(FieldDef {
                label: r.str(&m, "label").unwrap_or_else(|| key.clone()),
                key,
                kind,
                owner: r.str(&m, "owner").and_then(|o| o.parse().ok()),
                cadence_minutes: r.int(&m, "cadenceMinutes"),
                cadence_by_severity: r
                    .map(&m, "cadenceBySeverity")
                    .map(|by| {
                        r.keys(&by)
                            .into_iter()
                            .filter_map(|k| Some((k.clone(), r.int(&by, &k)?)))
                            .collect()
                    })
                    .unwrap_or_default(),
                stamp: r.bool(&m, "stamp").unwrap_or(false),
                prompt: r.str(&m, "prompt"),
                options,
            })
        })
        .collect()
}

pub(crate) fn read_value<D: ReadDoc>(r: &Reader<'_, D>, def: &FieldDef) -> FieldValue {
    let key = def.key.as_str();
    match def.kind {
        FieldKind::Text | FieldKind::Markdown => {
            FieldValue::Text(r.text(&ROOT, key).unwrap_or_default())
        }
        FieldKind::Status | FieldKind::Choice => FieldValue::Choice(r.str(&ROOT, key)),
        FieldKind::Flag => FieldValue::Flag(r.bool(&ROOT, key).unwrap_or(false)),
        FieldKind::Roles => FieldValue::Roles(
            r.map(&ROOT, key)
                .map(|m| {
                    Role::ALL
                        .iter()
                        .filter_map(|role| Some((*role, r.str(&m, role.as_str())?)))
                        .filter(|(_, person)| !person.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        ),
        FieldKind::Checklist => FieldValue::Checklist(
            r.list(&ROOT, key)
                .map(|l| {
                    r.maps_in(&l)
                        .into_iter()
                        .filter_map(|m| {
                            Some(Item {
                                id: r.str(&m, "id")?,
                                text: r.text(&m, "text").unwrap_or_default(),
                                done: r.bool(&m, "done").unwrap_or(false),
                                owner: r.str(&m, "owner"),
                                bug: r.str(&m, "bug"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        FieldKind::Timeline => {
            let mut entries: Vec<Entry> = r
                .list(&ROOT, key)
                .map(|l| {
                    r.maps_in(&l)
                        .into_iter()
                        .filter_map(|m| {
                            Some(Entry {
                                id: r.str(&m, "id")?,
                                at: r.time(&m, "at")?,
                                author: r.str(&m, "author").unwrap_or_default(),
                                text: r.text(&m, "text").unwrap_or_default(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            sort_newest_first(&mut entries);
            FieldValue::Timeline(entries)
        }
        FieldKind::Timestamps => FieldValue::Timestamps(
            r.map(&ROOT, key)
                .map(|m| {
                    Stage::ALL
                        .iter()
                        .filter_map(|s| Some((*s, r.time(&m, s.as_str())?)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        FieldKind::Deviations => FieldValue::Deviations(
            r.list(&ROOT, key)
                .map(|l| {
                    r.maps_in(&l)
                        .into_iter()
                        .filter_map(|m| {
                            let reverted = r.str(&m, "revertedBy").and_then(|by| {
                                Some(Reverted {
                                    by,
                                    at: r.time(&m, "revertedAt")?,
                                    note: r.str(&m, "revertNote"),
                                })
                            });
                            Some(Deviation {
                                id: r.str(&m, "id")?,
                                at: r.time(&m, "at")?,
                                by: r.str(&m, "by").unwrap_or_default(),
                                what: r.str(&m, "what").unwrap_or_default(),
                                revert: r.str(&m, "revert").unwrap_or_default(),
                                reverted,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        FieldKind::Changes => FieldValue::Changes(
            r.list(&ROOT, key)
                .map(|l| {
                    r.maps_in(&l)
                        .into_iter()
                        .filter_map(|m| {
                            Some(Change {
                                id: r.str(&m, "id")?,
                                at: r.time(&m, "at")?,
                                by: r.str(&m, "by").unwrap_or_default(),
                                what: r.str(&m, "what").unwrap_or_default(),
                                target: r.str(&m, "target").unwrap_or_default(),
                                uncoordinated: r.bool(&m, "uncoordinated").unwrap_or(false),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        FieldKind::Questions => FieldValue::Questions(
            r.map(&ROOT, key)
                .map(|m| {
                    def.options
                        .iter()
                        .filter_map(|q| Some((q.key.clone(), r.bool(&m, q.key.as_str())?)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
    }
}

/// Newest first; ties (same millisecond) by id so every replica shows the same order.
pub(crate) fn sort_newest_first(entries: &mut [Entry]) {
    entries.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.id.cmp(&b.id)));
}

fn read_pins<D: ReadDoc>(r: &Reader<'_, D>, fields: &[FieldView]) -> Vec<Pin> {
    let Some(list) = r.list(&ROOT, keys::PINS) else {
        return Vec::new();
    };
    let mut pins: Vec<Pin> = Vec::new();
    for m in r.maps_in(&list) {
        let Some(field) = r.str(&m, "field") else {
            continue;
        };
        // Two people may pin the same field at once; the first pin in list order stands.
        if pins.iter().any(|p| p.field == field) || !fields.iter().any(|f| f.def.key == field) {
            continue;
        }
        pins.push(Pin {
            by: r.str(&m, "by").unwrap_or_default(),
            at: r.time(&m, "at"),
            field,
        });
    }
    pins
}

/// The object id of a root field, if it holds an object of the expected type; used by operations.
pub(crate) fn root_object<D: ReadDoc>(doc: &D, key: &str, want: ObjType) -> Option<ObjId> {
    match doc.get(ROOT, key).ok().flatten()? {
        (Value::Object(t), id) if t == want => Some(id),
        _ => None,
    }
}

fn read_handoffs<D: ReadDoc>(r: &Reader<'_, D>) -> BTreeMap<Role, Handoff> {
    let Some(map) = r.map(&ROOT, keys::HANDOFFS) else {
        return BTreeMap::new();
    };
    Role::ALL
        .iter()
        .filter_map(|role| {
            let handoff = r.map(&map, role.as_str())?;
            Some((
                *role,
                Handoff {
                    to: r.str(&handoff, "to")?,
                    by: r.str(&handoff, "by"),
                    at: r.time(&handoff, "at"),
                },
            ))
        })
        .collect()
}

fn read_audit<D: ReadDoc>(r: &Reader<'_, D>) -> Vec<AuditEntry> {
    let Some(list) = r.list(&ROOT, keys::AUDIT) else {
        return Vec::new();
    };
    r.maps_in(&list)
        .iter()
        .filter_map(|entry| {
            Some(AuditEntry {
                at: r.time(entry, "at")?,
                by: r.str(entry, "by")?,
                rule: r.str(entry, "rule")?,
                message: r.str(entry, "message").unwrap_or_default(),
            })
        })
        .collect()
}

/// The *last updated* stamp of field `key`, from the `updated` map.
pub(crate) fn read_stamp<D: ReadDoc>(
    r: &Reader<'_, D>,
    stamps: Option<&ObjId>,
    key: &str,
) -> Option<Stamp> {
    let stamp = r.map(stamps?, key)?;
    Some(Stamp {
        at: r.time(&stamp, "at")?,
        by: r.str(&stamp, "by")?,
    })
}

/// What a field's due time depends on besides its own stamp, read once per document.
pub(crate) struct Cadences {
    severity: Option<String>,
    created_at: Option<DateTime<Utc>>,
    /// When the last status update was marked sent. It restarts the cadence of the Communications lead's fields
    /// (sending the update is how they are kept current) without restamping them: their *last updated* says who
    /// last edited them, and the sender may not have.
    update_sent_at: Option<DateTime<Utc>>,
}

impl Cadences {
    pub(crate) fn read<D: ReadDoc>(r: &Reader<'_, D>, layout: &[FieldDef]) -> Cadences {
        Cadences {
            severity: read_severity(r, layout),
            created_at: r.time(&ROOT, keys::CREATED_AT),
            update_sent_at: r
                .map(&ROOT, keys::LAST_UPDATE)
                .and_then(|sent| r.time(&sent, "at")),
        }
    }

    /// Whether the field has a cadence at the incident's current severity.
    pub(crate) fn applies(&self, def: &FieldDef) -> bool {
        def.cadence(self.severity.as_deref()).is_some()
    }

    /// A field's next due time: its last stamp (or, never updated, the declaration), or for the Communications
    /// lead's fields the last update sent if later, plus its cadence at the incident's current severity.
    pub(crate) fn due_at(&self, def: &FieldDef, updated: Option<&Stamp>) -> Option<DateTime<Utc>> {
        let minutes = def.cadence(self.severity.as_deref())?;
        let edited = updated.map(|s| s.at).or(self.created_at)?;
        let since = match self.update_sent_at {
            Some(sent) if def.owner == Some(Role::Communications) => edited.max(sent),
            _ => edited,
        };
        since.checked_add_signed(chrono::Duration::minutes(minutes))
    }
}
