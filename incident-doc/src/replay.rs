//! Replay drills: a past incident's timeline entries and alerts delivered again, at their original relative times
//! (or faster), into a new drill incident whose players write the rest of the document themselves.
//!
//! This module holds what needs no clock or storage: the [`Schedule`] read from the source incident (every timeline
//! entry with its offset from the source's declaration, and for an entry an alert recorded, the alert's
//! fingerprint and state, found in the document's history); the drill's root key `replay` ([`ReplayView`]:
//! source, speed, steps delivered of how many), which only the server writes, so the rules put back a raw `/sync`
//! write to it like any other server-owned key; and the side-by-side [`Comparison`] of the drill with its source.
//! The operations `beginReplay` and `deliverReplayStep` (in `operation/replay.rs`) write the key; a step is delivered
//! only when the document says the one before it was the last delivered, so a step is never applied twice whichever
//! node's scheduler (`server/src/replay.rs`) sends it.

use std::collections::HashMap;

use automerge::{ActorId, ObjId, ROOT, ReadDoc};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analytics::Facts;
use crate::incident::Incident;
use crate::read::Reader;
use crate::schema::{FieldKind, SERVER_NAME, Stage, keys};
use crate::view::{FieldValue, IncidentView};

/// The slowest replay: half speed, to walk through a dense incident.
pub const MIN_SPEED: f64 = 0.5;
/// The fastest replay: a day-long incident in a quarter of an hour.
pub const MAX_SPEED: f64 = 100.0;

/// Whether `speed` is one a replay runs at: [`MIN_SPEED`] to [`MAX_SPEED`], in hundredths (how it is stored).
pub fn valid_speed(speed: f64) -> bool {
    speed.is_finite()
        && (MIN_SPEED..=MAX_SPEED).contains(&speed)
        && ((speed * 100.0).round() - speed * 100.0).abs() < 1e-6
}

/// One step of a replay: a timeline entry of the source, when it came and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Milliseconds after the source's declaration (0 for anything before it), at the source's own pace.
    pub offset_ms: i64,
    /// Who wrote the entry in the source (a person or a bot); the drill's entry names them in its text.
    pub author: String,
    /// The entry's text in the source.
    pub text: String,
    /// The alert whose notification wrote the entry, if one did: re-recorded as an alert in the drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<StepAlert>,
}

/// The alert behind a step, as the source's `alerts` record held it when the entry was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepAlert {
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// Firing, or resolved.
    pub firing: bool,
    /// How long before the entry the alert started firing, in milliseconds at the source's pace (0 or more).
    pub started_before_ms: i64,
}

impl Step {
    /// The drill's timeline text: the source's, naming its author, since the server writes the entry.
    pub fn drill_text(&self) -> String {
        format!("{} (replayed): {}", self.author, self.text)
    }
}

/// What a replay delivers, read from the source incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The moment offsets count from: the source's declaration.
    pub origin: DateTime<Utc>,
    /// Oldest first (ties in the order the source's timeline lists them).
    pub steps: Vec<Step>,
}

/// The drill's root key `replay`, as the JSON export shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplayView {
    /// The source incident's id.
    pub source: String,
    /// The source incident's number.
    pub source_number: Option<i64>,
    /// How many times faster than the source the steps come.
    pub speed: f64,
    /// How many steps were delivered (the last one delivered is number `step`; 0 before the first).
    pub step: i64,
    /// How many steps there are.
    pub total: i64,
}

impl ReplayView {
    /// `×10`, `×0.5`: the speed as people read it.
    pub fn speed_label(&self) -> String {
        format!("×{}", self.speed)
    }

    /// "Replays incident #12 at ×10": the line exports and the postmortem draft start with.
    pub fn describe(&self) -> String {
        let source = match self.source_number {
            Some(n) => format!("incident #{n}"),
            None => format!("incident {}", self.source),
        };
        format!(
            "replays {source} at {}: {} of {} timeline entries delivered",
            self.speed_label(),
            self.step,
            self.total
        )
    }
}

