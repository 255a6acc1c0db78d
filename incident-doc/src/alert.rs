//! Alerts from monitoring (Prometheus Alertmanager, through the server's hook) recorded in the timeline, once
//! each: the root key `alerts` maps an alert's fingerprint to the last state recorded for it (`{status,
//! startsAt}`), so a payload sent again (Alertmanager repeats notifications) adds nothing, while the same alert
//! resolving, or firing again later (a new `startsAt`), adds its entry.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use chrono::{DateTime, Utc};

use crate::operation::{self, Applied, Editor, OpError, Operation};
use crate::read::Reader;
use crate::schema::FieldDef;

/// The root key of the recorded alert states.
pub const ALERTS_KEY: &str = "alerts";

/// One alert's notification, as [`Operation::RecordAlert`] carries it.
pub(crate) struct Alert<'a> {
    /// Alertmanager's fingerprint of the alert's labels.
    pub fingerprint: &'a str,
    /// Firing, or resolved.
    pub firing: bool,
    /// When the alert started firing.
    pub starts_at: DateTime<Utc>,
    /// The timeline entry.
    pub text: &'a str,
    /// The entry's time.
    pub at: DateTime<Utc>,
}

/// Applies [`Operation::RecordAlert`]: a timeline entry `text` at `at`, unless the alert's fingerprint is recorded
/// with this status and start already; then nothing changes and no entry id is returned.
pub(crate) fn record(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    alert: Alert<'_>,
    editor: &Editor,
) -> Result<(Applied, Vec<String>), OpError> {
    let Alert {
        fingerprint,
        firing,
        starts_at,
        text,
        at,
    } = alert;
    let fingerprint = fingerprint.trim();
    if fingerprint.is_empty() || fingerprint.chars().count() > crate::MAX_SHORT_CHARS {
        return Err(OpError::InvalidValue(
            "an alert needs a fingerprint of at most 200 characters".into(),
        ));
    }
    let status = if firing { "firing" } else { "resolved" };
    let r = Reader::new(&*doc, None);
    if let Some(alerts) = r.map(&ROOT, ALERTS_KEY)
        && let Some(seen) = r.map(&alerts, fingerprint)
        && r.str(&seen, "status").as_deref() == Some(status)
        && r.time(&seen, "startsAt") == Some(starts_at)
    {
        return Ok((Applied::default(), Vec::new()));
    }
    let (applied, touched) = operation::apply(
        doc,
        layout,
        &Operation::AddTimelineEntry {
            text: text.to_owned(),
            at: Some(at),
        },
        editor,
    )?;
    let alerts = match Reader::new(&*doc, None).map(&ROOT, ALERTS_KEY) {
        Some(map) => map,
        None => doc.put_object(ROOT, ALERTS_KEY, ObjType::Map)?,
    };
    let state = doc.put_object(&alerts, fingerprint, ObjType::Map)?;
    doc.put(&state, "status", status)?;
    doc.put(&state, "startsAt", operation::timestamp(starts_at))?;
    Ok((applied, touched))
}
