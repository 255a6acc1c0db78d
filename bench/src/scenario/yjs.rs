//! The war room, the join storm and the trace replay against a Yjs server (Hocuspocus), with the peers of [`crate::yjs`]: the same
//! shape, the same figures and the same reports as with Automerge peers, so `report` sets them side by side.
//!
//! What differs is what the protocol makes differ: an editor sends each keystroke as one Update at once and applies
//! whatever the server broadcasts (its own keystrokes included, which Hocuspocus echoes); viewers send nothing back
//! but a keep-alive; convergence is every replica holding the same state vector (the editors never delete, so ids
//! received are the whole state), and a witness viewer's text must read as the editors'.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::sync::{Barrier, watch};
use tokio::task::JoinSet;
use wire::DocumentId;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::war_room::{self, convergence_limit};
use super::{Run, join_storm, open_all, trace};
use crate::editor::{PLACES, PROSE};
use crate::hocuspocus::{Event, YLink};
use crate::latency::{Clock, Histogram, Latencies, millis};
use crate::link::{Endpoint, Traffic};
use crate::yjs::{Stamps, YEditor, YViewer, view};

/// How long one joining client may take to get the document before the run fails.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// A war room on a Yjs server; see [`war_room::run`].
pub async fn war_room(run: &Run, settings: war_room::Settings) -> anyhow::Result<war_room::Report> {
    ensure!(settings.editors > 0, "a war room needs at least one editor");
    ensure!(settings.rate > 0.0, "the typing rate must be positive");
    let access = run.target.access().await?;
    let document = format!("war-room-{}", DocumentId::random());
    let duration = Duration::from_secs_f64(settings.duration_s);
    let clock = Clock::start();
    let latencies = Arc::new(Latencies::new(
        clock,
        Duration::from_secs_f64(settings.window_s),
        duration + Duration::from_secs(1),
    ));
    let stamps = Arc::new(Stamps::default());

    let mut first = YEditor::open(
        &access.editor,
        0,
        &document,
        clock,
        stamps.clone(),
        run.traffic.clone(),
    )
    .await
    .context("opening the first editor")?;
    first.build_history(settings.history).await?;
    let mut editors = vec![first];
    let others = open_all(settings.editors - 1, |i| {
        let (url, traffic, stamps, document) = (
            access.editor.clone(),
            run.traffic.clone(),
            stamps.clone(),
            document.clone(),
        );
        async move { YEditor::open(&url, i + 1, &document, clock, stamps, traffic).await }
    })
    .await?;
    editors.extend(others);

    let connect_started = Instant::now();
    let viewers = open_all(settings.viewers, |i| {
        let (url, traffic, stamps, latencies, document) = (
            access.viewer.clone(),
            run.traffic.clone(),
            stamps.clone(),
            latencies.clone(),
            document.clone(),
        );
        async move { YViewer::open(&url, &document, latencies, stamps, traffic, i == 0).await }
    })
    .await?;
    let (expected, expected_rx) = watch::channel(None);
    let mut watching = JoinSet::new();
    for mut viewer in viewers {
        let expected = expected_rx.clone();
        watching.spawn(async move {
            viewer.follow(expected).await?;
            anyhow::Ok(viewer)
        });
    }
    let connect_s = connect_started.elapsed().as_secs_f64();

    let window = run.measure()?;
    let typing_started = Instant::now();
    let typed = type_together(editors, settings.rate, duration).await?;
    let editors = typed.editors;
    let state = editors[0].expected();
    for editor in &editors {
        ensure!(
            editor.expected() == state,
            "the editors' replicas differ after converging"
        );
    }
    let keystrokes = stamps.within(&state.state);
    let _ = expected.send(Some(state));
    let watched = gather_viewers(watching, convergence_limit(duration), settings.viewers).await?;
    let all_done = Instant::now();
    let usage = run.measured(window)?;

    if settings.viewers > 0 {
        let witness = watched
            .witness
            .context("the witness viewer kept what it received (was it dropped?)")?;
        ensure!(
            view(&witness) == view(editors[0].doc()),
            "the witness viewer's document reads differently from the editors'"
        );
    }
    for editor in editors {
        editor.close().await;
    }

    let latency = latencies.total();
    let delivered = latency.count();
    let span = (all_done - typing_started).as_secs_f64();
    Ok(war_room::Report {
        target: run.target.name().into(),
        connect_s,
        keystrokes,
        keystrokes_per_s: keystrokes as f64 / (typed.ended - typing_started).as_secs_f64(),
        typing_lag_ms: millis(typed.lag),
        delivered,
        delivered_per_s: delivered as f64 / span,
        latency: latency.summary(),
        windows: latencies.windows(),
        server_cpu_us_per_delivered: usage
            .server
            .as_ref()
            .filter(|_| delivered > 0)
            .map(|s| s.cpu_s * 1e6 / delivered as f64),
        usage,
        converge_s: (all_done - typed.ended).as_secs_f64(),
        viewers_dropped: watched.dropped,
        first_drop: watched.first_drop,
        editors_dropped: typed.dropped,
        first_editor_drop: typed.first_drop,
        // Hocuspocus has no rules of its own that change documents.
        server_changes: 0,
        settings,
    })
}