/// Reads the `replay` key of a document (now or at the reader's heads); absent on anything but a replay drill.
pub(crate) fn read_replay<D: ReadDoc>(r: &Reader<'_, D>) -> Option<ReplayView> {
    let map = r.map(&ROOT, keys::REPLAY)?;
    Some(ReplayView {
        source: r.str(&map, "source")?,
        source_number: r.int(&map, "sourceNumber"),
        speed: r.int(&map, "speedCenti")? as f64 / 100.0,
        step: r.int(&map, "step")?,
        total: r.int(&map, "total")?,
    })
}

impl Incident {
    /// The replay this document is, if it is a replay drill.
    pub fn replay(&self) -> Option<ReplayView> {
        read_replay(&Reader::new(self.doc(), None))
    }

    /// What a replay of this incident delivers: every timeline entry but the server's own, oldest first, at its
    /// offset from the declaration; an entry that recording an alert wrote carries that alert (found in the
    /// history: the alert state written by the same change as the entry).
    pub fn replay_schedule(&mut self) -> Schedule {
        let view = self.view();
        let origin = view
            .field_of_kind(FieldKind::Timestamps)
            .and_then(|f| match &f.value {
                FieldValue::Timestamps(stamps) => stamps.get(&Stage::Declared).copied(),
                _ => None,
            })
            .or(view.headline.created_at)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let alerts = self.alert_entries();
        let mut entries: Vec<(DateTime<Utc>, Step)> = match view
            .field_of_kind(FieldKind::Timeline)
            .map(|f| &f.value)
        {
            Some(FieldValue::Timeline(entries)) => entries
                .iter()
                .rev()
                .filter(|e| e.author != SERVER_NAME)
                .map(|e| {
                    let offset_ms = (e.at - origin).num_milliseconds().max(0);
                    let alert =
                        alerts
                            .get(&e.id)
                            .map(|(fingerprint, firing, starts_at)| StepAlert {
                                fingerprint: fingerprint.clone(),
                                firing: *firing,
                                started_before_ms: (e.at - *starts_at).num_milliseconds().max(0),
                            });
                    let step = Step {
                        offset_ms,
                        author: e.author.clone(),
                        text: e.text.clone(),
                        alert,
                    };
                    (e.at, step)
                })
                .collect(),
            _ => Vec::new(),
        };
        // The view lists newest first with ties by id; reversed, a stable sort by time keeps that order for ties.
        entries.sort_by_key(|(at, _)| *at);
        Schedule {
            origin,
            steps: entries.into_iter().map(|(_, step)| step).collect(),
        }
    }

    /// Timeline entry id → (fingerprint, firing, startsAt) for each entry that recording an alert wrote: the alert
    /// state object and the entry are created by one change, so each alert state in the history (read at the change
    /// that wrote it) is matched to the entry that change created.
    fn alert_entries(&mut self) -> HashMap<String, (String, bool, DateTime<Utc>)> {
        let doc = self.doc_mut().document();
        let mut found = HashMap::new();
        let Some(timeline_key) = crate::view::read_layout(&Reader::new(doc, None))
            .into_iter()
            .find(|f| f.kind == FieldKind::Timeline)
            .map(|f| f.key)
        else {
            return found;
        };
        let now = Reader::new(doc, None);
        let Some(list) = now.list(&ROOT, timeline_key.as_str()) else {
            return found;
        };
        // Which change created each entry: by the entry object's id (the actor and counter of its creation).
        let entries: Vec<(ObjId, String)> = now
            .maps_in(&list)
            .into_iter()
            .filter_map(|obj| now.str(&obj, "id").map(|id| (obj, id)))
            .collect();
        if entries.is_empty() {
            return found;
        }
        for change in doc.get_changes(&[]) {
            // Alerts are recorded only by typed operations on the server (a raw change of `alerts` is put back),
            // whose commit messages name them: a cheap filter before the read of the past below, which walks the
            // history (what matches is decided by the objects the change created, not by the message).
            let records_alerts = change
                .message()
                .is_some_and(|m| m.contains("recordAlert") || m.contains("deliverReplayStep"));
            if !records_alerts {
                continue;
            }
            let (actor, first, last) = (
                change.actor_id().clone(),
                change.start_op().get(),
                change.max_op(),
            );
            let made_here = |obj: &ObjId| created_by(obj, &actor, first, last);
            let Some(entry) = entries.iter().find(|(obj, _)| made_here(obj)) else {
                continue;
            };
            let heads = [change.hash()];
            let then = Reader::new(doc, Some(&heads));
            let Some(alerts) = then.map(&ROOT, keys::ALERTS) else {
                continue;
            };
            for fingerprint in then.keys(&alerts) {
                let Some(state) = then.map(&alerts, fingerprint.as_str()) else {
                    continue;
                };
                if !made_here(&state) {
                    continue;
                }
                if let (Some(status), Some(starts_at)) =
                    (then.str(&state, "status"), then.time(&state, "startsAt"))
                {
                    found.insert(
                        entry.1.clone(),
                        (fingerprint.clone(), status == "firing", starts_at),
                    );
                }
            }
        }
        found
    }
}

