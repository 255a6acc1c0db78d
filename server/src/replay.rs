//! Replay drills on the server: the scheduler that delivers each due step of every running replay, and the
//! facilitator's controls (pause, resume, jump) over the store's `replays` rows (`store/replays.rs`).
//!
//! **Once, on one node.** Every node runs the scheduler, but only the node holding the store's `replays` lease
//! (`store/lease.rs`, renewed every tick, 6 s lifetime) delivers: it sends step *n* to the drill's document actor as
//! the server (`Operation::DeliverReplayStep`), which applies it only if the document says step *n − 1* was the
//! last delivered, and then moves the row's next step on. A node that dies between the two leaves the row behind
//! the document: the next holder asks its replica to catch up with storage first (`DocHandle::refresh`), is refused
//! the step the document already has, and moves the row on to the document's count. So a step is applied once
//! across restarts and nodes; the one gap is a holder that stalls past the lease's lifetime between renewing it
//! and applying, which the lease's 6 s against a tick's milliseconds makes remote.
//!
//! **Survives a restart.** A row holds the steps themselves (read from the source when the replay started), so the
//! scheduler never reads the source again, and its clock as source time reached at a wall-clock moment, so a replay
//! resumes where it was: a step that fell due while every node was down comes at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use incident_doc::replay::Step;
use incident_doc::schema::SERVER_NAME;
use incident_doc::{Editor, Operation};
use tokio_util::sync::CancellationToken;

use crate::document::{DocError, Registry};
use crate::store::replays::{ReplayRecord, ReplayState};
use crate::store::{Store, StoreError};

/// How often the scheduler looks for due steps: a step comes at most this late.
const TICK: Duration = Duration::from_millis(250);

/// The lease whose holder delivers every replay's steps.
const LEASE: &str = "replays";

/// The lease's lifetime: another node takes over this long after the holder stopped renewing.
const LEASE_TTL: chrono::Duration = chrono::Duration::seconds(6);

/// Runs the scheduler until `stop`; `holder` names this node in the lease.
pub fn spawn(
    store: Arc<dyn Store>,
    registry: Registry,
    holder: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(TICK) => {}
            }
            if let Err(error) = tick(store.as_ref(), &registry, &holder).await {
                tracing::warn!(%error, "replay scheduler");
            }
        }
        let _ = store.release_lease(LEASE, &holder).await;
    })
}

/// Delivers every step due now, if this node holds the lease (taken or renewed once a tick, and only while some
/// replay runs, so an idle cluster writes nothing).
async fn tick(store: &dyn Store, registry: &Registry, holder: &str) -> Result<(), StoreError> {
    let running = store.running_replays().await?;
    if running.is_empty()
        || store
            .acquire_lease(LEASE, holder, LEASE_TTL, Utc::now())
            .await?
            .is_none()
    {
        return Ok(());
    }
    for replay in running {
        deliver_due(store, registry, replay).await?;
    }
    Ok(())
}

/// The steps of a row, parsed.
pub fn steps(replay: &ReplayRecord) -> Vec<Step> {
    serde_json::from_str(&replay.steps).unwrap_or_default()
}

/// Delivers the steps of `replay` that are due, one by one.
async fn deliver_due(
    store: &dyn Store,
    registry: &Registry,
    mut replay: ReplayRecord,
) -> Result<(), StoreError> {
    let steps = steps(&replay);
    loop {
        let now = Utc::now();
        let Some(step) = usize::try_from(replay.next_step)
            .ok()
            .and_then(|i| steps.get(i))
        else {
            finish(store, &replay, now).await?;
            return Ok(());
        };
        if replay.position_ms(now) < step.offset_ms {
            return Ok(());
        }
        let Some(handle) = registry.get(replay.drill).await? else {
            // The drill was deleted: nothing more to deliver.
            finish(store, &replay, now).await?;
            return Ok(());
        };
        handle.refresh();
        let number = u32::try_from(replay.next_step + 1).unwrap_or(u32::MAX);
        let op = Operation::DeliverReplayStep {
            step: number,
            entry: step.clone(),
        };
        let delivered = match handle.apply(vec![op], Editor::new(SERVER_NAME, now)).await {
            Ok(_) => replay.next_step + 1,
            Err(DocError::Refused(refusal)) => {
                // Delivered already (another node, or before a restart), or the drill no longer takes steps.
                let count = handle
                    .read(|incident| incident.replay().map(|r| r.step))
                    .await
                    .ok()
                    .flatten();
                match count {
                    Some(count) if count > replay.next_step => count,
                    _ => {
                        tracing::info!(drill = %replay.drill, %refusal, "replay step refused: the replay ends");
                        finish(store, &replay, now).await?;
                        return Ok(());
                    }
                }
            }
            Err(DocError::Storage(error)) => return Err(error),
            Err(error) => {
                tracing::warn!(drill = %replay.drill, %error, "replay step not delivered; retried");
                return Ok(());
            }
        };
        match advance(store, replay.drill, delivered).await? {
            Some(row) if row.state == ReplayState::Running => replay = row,
            _ => return Ok(()),
        }
    }
}

