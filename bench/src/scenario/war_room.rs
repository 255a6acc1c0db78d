//! War room: N editors type at R keystrokes a second each into the incident's text fields and its timeline while
//! M viewers watch the same incident, for D seconds. Every keystroke is timed from the editor's commit to its
//! arrival at every viewer; at the end every editor and every viewer must hold the same document.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::{Run, Usages, open_all, watch_document};
use crate::editor::{Editor, PLACES, PROSE, Place};
use crate::latency::{Clock, Latencies, Summary, WindowSummary, millis};
use crate::viewer::{Expected, Viewer};
use incident_doc::Incident;

/// The war room's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Editors typing.
    pub editors: u32,
    /// Keystrokes a second, per editor.
    pub rate: f64,
    /// Viewers watching.
    pub viewers: u32,
    /// How long the editors type, seconds.
    pub duration_s: f64,
    /// Length of the windows that show drift, seconds.
    pub window_s: f64,
    /// Keystrokes of history the incident has before the war room starts.
    #[serde(default)]
    pub history: usize,
}

/// What a war room measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The server.
    pub target: String,
    /// The settings.
    pub settings: Settings,
    /// Seconds to connect every viewer and sync the incident to it.
    pub connect_s: f64,
    /// Keystrokes that reached the server (each one change).
    pub keystrokes: u64,
    /// Keystrokes a second actually typed, all editors together.
    pub keystrokes_per_s: f64,
    /// How late the most behind editor was on its schedule at the end, ms: large means the load generator could
    /// not keep the pace.
    pub typing_lag_ms: f64,
    /// Changes delivered to viewers (keystrokes × viewers).
    pub delivered: u64,
    /// Delivered changes a second, from the first keystroke until every viewer held the last one.
    pub delivered_per_s: f64,
    /// Editor commit → viewer holds the change, over every keystroke × viewer.
    pub latency: Summary,
    /// The same per window of sending time, to show drift.
    pub windows: Vec<WindowSummary>,
    /// From the first keystroke until every viewer converged.
    pub usage: Usages,
    /// Server CPU per delivered change, microseconds.
    pub server_cpu_us_per_delivered: Option<f64>,
    /// Seconds from the end of typing until every editor and every viewer still connected held the same document.
    pub converge_s: f64,
    /// Viewers whose connection the server closed during the run (a server that sheds slow readers does so under
    /// overload), and the first reason given. They are reported, not waited for; the others must converge.
    #[serde(default)]
    pub viewers_dropped: u32,
    /// Why the first dropped viewer was dropped.
    #[serde(default)]
    pub first_drop: Option<String>,
    /// Editors whose connection failed during the run (a server sheds peers that stop reading, which editors
    /// starved of CPU by the load generator's own work do), and the first reason. Their keystrokes that reached
    /// the server count; the other editors and every viewer must still converge.
    #[serde(default)]
    pub editors_dropped: u32,
    /// Why the first dropped editor was dropped.
    #[serde(default)]
    pub first_editor_drop: Option<String>,
    /// Changes the server made itself during the run: commandpost reverts edits its command rules refuse (a
    /// timeline entry edited more than five minutes after it was written, which only a server minutes behind makes
    /// happen here).
    #[serde(default)]
    pub server_changes: u64,
}

