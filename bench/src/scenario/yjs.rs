//! The war room, the join storm and the trace replay against a Yjs server (Hocuspocus), with the peers of [`crate::yjs`]: the same
//! shape, the same figures and the same reports as with Automerge peers, so `report` sets them side by side.
//!
//! What differs is what the protocol makes differ: an editor sends each keystroke as one Update at once and applies
//! whatever the server broadcasts (its own keystrokes included, which Hocuspocus echoes); viewers send nothing back
//! but a keep-alive; convergence is every replica holding the same state vector (the editors never delete, so ids
//! received are the whole state), and a witness viewer's text must read as the editors'.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::sync::watch;
use tokio::task::JoinSet;
use wire::DocumentId;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::war_room::{
    self, Finish, Typist, Watcher, convergence_limit, gather_viewers, type_together,
};
use super::{Run, join_storm, open_all, trace};
use crate::editor::Place;
use crate::hocuspocus::{Event, YLink};
use crate::latency::{Clock, Latencies};
use crate::link::{Endpoint, Traffic};
use crate::yjs::{Expected, Stamps, YEditor, YViewer, view};

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
    let (expected, watching) = watch_document(
        run,
        &access.viewer,
        &document,
        settings.viewers,
        &latencies,
        &stamps,
    )
    .await?;
    let connect_s = connect_started.elapsed().as_secs_f64();

    let window = run.measure()?;
    let typing_started = Instant::now();
    let mut typed = type_together(
        editors,
        settings.rate,
        duration,
        Union {
            union: Mutex::default(),
            limit: convergence_limit(duration),
        },
    )
    .await?;
    let editors = std::mem::take(&mut typed.editors);
    let state = editors[0].expected();
    for editor in &editors {
        ensure!(
            editor.expected() == state,
            "the editors' replicas differ after converging"
        );
    }
    let keystrokes = stamps.within(&state.state);
    let _ = expected.send(Some(state));
    let mut watched =
        gather_viewers(watching, convergence_limit(duration), settings.viewers).await?;
    let all_done = Instant::now();
    let usage = run.measured(window)?;

    watched.check_witness(settings.viewers, |witness| {
        Ok(view(&witness) == view(editors[0].doc()))
    })?;
    for editor in editors {
        editor.close().await;
    }

    Ok(war_room::Report::new(
        run,
        settings,
        war_room::Timed {
            connect_s,
            keystrokes,
            // Hocuspocus has no rules of its own that change documents.
            server_changes: 0,
            typing_started,
            all_done,
        },
        typed,
        watched,
        &latencies,
        usage,
    ))
}

/// How Yjs editors converge: on the union of the state vectors those that got through typing hold.
struct Union {
    /// The union so far.
    union: Mutex<StateVector>,
    /// How long converging may take.
    limit: Duration,
}

impl Finish<YEditor> for Union {
    fn settled(&self, editor: &YEditor) -> anyhow::Result<()> {
        let mut union = self
            .union
            .lock()
            .map_err(|_| anyhow::anyhow!("an editor panicked"))?;
        for (client, clock) in editor.state().iter() {
            union.set_max(*client, *clock);
        }
        Ok(())
    }

    async fn converge(&self, editor: &mut YEditor, index: usize) -> anyhow::Result<()> {
        let expected = self
            .union
            .lock()
            .map_err(|_| anyhow::anyhow!("an editor panicked"))?
            .clone();
        let limit = self.limit;
        tokio::time::timeout(limit, editor.converge(&expected))
            .await
            .with_context(|| format!("editor {index} did not converge within {limit:?}"))?
    }
}

/// Opens `count` Yjs viewers of `document` that time every update they receive into `latencies` and follow it
/// in tasks of their own, as [`super::watch_document`] does with Automerge ones (viewer 0 is the witness). Returns
/// what tells them the editors' final state, and their tasks.
async fn watch_document(
    run: &Run,
    endpoint: &Endpoint,
    document: &str,
    count: u32,
    latencies: &Arc<Latencies>,
    stamps: &Arc<Stamps>,
) -> anyhow::Result<(
    watch::Sender<Option<Expected>>,
    JoinSet<anyhow::Result<YViewer>>,
)> {
    let viewers = open_all(count, |i| {
        let (url, traffic, stamps, latencies, document) = (
            endpoint.clone(),
            run.traffic.clone(),
            stamps.clone(),
            latencies.clone(),
            document.to_owned(),
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
    Ok((expected, watching))
}

impl Typist for YEditor {
    type Event = Event;
    fn next_message(&mut self) -> impl Future<Output = anyhow::Result<Event>> + Send {
        YEditor::next_message(self)
    }
    fn settle(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        YEditor::settle(self)
    }
    async fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        YEditor::handle(self, event).await.map(drop)
    }
    fn type_key(
        &mut self,
        place: Place,
        character: char,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        YEditor::type_key(self, place, character)
    }
}

impl Watcher for YViewer {
    type Witness = Doc;
    fn witness(&self) -> Option<Doc> {
        YViewer::witness(self).cloned()
    }
    fn close(self) -> impl Future<Output = ()> + Send {
        YViewer::close(self)
    }
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

    let window = run.measure()?;
    let joined = join_storm::storm(
        &settings,
        |_| {
            let (url, traffic, document) =
                (access.viewer.clone(), run.traffic.clone(), document.clone());
            async move { join(&url, &document, traffic).await }
        },
        move |received| {
            let doc = Doc::new();
            Update::decode_v1(received)
                .ok()
                .and_then(|update| doc.transact_mut().apply_update(update).ok())
                .is_some_and(|()| doc.transact().state_vector() == state)
        },
    )
    .await?;
    let usage = run.measured(window)?;
    author.close().await;
    joined.report(
        run,
        settings,
        usage,
        "a client received a document whose state is not the author's",
    )
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
    let (expected, watching) = watch_document(
        run,
        &access.viewer,
        &document,
        settings.viewers,
        &latencies,
        &stamps,
    )
    .await?;

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
    let witness_text = trace::witness_text(watching, |witness: &Doc| {
        let txn = witness.transact();
        Ok(txn.get_text(trace::FIELD).map(|t| t.get_string(&txn)))
    })
    .await?;
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

    Ok(trace::Report::new(
        run,
        settings,
        trace::Timed {
            keystrokes: patches.len(),
            final_chars: expected_text.chars().count(),
            local_typing,
            local_apply,
            server_s,
            batches: batches.len(),
            latency: latencies.total().summary(),
        },
        usage,
    ))
}