/// Whether object `obj` was created by the change of `actor` whose operations run from `first` to `last`.
fn created_by(obj: &ObjId, actor: &ActorId, first: u64, last: u64) -> bool {
    matches!(obj, ObjId::Id(counter, by, _) if by == actor && (first..=last).contains(counter))
}

/// One incident's side of a [`Comparison`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Side {
    /// The incident's number.
    pub number: Option<i64>,
    /// Its title.
    pub title: String,
    /// Its lifecycle state.
    pub status: Option<String>,
    /// Mitigated − declared, in seconds, as the team's own clock ran (absent until mitigated).
    pub declared_to_mitigated_seconds: Option<i64>,
    /// Times command passed from one person to another.
    pub handoffs: usize,
    /// Who held command, in order.
    pub commanders: Vec<String>,
    /// Timeline entries.
    pub timeline_entries: usize,
    /// The summary as the team wrote it.
    pub summary: String,
    /// The detailed status as the team wrote it.
    pub detailed_status: String,
}

impl Side {
    /// The side of the incident `view` with the record of its history.
    fn of(view: &IncidentView, record: &crate::history::Record) -> Side {
        let facts = Facts::new("", view, record);
        let text = |key: &str| match view.field(key).map(|f| &f.value) {
            Some(FieldValue::Text(t)) => t.clone(),
            _ => String::new(),
        };
        Side {
            number: facts.number,
            title: facts.title,
            status: facts.status,
            declared_to_mitigated_seconds: facts
                .declared_at
                .zip(facts.mitigated_at)
                .map(|(declared, mitigated)| (mitigated - declared).num_seconds()),
            handoffs: facts.handoffs,
            commanders: facts.commanders,
            timeline_entries: facts.timeline_entries,
            summary: text("summary"),
            detailed_status: text("detailedStatus"),
        }
    }
}

/// The drill beside the incident it replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The drill's replay: source, speed, steps delivered.
    pub replay: ReplayView,
    /// The drill team's incident.
    pub drill: Side,
    /// The real team's incident.
    pub original: Side,
    /// The drill's time to mitigate at the source's pace (its seconds × the speed), to set beside the original's.
    pub drill_declared_to_mitigated_at_source_pace_seconds: Option<i64>,
}

/// Compares the replay drill `drill` with its source `original`; `None` when `drill` is no replay.
pub fn compare(drill: &mut Incident, original: &mut Incident) -> Option<Comparison> {
    let replay = drill.replay()?;
    let side = |incident: &mut Incident| Side::of(&incident.view(), &incident.record(None));
    let (drill_side, original_side) = (side(drill), side(original));
    let scaled = drill_side
        .declared_to_mitigated_seconds
        .map(|s| (s as f64 * replay.speed).round() as i64);
    Some(Comparison {
        replay,
        drill: drill_side,
        original: original_side,
        drill_declared_to_mitigated_at_source_pace_seconds: scaled,
    })
}