/// Runs a war room (with Yjs peers on a Yjs server, see [`super::yjs`]).
pub async fn run(run: &Run, settings: Settings) -> anyhow::Result<Report> {
    if run.target.is_yjs() {
        return super::yjs::war_room(run, settings).await;
    }
    ensure!(settings.editors > 0, "a war room needs at least one editor");
    ensure!(settings.rate > 0.0, "the typing rate must be positive");
    let access = run.target.access().await?;
    let incident = run.target.new_incident("War room").await?;
    let duration = Duration::from_secs_f64(settings.duration_s);
    let clock = Clock::start();
    let latencies = Arc::new(Latencies::new(
        clock,
        Duration::from_secs_f64(settings.window_s),
        duration + Duration::from_secs(1),
    ));
    let id = incident.id;

    // The first editor brings the document where the server takes it from peers; the others then ask for it.
    let mut first = Editor::open(
        &access.editor,
        0,
        id,
        incident.seed,
        clock,
        run.traffic.clone(),
    )
    .await
    .context("opening the first editor")?;
    first.build_history(settings.history).await?;
    let mut editors = vec![first];
    let others = open_all(settings.editors - 1, |i| {
        let (url, traffic) = (access.editor.clone(), run.traffic.clone());
        async move { Editor::open(&url, i + 1, id, None, clock, traffic).await }
    })
    .await?;
    editors.extend(others);
    let base_changes = editors[0].editors_changes();
    let base_heads = editors[0].heads();

    let connect_started = Instant::now();
    let watchers = watch_document(run, &access, id, settings.viewers, &latencies).await?;
    let connect_s = connect_started.elapsed().as_secs_f64();

    let window = run.measure()?;
    let typing_started = Instant::now();
    let mut typed = type_together(
        editors,
        settings.rate,
        duration,
        CountChanges {
            base_changes,
            typed: AtomicUsize::new(0),
            limit: convergence_limit(duration),
        },
    )
    .await?;
    let mut editors = std::mem::take(&mut typed.editors);
    let heads = editors[0].heads();
    for editor in &mut editors {
        ensure!(
            editor.heads() == heads,
            "the editors' replicas differ after converging"
        );
    }
    let changes = editors[0].changes_since(&base_heads);
    // Every keystroke that reached the server, dropped editors' too; whatever else is new is the server's own.
    let keystrokes = (editors[0].editors_changes() - base_changes) as u64;
    let server_changes = changes.count - keystrokes;
    let _ = watchers.expected.send(Some(Expected { heads, changes }));
    let mut watched = gather_viewers(
        watchers.tasks,
        convergence_limit(duration),
        settings.viewers,
    )
    .await?;
    let all_done = Instant::now();
    let usage = run.measured(window)?;

    watched.check_witness(settings.viewers, |witness| {
        Ok(serde_json::to_value(witness.view())?
            == serde_json::to_value(editors[0].incident().view())?)
    })?;
    for editor in editors {
        editor.close().await;
    }

    Ok(Report::new(
        run,
        settings,
        Timed {
            connect_s,
            keystrokes,
            server_changes,
            typing_started,
            all_done,
        },
        typed,
        watched,
        &latencies,
        usage,
    ))
}

/// What a war room timed besides its editors' and viewers' fates, from which [`Report::new`] derives the rest.
pub(super) struct Timed {
    pub(super) connect_s: f64,
    pub(super) keystrokes: u64,
    pub(super) server_changes: u64,
    /// When typing started, and when every viewer had converged after it.
    pub(super) typing_started: Instant,
    pub(super) all_done: Instant,
}

impl Report {
    /// Derives the rates and latencies, so that the Automerge war room and the Yjs one ([`super::yjs`]) compute
    /// them alike.
    pub(super) fn new<E, W>(
        run: &Run,
        settings: Settings,
        timed: Timed,
        typed: Typed<E>,
        watched: Watched<W>,
        latencies: &Latencies,
        usage: Usages,
    ) -> Report {
        let latency = latencies.total();
        let delivered = latency.count();
        let span = (timed.all_done - timed.typing_started).as_secs_f64();
        Report {
            target: run.target.name().into(),
            connect_s: timed.connect_s,
            keystrokes: timed.keystrokes,
            keystrokes_per_s: timed.keystrokes as f64
                / (typed.ended - timed.typing_started).as_secs_f64(),
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
            converge_s: (timed.all_done - typed.ended).as_secs_f64(),
            viewers_dropped: watched.dropped,
            first_drop: watched.first_drop,
            editors_dropped: typed.dropped,
            first_editor_drop: typed.first_drop,
            server_changes: timed.server_changes,
            settings,
        }
    }
}