/// The editors after typing, as [`war_room`] reports them.
struct Typed {
    editors: Vec<YEditor>,
    /// How far the slowest editor fell behind its schedule.
    lag: Duration,
    /// When the last editor stopped typing.
    ended: Instant,
    /// Editors the server dropped, and why the first one went.
    dropped: u32,
    first_drop: Option<String>,
}

/// Every editor types at `rate` until `duration` is over; once every one's keystrokes are acknowledged, all of
/// them take in everyone's (the union of the state vectors they hold then).
async fn type_together(
    editors: Vec<YEditor>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Typed> {
    let stop_at = tokio::time::Instant::now() + duration;
    let union = Arc::new(Mutex::new(StateVector::default()));
    let barrier = Arc::new(Barrier::new(editors.len()));
    let count = editors.len() as u32;
    let mut typing = JoinSet::new();
    for (index, mut editor) in editors.into_iter().enumerate() {
        let (union, barrier) = (union.clone(), barrier.clone());
        typing.spawn(async move {
            let typing = async {
                let lag = type_until(&mut editor, index as u32, count, rate, stop_at).await?;
                let typed_end = Instant::now();
                editor.settle().await?;
                anyhow::Ok((lag, typed_end))
            }
            .await;
            if typing.is_ok() {
                let mut union = union
                    .lock()
                    .map_err(|_| anyhow::anyhow!("an editor panicked"))?;
                for (client, clock) in editor.state().iter() {
                    union.set_max(*client, *clock);
                }
            }
            // A dropped editor still meets the others here, so they do not wait for it forever.
            barrier.wait().await;
            let (lag, typed_end) = match typing {
                Ok(typed) => typed,
                Err(error) => return Ok(Err(error)),
            };
            let expected = union
                .lock()
                .map_err(|_| anyhow::anyhow!("an editor panicked"))?
                .clone();
            let limit = convergence_limit(duration);
            tokio::time::timeout(limit, editor.converge(&expected))
                .await
                .with_context(|| format!("editor {index} did not converge within {limit:?}"))??;
            anyhow::Ok(Ok((editor, lag, typed_end)))
        });
    }
    let mut done = Vec::new();
    let (mut dropped, mut first_drop) = (0, None);
    while let Some(joined) = typing.join_next().await {
        match joined.context("an editor's task panicked")?? {
            Ok(editor) => done.push(editor),
            Err(error) => {
                dropped += 1;
                first_drop.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    ensure!(
        !done.is_empty(),
        "every editor was dropped; the first: {}",
        first_drop.unwrap_or_default()
    );
    let ended = done
        .iter()
        .map(|(_, _, end)| *end)
        .max()
        .unwrap_or_else(Instant::now);
    let lag = done
        .iter()
        .map(|(_, lag, _)| *lag)
        .max()
        .unwrap_or_default();
    Ok(Typed {
        editors: done.into_iter().map(|(editor, _, _)| editor).collect(),
        lag,
        ended,
        dropped,
        first_drop,
    })
}

/// Types on the Automerge editors' schedule (see `war_room`'s `type_until`): open loop, staggered over one
/// interval, applying what the server sends in between. Returns how late the last keystroke was.
async fn type_until(
    editor: &mut YEditor,
    index: u32,
    editors: u32,
    rate: f64,
    stop_at: tokio::time::Instant,
) -> anyhow::Result<Duration> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start =
        tokio::time::Instant::now() + interval.mul_f64(f64::from(index) / f64::from(editors));
    let place = PLACES[index as usize % PLACES.len()];
    let mut prose = PROSE.chars().cycle().skip(index as usize * 7);
    let mut lag = Duration::ZERO;
    for keystroke in 0u32.. {
        let due = start + interval * keystroke;
        if due >= stop_at {
            break;
        }
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(due) => break,
                event = editor.next_message() => { editor.handle(event?).await?; }
            }
        }
        lag = tokio::time::Instant::now().saturating_duration_since(due);
        editor.type_key(place, prose.next().unwrap_or(' ')).await?;
    }
    Ok(lag)
}

/// The viewers at the end: the witness's replica, and who was dropped.
struct Watched {
    witness: Option<Doc>,
    dropped: u32,
    first_drop: Option<String>,
}

/// Waits for every viewer to converge on the editors' state vector (at most `limit`), closing each.
async fn gather_viewers(
    mut watching: JoinSet<anyhow::Result<YViewer>>,
    limit: Duration,
    viewers: u32,
) -> anyhow::Result<Watched> {
    let mut witness = None;
    let (mut converged, mut dropped, mut first_drop) = (0, 0, None);
    while let Some(joined) = tokio::time::timeout(limit, watching.join_next())
        .await
        .with_context(|| {
            format!(
                "only {converged} of {viewers} viewers converged within {limit:?} of the editors ({dropped} dropped)"
            )
        })?
    {
        let viewer = match joined.context("a viewer's task panicked")? {
            Ok(viewer) => viewer,
            Err(error) => {
                dropped += 1;
                first_drop.get_or_insert_with(|| format!("{error:#}"));
                continue;
            }
        };
        converged += 1;
        if witness.is_none() {
            witness = viewer.witness().cloned();
        }
        viewer.close().await;
    }
    Ok(Watched {
        witness,
        dropped,
        first_drop,
    })
}

/// A join storm on a Yjs server; see [`join_storm::run`]. A client is done when the server's SyncStep2 (the whole
/// document) arrives; as there, the first client to receive each distinct byte stream applies it and checks the
/// state vector it gives.
pub async fn join_storm(
    run: &Run,
    settings: join_storm::Settings,
) -> anyhow::Result<join_storm::Report> {
    let access = run.target.access().await?;
    let document = format!("join-storm-{}", DocumentId::random());
    let clock = Clock::start();
    let mut author = YEditor::open(
        &access.editor,
        0,
        &document,
        clock,
        Arc::default(),
        run.traffic.clone(),
    )
    .await?;
    author.build_history(settings.history).await?;
    let state = author.state();

    let checked: Arc<Mutex<HashMap<u64, bool>>> = Arc::default();
    let times = Arc::new(Histogram::default());
    let spacing = Duration::from_secs_f64(settings.over_s / f64::from(settings.clients.max(1)));
    let window = run.measure()?;
    let start = tokio::time::Instant::now();
    let mut joining = JoinSet::new();
    for index in 0..settings.clients {
        let url = access.viewer.clone();
        let (state, checked, times, traffic, document) = (
            state.clone(),
            checked.clone(),
            times.clone(),
            run.traffic.clone(),
            document.clone(),
        );
        joining.spawn(async move {
            tokio::time::sleep_until(start + spacing * index).await;
            let started = Instant::now();
            let received = tokio::time::timeout(CLIENT_LIMIT, join(&url, &document, traffic))
                .await
                .with_context(|| format!("client {index} did not get the document in time"))??;
            times.record(started.elapsed());
            check(&received, &state, &checked)?;
            anyhow::Ok(received.len())
        });
    }
    let mut document_bytes = 0;
    while let Some(joined) = joining.join_next().await {
        document_bytes = joined.context("a client's task panicked")??;
    }
    let usage = run.measured(window)?;
    author.close().await;
    let checked = checked
        .lock()
        .map_err(|_| anyhow::anyhow!("a check panicked"))?;
    ensure!(
        checked.values().all(|ok| *ok),
        "a client received a document whose state is not the author's"
    );
    Ok(join_storm::Report {
        target: run.target.name().into(),
        document_bytes,
        time_to_document: times.summary(),
        distinct_documents: checked.len(),
        usage,
        settings,
    })
}

/// One client: opens the document from nothing and returns the update of the server's SyncStep2.
async fn join(
    endpoint: &Endpoint,
    document: &str,
    traffic: Arc<Traffic>,
) -> anyhow::Result<Vec<u8>> {
    let mut link = YLink::open(endpoint, document, &StateVector::default(), traffic).await?;
    loop {
        match link.recv().await? {
            Event::Sync(SyncMessage::SyncStep1(_)) => {
                let empty = Update::EMPTY_V1.to_vec();
                link.send_sync(&SyncMessage::SyncStep2(empty)).await?;
            }
            Event::Sync(SyncMessage::SyncStep2(update)) => {
                link.close().await;
                return Ok(update);
            }
            _ => {}
        }
    }
}

/// Checks a client's update: applied and its state vector compared with `state` the first time these exact bytes
/// are seen.
fn check(
    received: &[u8],
    state: &StateVector,
    checked: &Mutex<HashMap<u64, bool>>,
) -> anyhow::Result<()> {
    let mut hasher = DefaultHasher::new();
    received.hash(&mut hasher);
    let digest = hasher.finish();
    let seen = checked
        .lock()
        .map_err(|_| anyhow::anyhow!("a check panicked"))?
        .contains_key(&digest);
    if !seen {
        let doc = Doc::new();
        let ok = Update::decode_v1(received)
            .ok()
            .and_then(|update| doc.transact_mut().apply_update(update).ok())
            .is_some_and(|()| doc.transact().state_vector() == *state);
        checked
            .lock()
            .map_err(|_| anyhow::anyhow!("a check panicked"))?
            .insert(digest, ok);
    }
    Ok(())
}

/// A trace replay on a Yjs server; see [`trace::run`]. The editor sends what each `flush_ms` typed as one update
/// (as a provider with `flushDelay` batches); the CRDT measured alone is yrs.
pub async fn trace(
    run: &Run,
    trace: &trace::Trace,
    settings: trace::Settings,
) -> anyhow::Result<trace::Report> {
    let patches = &trace.patches[..settings.limit.min(trace.patches.len())];
    ensure!(!patches.is_empty(), "the trace has no patches");
    let patches: Vec<(u32, u32, &str)> = patches
        .iter()
        .map(|(position, delete, insert)| {
            anyhow::Ok((
                u32::try_from(*position)?,
                u32::try_from(*delete)?,
                insert.as_str(),
            ))
        })
        .collect::<anyhow::Result<_>>()
        .context("a patch out of range")?;

    // yrs alone: type the trace into a fresh document, one transaction per keystroke.
    let local = Doc::new();
    let text = local.get_or_insert_text(trace::FIELD);
    let mut updates = Vec::with_capacity(patches.len());
    let typing_started = Instant::now();
    for &(position, delete, insert) in &patches {
        let mut txn = local.transact_mut();
        if delete > 0 {
            text.remove_range(&mut txn, position, delete);
        }
        if !insert.is_empty() {
            text.insert(&mut txn, position, insert);
        }
        updates.push(txn.encode_update_v1());
    }
    let local_typing = typing_started.elapsed();
    let expected_text = text.get_string(&local.transact());
    if patches.len() == trace.patches.len() {
        ensure!(
            expected_text == trace.end,
            "typing the whole trace locally does not give its final text"
        );
    }

    let access = run.target.access().await?;
    let document = format!("trace-{}", DocumentId::random());
    let clock = Clock::start();
    let latencies = Arc::new(Latencies::new(
        clock,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ));
    let stamps = Arc::new(Stamps::default());
    let mut editor = YEditor::open(
        &access.editor,
        0,
        &document,
        clock,
        stamps.clone(),
        run.traffic.clone(),
    )
    .await?;
    let viewers = open_all(settings.viewers, |i| {
        let (url, traffic, stamps, latencies, document) = (
            access.viewer.clone(),
            run.traffic.clone(),
            stamps.clone(),
            latencies.clone(),
            document.clone(),
        );
        async move { YViewer::open(&url, &document, latencies, stamps, traffic, i == 0).await }
    })
    .await?;
    let (expected, expected_rx) = watch::channel(None);
    let mut watching = JoinSet::new();
    for mut viewer in viewers {
        let expected = expected_rx.clone();
        watching.spawn(async move {
            viewer.follow(expected).await?;
            anyhow::Ok(viewer)
        });
    }

    let window = run.measure()?;
    let started = Instant::now();
    let flush_every = Duration::from_millis(settings.flush_ms);
    let mut last_flush = Instant::now();
    let mut batches = Vec::new();
    let mut unsent = 0;
    let mut sent = editor.state();
    for &(position, delete, insert) in &patches {
        editor.splice(trace::FIELD, position, delete, insert);
        unsent += 1;
        if last_flush.elapsed() >= flush_every {
            batches.push(unsent);
            unsent = 0;
            sent = editor.send_since(&sent).await?;
            editor.take_in_pending().await?;
            last_flush = Instant::now();
        }
    }
    if unsent > 0 {
        batches.push(unsent);
        editor.send_since(&sent).await?;
    }
    editor.settle().await?;
    ensure!(
        editor.text(trace::FIELD) == expected_text,
        "the editor's text differs from the trace's"
    );
    let _ = expected.send(Some(editor.expected()));
    let mut witness_text = None;
    while let Some(joined) = watching.join_next().await {
        let viewer = joined.context("a viewer's task panicked")??;
        if witness_text.is_none()
            && let Some(witness) = viewer.witness()
        {
            let txn = witness.transact();
            witness_text = txn.get_text(trace::FIELD).map(|t| t.get_string(&txn));
        }
        viewer.close().await;
    }
    let server_s = started.elapsed().as_secs_f64();
    let usage = run.measured(window)?;
    editor.close().await;
    if settings.viewers > 0 {
        ensure!(
            witness_text.as_deref() == Some(expected_text.as_str()),
            "the witness viewer's text differs from the trace's"
        );
    }

    // yrs alone again: a second document applies the same transactions in the batches the editor sent, merged
    // (the merging, which the editor did, is not timed).
    let mut rest = updates.as_slice();
    let mut merged = Vec::with_capacity(batches.len());
    for &size in &batches {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        merged.push(Update::decode_v1(&yrs::merge_updates_v1(batch)?)?);
        rest = tail;
    }
    let replica = Doc::new();
    let apply_started = Instant::now();
    for update in merged {
        replica.transact_mut().apply_update(update)?;
    }
    let local_apply = apply_started.elapsed();

    let n = patches.len() as f64;
    let local_typing_per_s = n / local_typing.as_secs_f64();
    let local_apply_per_s = n / local_apply.as_secs_f64();
    let server_per_s = n / server_s;
    Ok(trace::Report {
        target: run.target.name().into(),
        keystrokes: patches.len(),
        final_chars: expected_text.chars().count(),
        local_typing_s: local_typing.as_secs_f64(),
        local_typing_per_s,
        local_apply_s: local_apply.as_secs_f64(),
        local_apply_per_s,
        server_s,
        server_per_s,
        ratio_to_local_typing: server_per_s / local_typing_per_s,
        ratio_to_local_apply: server_per_s / local_apply_per_s,
        batches: batches.len(),
        latency: latencies.total().summary(),
        server_cpu_us_per_keystroke: usage.server.as_ref().map(|s| s.cpu_s * 1e6 / n),
        usage,
        settings,
    })
}