/// Moves the row of `drill` on to `delivered` steps (finished after the last), whatever else changed it meanwhile;
/// the row as written, or `None` if there is none.
async fn advance(
    store: &dyn Store,
    drill: wire::DocumentId,
    delivered: i64,
) -> Result<Option<ReplayRecord>, StoreError> {
    loop {
        let Some(row) = store.replay(drill).await? else {
            return Ok(None);
        };
        if row.next_step >= delivered {
            return Ok(Some(row));
        }
        let mut next = ReplayRecord {
            next_step: delivered,
            ..row.clone()
        };
        if delivered >= row.total {
            next = next.with_clock(
                ReplayState::Finished,
                row.position_ms(Utc::now()),
                Utc::now(),
            );
        }
        if store.update_replay(&next).await? {
            next.version += 1;
            return Ok(Some(next));
        }
    }
}

/// Marks `replay` finished (if nothing changed it meanwhile; the next tick looks again otherwise).
async fn finish(
    store: &dyn Store,
    replay: &ReplayRecord,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let done = replay.with_clock(ReplayState::Finished, replay.position_ms(now), now);
    store.update_replay(&done).await.map(drop)
}

/// What a facilitator asks of a replay.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Stop the clock.
    Pause,
    /// Start it again.
    Resume,
    /// Move the clock to the next step's time.
    JumpToNext,
    /// Move the clock on by this many milliseconds of source time.
    JumpBy(i64),
}

/// Why a control was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The replay is not in a state that takes it (pausing a paused one, anything on a finished one).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `control` to the replay of `replay.drill` at `now`, from the row `replay` onwards (re-read when another
/// change won the race); the row as written.
pub async fn control(
    store: &dyn Store,
    mut replay: ReplayRecord,
    control: Control,
    now: DateTime<Utc>,
) -> Result<ReplayRecord, ControlError> {
    loop {
        let position = replay.position_ms(now);
        let next = match (control, replay.state) {
            (_, ReplayState::Finished) => {
                return Err(ControlError::Conflict("this replay has finished".into()));
            }
            (Control::Pause, ReplayState::Paused) => {
                return Err(ControlError::Conflict(
                    "this replay is paused already".into(),
                ));
            }
            (Control::Resume, ReplayState::Running) => {
                return Err(ControlError::Conflict(
                    "this replay is running already".into(),
                ));
            }
            (Control::Pause, _) => replay.with_clock(ReplayState::Paused, position, now),
            (Control::Resume, _) => replay.with_clock(ReplayState::Running, position, now),
            (Control::JumpBy(ms), state) => replay.with_clock(state, position + ms, now),
            (Control::JumpToNext, state) => {
                let offset = usize::try_from(replay.next_step)
                    .ok()
                    .and_then(|i| steps(&replay).get(i).map(|s| s.offset_ms))
                    .unwrap_or(position);
                replay.with_clock(state, position.max(offset), now)
            }
        };
        if store.update_replay(&next).await? {
            return Ok(ReplayRecord {
                version: next.version + 1,
                ..next
            });
        }
        replay = store
            .replay(replay.drill)
            .await?
            .ok_or_else(|| StoreError::Conflict("the replay is gone".into()))?;
    }
}