/// The editors after typing: those still connected, converged on one document. Generic over the editor so that
/// the Yjs war room ([`super::yjs`]) gathers its editors the same way.
pub(super) struct Typed<E> {
    pub(super) editors: Vec<E>,
    /// How far the slowest editor fell behind its schedule.
    pub(super) lag: Duration,
    /// When the last editor stopped typing.
    pub(super) ended: Instant,
    /// Editors the server dropped, and why the first one went.
    pub(super) dropped: u32,
    pub(super) first_drop: Option<String>,
}

/// How Automerge editors converge: on the number of changes typed, as no one knows the final heads.
struct CountChanges {
    /// Editors' changes the document held before typing.
    base_changes: usize,
    /// Changes made by the editors that got through typing.
    typed: AtomicUsize,
    /// How long converging may take.
    limit: Duration,
}

impl Finish<Editor> for CountChanges {
    fn settled(&self, editor: &Editor) -> anyhow::Result<()> {
        self.typed
            .fetch_add(editor.made().count as usize, Ordering::Relaxed);
        Ok(())
    }

    async fn converge(&self, editor: &mut Editor, _index: usize) -> anyhow::Result<()> {
        // With an editor gone, nobody knows how many of its keystrokes reached the server: the others count
        // only their own and otherwise trust the server's heads, which no one moves any more.
        let total = self.base_changes + self.typed.load(Ordering::Relaxed);
        editor.converge(total, self.limit).await
    }
}

/// How the editors of one protocol converge once typing is over: [`type_together`] calls `settled` for every
/// editor that got through typing, lets them all meet, then `converge` for each.
pub(super) trait Finish<E>: Send + Sync + 'static {
    /// Records what an editor that got through typing has made or holds.
    fn settled(&self, editor: &E) -> anyhow::Result<()>;
    /// Brings editor `index` to what every editor recorded.
    fn converge(
        &self,
        editor: &mut E,
        index: usize,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Every editor types at `rate` until `duration` is over; once every one's keystrokes reached the server, all of
/// them take in everyone's, as `finish` says. Serves the Automerge war room and the Yjs one ([`super::yjs`]).
pub(super) async fn type_together<E: Typist + 'static>(
    editors: Vec<E>,
    rate: f64,
    duration: Duration,
    finish: impl Finish<E>,
) -> anyhow::Result<Typed<E>> {
    let stop_at = tokio::time::Instant::now() + duration;
    let finish = Arc::new(finish);
    let barrier = Arc::new(Barrier::new(editors.len()));
    let count = editors.len() as u32;
    let mut typing = JoinSet::new();
    for (index, mut editor) in editors.into_iter().enumerate() {
        let (finish, barrier) = (finish.clone(), barrier.clone());
        typing.spawn(async move {
            let typing = async {
                let lag = type_until(&mut editor, index as u32, count, rate, stop_at).await?;
                let typed_end = Instant::now();
                // Everyone's keystrokes reach the server, then everyone takes in everyone's.
                editor.settle().await?;
                anyhow::Ok((lag, typed_end))
            }
            .await;
            if typing.is_ok() {
                finish.settled(&editor)?;
            }
            // A dropped editor still meets the others here, so they do not wait for it forever.
            barrier.wait().await;
            let (lag, typed_end) = match typing {
                Ok(typed) => typed,
                Err(error) => return Ok(Err(error)),
            };
            finish.converge(&mut editor, index).await?;
            anyhow::Ok(Ok((editor, lag, typed_end)))
        });
    }
    gather_editors(typing).await
}

/// One editor's task at the end of typing: the editor converged, how late it was and when it stopped typing; or
/// why the server dropped it (the outer error is the run's own failure).
type Typing<E> = JoinSet<anyhow::Result<anyhow::Result<(E, Duration, Instant)>>>;

/// Waits for every editor's task: those converged are kept, those dropped are counted, and the run fails only
/// when every editor was dropped.
async fn gather_editors<E: 'static>(mut typing: Typing<E>) -> anyhow::Result<Typed<E>> {
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

