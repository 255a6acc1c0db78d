//! The commander's check-ins, turned on per template (`<!-- commandpost reconsider=30m help-flag -->`):
//!
//! - **Reconsider the options**: every N minutes the commander is asked "is the current approach still right?"
//!   and answers with a one-line note that goes into the timeline (`reconsider`); the answer resets the due time.
//!   Root key [`keys::CHECKINS`]: the settings the declaration wrote and the last answer.
//! - **I need help / I am overloaded**: each responder's flag (`setHelp`), shown beside their name in presence and
//!   to the commander at once, each raise and clear logged in the timeline. Root key [`keys::HELP`].
//!
//! Both keys are the server's: a raw `/sync` change to them is put back (the schema rule), and the typed
//! operations are judged by the command rules (only the commander answers the prompt; a person raises only their
//! own flag; the commander may clear anyone's).

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::read::Reader;
use crate::schema::keys;

/// What a template turns on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckInSettings {
    /// `reconsider=30m`: how often the commander is asked to reconsider the approach, in minutes.
    pub reconsider_minutes: Option<i64>,
    /// `help-flag`: responders may raise "I need help" / "I am overloaded".
    pub help_flag: bool,
}

impl CheckInSettings {
    /// Writes the settings at declaration; a template with neither writes nothing, so its documents are as before.
    pub(crate) fn write(&self, doc: &mut AutoCommit) -> Result<(), automerge::AutomergeError> {
        if self.reconsider_minutes.is_none() && !self.help_flag {
            return Ok(());
        }
        let map = doc.put_object(ROOT, keys::CHECKINS, ObjType::Map)?;
        if let Some(minutes) = self.reconsider_minutes {
            doc.put(&map, "reconsiderMinutes", minutes)?;
        }
        if self.help_flag {
            doc.put(&map, "helpFlag", true)?;
        }
        Ok(())
    }
}

/// A responder's flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HelpState {
    /// "I need help."
    Help,
    /// "I am overloaded."
    Overloaded,
}

impl HelpState {
    /// The stored and JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            HelpState::Help => "help",
            HelpState::Overloaded => "overloaded",
        }
    }

    /// What the timeline and the chat channel say of `person`.
    pub fn describe(self, person: &str) -> String {
        match self {
            HelpState::Help => format!("{person} needs help"),
            HelpState::Overloaded => format!("{person} is overloaded"),
        }
    }

    fn parse(s: &str) -> Option<HelpState> {
        match s {
            "help" => Some(HelpState::Help),
            "overloaded" => Some(HelpState::Overloaded),
            _ => None,
        }
    }
}

/// The last answer to the reconsider prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconsidered {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (the commander then).
    pub by: String,
    /// The one-line note.
    pub note: String,
}

/// One person's flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpFlag {
    /// Raised now, or `null` once cleared.
    pub state: Option<HelpState>,
    /// When it last changed.
    pub at: Option<DateTime<Utc>>,
    /// How many times this person raised a flag in this incident.
    pub raised: i64,
}

/// The check-ins of an incident whose template turned them on (the JSON export's `checkins`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckIns {
    /// How often the commander reconsiders, in minutes; absent: no such prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconsider_minutes: Option<i64>,
    /// Whether responders may raise the help flag.
    pub help_flag: bool,
    /// The last answer to the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconsidered: Option<Reconsidered>,
    /// How many times the commander answered the prompt.
    pub reconsiderations: i64,
    /// When the next answer is due (the last answer, or the declaration, plus the interval); absent without the
    /// prompt and once the incident is resolved or closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconsider_due_at: Option<DateTime<Utc>>,
    /// Person → flag, for everyone who ever raised one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub help: BTreeMap<String, HelpFlag>,
}

impl CheckIns {
    /// The people whose flag is raised now, with it.
    pub fn raised(&self) -> impl Iterator<Item = (&str, HelpState)> {
        self.help
            .iter()
            .filter_map(|(person, flag)| Some((person.as_str(), flag.state?)))
    }
}

/// The check-ins as written; `None` for an incident whose template turned none on. `open` is whether the incident
/// still runs (not resolved or closed), when the prompt falls due.
pub(crate) fn read_checkins<D: ReadDoc>(r: &Reader<'_, D>, open: bool) -> Option<CheckIns> {
    let map = r.map(&ROOT, keys::CHECKINS)?;
    let reconsider_minutes = r.int(&map, "reconsiderMinutes").filter(|m| *m > 0);
    let reconsidered = r.map(&map, "reconsidered").and_then(|last| {
        Some(Reconsidered {
            at: r.time(&last, "at")?,
            by: r.str(&last, "by")?,
            note: r.str(&last, "note").unwrap_or_default(),
        })
    });
    let since = reconsidered
        .as_ref()
        .map(|last| last.at)
        .or_else(|| r.time(&ROOT, keys::CREATED_AT));
    let reconsider_due_at = match (reconsider_minutes, since) {
        (Some(minutes), Some(since)) if open => Some(since + Duration::minutes(minutes)),
        _ => None,
    };
    Some(CheckIns {
        reconsider_minutes,
        help_flag: r.bool(&map, "helpFlag").unwrap_or(false),
        reconsidered,
        reconsiderations: r.int(&map, "reconsiderations").unwrap_or(0),
        reconsider_due_at,
        help: read_help(r)
            .into_iter()
            .map(|(person, (state, at, raised))| (person, HelpFlag { state, at, raised }))
            .collect(),
    })
}

/// Person → (state, when, times raised), as written under [`keys::HELP`].
#[allow(clippy::type_complexity)]
pub(crate) fn read_help<D: ReadDoc>(
    r: &Reader<'_, D>,
) -> BTreeMap<String, (Option<HelpState>, Option<DateTime<Utc>>, i64)> {
    let Some(map) = r.map(&ROOT, keys::HELP) else {
        return BTreeMap::new();
    };
    r.keys(&map)
        .into_iter()
        .filter_map(|person| {
            let entry = r.map(&map, person.as_str())?;
            let state = r.str(&entry, "state").and_then(|s| HelpState::parse(&s));
            let at = r.time(&entry, "at");
            let raised = r.int(&entry, "raised").unwrap_or(0);
            Some((person, (state, at, raised)))
        })
        .collect()
}
