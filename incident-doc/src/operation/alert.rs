//! Alerts from monitoring (Prometheus Alertmanager, through the server's hook) recorded in the timeline, once
//! each: the root key `alerts` maps an alert's fingerprint to the last state recorded for it (`{status,
//! startsAt, text}`), so a payload sent again (Alertmanager repeats notifications) adds nothing, while the same alert
//! resolving, or firing again later (a new `startsAt`), adds its entry.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use chrono::{DateTime, Utc};

use crate::edit::{Applied, Edited, Editor, MAX_SHORT_CHARS, OpError, timestamp};
use crate::read::Reader;
use crate::schema::{FieldDef, keys};

use super::timeline;

/// One alert's notification, as [`Operation::RecordAlert`] carries it.
///
/// [`Operation::RecordAlert`]: crate::Operation::RecordAlert
pub(super) struct Alert<'a> {
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

/// A timeline entry `text` at `at`, unless the alert's fingerprint is recorded with this status and start already;
/// then nothing changes and no entry id is returned.
pub(super) fn record(
    doc: &mut AutoCommit,
    layout: &[FieldDef],
    alert: Alert<'_>,
    editor: &Editor,
) -> Result<Edited, OpError> {
    let Alert {
        fingerprint,
        firing,
        starts_at,
        text,
        at,
    } = alert;
    let fingerprint = fingerprint.trim();
    if fingerprint.is_empty() || fingerprint.chars().count() > MAX_SHORT_CHARS {
        return Err(OpError::InvalidValue(
            "an alert needs a fingerprint of at most 200 characters".into(),
        ));
    }
    let status = if firing { "firing" } else { "resolved" };
    let r = Reader::new(&*doc, None);
    if let Some(alerts) = r.map(&ROOT, keys::ALERTS)
        && let Some(seen) = r.map(&alerts, fingerprint)
        && r.str(&seen, "status").as_deref() == Some(status)
        && r.time(&seen, "startsAt") == Some(starts_at)
    {
        return Ok((Applied::default(), Vec::new()));
    }
    let (applied, touched) = timeline::add_stamped(doc, layout, text, Some(at), editor)?;
    let alerts = match Reader::new(&*doc, None).map(&ROOT, keys::ALERTS) {
        Some(map) => map,
        None => doc.put_object(ROOT, keys::ALERTS, ObjType::Map)?,
    };
    let state = doc.put_object(&alerts, fingerprint, ObjType::Map)?;
    doc.put(&state, "status", status)?;
    doc.put(&state, "startsAt", timestamp(starts_at))?;
    // What the timeline said, so that the channel bound to the incident can say it too.
    doc.put(&state, "text", text)?;
    Ok((applied, touched))
}