/// A viewer as the run waits for it at the end, whichever protocol it speaks (Automerge's [`Viewer`], or the
/// Yjs one of [`super::yjs`]), so that one [`gather_viewers`] (and one [`super::trace::witness_text`]) serves both.
pub(super) trait Watcher: Send + 'static {
    /// What the witness kept, to compare with the editors' document.
    type Witness;
    /// The witness's replica; `None` from a viewer that kept nothing.
    fn witness(&self) -> Option<Self::Witness>;
    /// Closes the connection.
    fn close(self) -> impl Future<Output = ()> + Send;
}

impl Watcher for Viewer {
    type Witness = Incident;
    fn witness(&self) -> Option<Incident> {
        Viewer::witness(self).ok()
    }
    fn close(self) -> impl Future<Output = ()> + Send {
        Viewer::close(self)
    }
}

/// The viewers at the end: the witness's document, and who was dropped.
pub(super) struct Watched<W> {
    pub(super) witness: Option<W>,
    pub(super) dropped: u32,
    pub(super) first_drop: Option<String>,
}

impl<W> Watched<W> {
    /// When there were viewers, checks with `same` that the witness's replica reads as the editors' document.
    pub(super) fn check_witness(
        &mut self,
        viewers: u32,
        same: impl FnOnce(W) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        if viewers > 0 {
            let witness = self
                .witness
                .take()
                .context("the witness viewer kept what it received (was it dropped?)")?;
            ensure!(
                same(witness)?,
                "the witness viewer's document reads differently from the editors'"
            );
        }
        Ok(())
    }
}

/// Waits for every viewer to converge on what the editors hold (at most `limit`), closing each.
pub(super) async fn gather_viewers<V: Watcher>(
    mut watching: JoinSet<anyhow::Result<V>>,
    limit: Duration,
    viewers: u32,
) -> anyhow::Result<Watched<V::Witness>> {
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
            witness = viewer.witness();
        }
        viewer.close().await;
    }
    Ok(Watched {
        witness,
        dropped,
        first_drop,
    })
}

/// How long convergence may take after typing stops.
pub(super) fn convergence_limit(duration: Duration) -> Duration {
    Duration::from_secs(60).max(duration)
}

/// An editor as [`type_until`] drives it, whichever protocol it speaks (Automerge's [`Editor`], or the Yjs one of
/// [`super::yjs`]), so that both war rooms type on one schedule.
pub(super) trait Typist: Send {
    /// What the server sends.
    type Event: Send;
    /// The next message from the server.
    fn next_message(&mut self) -> impl Future<Output = anyhow::Result<Self::Event>> + Send;
    /// Applies what the server sent.
    fn handle(&mut self, event: Self::Event) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Waits until the server has everything typed.
    fn settle(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Types one character at `place` and sends it.
    fn type_key(
        &mut self,
        place: Place,
        character: char,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Typist for Editor {
    type Event = wire::peer::Event;
    fn next_message(&mut self) -> impl Future<Output = anyhow::Result<Self::Event>> + Send {
        Editor::next_message(self)
    }
    fn handle(&mut self, event: Self::Event) -> impl Future<Output = anyhow::Result<()>> + Send {
        Editor::handle(self, event)
    }
    fn settle(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        Editor::settle(self)
    }
    async fn type_key(&mut self, place: Place, character: char) -> anyhow::Result<()> {
        Editor::type_key(self, place, character).await.map(drop)
    }
}

/// Types on a fixed schedule until `stop_at` (an open loop, as people type: a keystroke is due every 1/`rate`
/// seconds whatever the server does), applying what the server sends in between. Editors are staggered over one
/// interval so that their keystrokes do not all land at once. Returns how late the last keystroke was.
async fn type_until(
    editor: &mut impl Typist,
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
                message = editor.next_message() => editor.handle(message?).await?,
            }
        }
        lag = tokio::time::Instant::now().saturating_duration_since(due);
        let character = prose.next().unwrap_or(' ');
        editor.type_key(place, character).await?;
    }
    Ok(lag)
}
