//! Replay drills' schedules (table `replays`): what the scheduler of `crate::replay` needs to deliver a drill's
//! steps on any node, after any restart. A row holds the steps (JSON, read from the source once when the replay
//! starts), the clock (`elapsed_ms` of the source's time reached at `since`, running at `speed` or paused), the
//! next step to deliver and a `version` every change moves on: [`Store::update_replay`](super::Store::update_replay)
//! writes a row only at the version it was read at, so a pause and a delivery on two nodes never undo each other.

use chrono::{DateTime, Duration, Utc};

use wire::DocumentId;

/// Where a replay is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Steps come as they fall due.
    Running,
    /// The facilitator paused it: nothing comes, the clock stands still.
    Paused,
    /// Every step was delivered (or the drill is gone).
    Finished,
}

impl ReplayState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Running => "running",
            ReplayState::Paused => "paused",
            ReplayState::Finished => "finished",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<ReplayState> {
        match name {
            "running" => Some(ReplayState::Running),
            "paused" => Some(ReplayState::Paused),
            "finished" => Some(ReplayState::Finished),
            _ => None,
        }
    }
}

/// One replay, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The drill incident the steps go to.
    pub drill: DocumentId,
    /// The closed incident they come from.
    pub source: DocumentId,
    /// Who started it: the one who pauses, resumes and jumps (with admins).
    pub facilitator: String,
    /// Speed in hundredths (×10 is 1000).
    pub speed_centi: i64,
    /// Running, paused or finished.
    pub state: ReplayState,
    /// Milliseconds of the source's time reached at `since`.
    pub elapsed_ms: i64,
    /// When `elapsed_ms` was reached (whole microseconds, as both backends store times).
    pub since: DateTime<Utc>,
    /// The index of the next step to deliver (the number of steps delivered).
    pub next_step: i64,
    /// How many steps there are.
    pub total: i64,
    /// The steps, `incident_doc::replay::Step`s as a JSON array.
    pub steps: String,
    /// Moves on with every update.
    pub version: i64,
    /// When it started.
    pub created_at: DateTime<Utc>,
}

impl ReplayRecord {
    /// The source's time reached at `now`: it runs at the speed while running, stands still otherwise.
    pub fn position_ms(&self, now: DateTime<Utc>) -> i64 {
        match self.state {
            ReplayState::Running => {
                let wall = (now - self.since).num_milliseconds().max(0);
                self.elapsed_ms + wall * self.speed_centi / 100
            }
            ReplayState::Paused | ReplayState::Finished => self.elapsed_ms,
        }
    }

    /// The clock stopped or restarted at `now`, in `state`, at source time `elapsed_ms`.
    pub fn with_clock(
        &self,
        state: ReplayState,
        elapsed_ms: i64,
        now: DateTime<Utc>,
    ) -> ReplayRecord {
        ReplayRecord {
            state,
            elapsed_ms,
            since: whole_micros(now),
            ..self.clone()
        }
    }

    /// When a step at source time `offset_ms` falls due, if the replay runs on from `now` without a pause.
    pub fn due_at(&self, offset_ms: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        let ahead = (offset_ms - self.position_ms(now)).max(0);
        now + Duration::milliseconds(ahead * 100 / self.speed_centi.max(1))
    }
}

/// `at` to whole microseconds, what both backends keep, so a row reads back equal to what was written.
pub fn whole_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// Conformance cases of replays, run against both backends by `conformance_suite!`.
#[cfg(test)]
pub(crate) mod cases {
    use chrono::{TimeZone, Utc};

    use super::{ReplayRecord, ReplayState};
    use crate::store::Store;
    use wire::DocumentId;

    /// A replay is created once, read back whole, listed while running, and updated only at the version it was
    /// read at.
    pub(crate) async fn replays_update_at_their_version(store: &dyn Store) {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 7, 9, 0, 0)
            .single()
            .expect("time");
        let record = ReplayRecord {
            drill: DocumentId::random(),
            source: DocumentId::random(),
            facilitator: "carol".into(),
            speed_centi: 1000,
            state: ReplayState::Running,
            elapsed_ms: 0,
            since: t,
            next_step: 0,
            total: 3,
            steps: "[]".into(),
            version: 0,
            created_at: t,
        };
        store.create_replay(&record).await.expect("create");
        assert!(
            store.create_replay(&record).await.is_err(),
            "one row per drill"
        );
        assert_eq!(
            store.replay(record.drill).await.expect("read"),
            Some(record.clone())
        );
        assert_eq!(
            store.replay(DocumentId::random()).await.expect("read"),
            None
        );
        assert_eq!(
            store.running_replays().await.expect("list"),
            vec![record.clone()]
        );
        let paused = record.with_clock(ReplayState::Paused, 5_000, t);
        assert!(store.update_replay(&paused).await.expect("update"));
        assert!(
            !store
                .update_replay(&ReplayRecord {
                    next_step: 1,
                    ..record.clone()
                })
                .await
                .expect("stale"),
            "a stale version writes nothing"
        );
        let stored = store
            .replay(record.drill)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(
            (
                stored.state,
                stored.elapsed_ms,
                stored.next_step,
                stored.version
            ),
            (ReplayState::Paused, 5_000, 0, 1)
        );
        assert!(store.running_replays().await.expect("list").is_empty());
    }
}
