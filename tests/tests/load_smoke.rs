//! Load smoke test of the sync server: one editor types into an incident's summary while 200 viewers watch it, and
//! every viewer must end up with exactly the editor's text. It asserts convergence, not speed; along the way it
//! measures how long each keystroke takes to reach each viewer and how much memory the server uses, and prints the
//! figures.
//!
//! The server is the real command line in a child process ([`TestServer::start_process`]), so that its memory can be
//! read from `/proc/<pid>/status` apart from the clients' (with the load generator's meter, `bench::process`). The
//! editor is the harness's [`SyncClient`]; the viewers are lean purpose-built peers (an Automerge document and the
//! shared [`wire::peer::Peer`] over a raw WebSocket), so that 200 of them fit on a two-core machine and each can
//! timestamp every change the moment it applies it.
//!
//! As a benchmark with figures (the numbers in `BENCHMARKS.md` come from this):
//!
//! ```sh
//! cargo test --release -p tests --test load_smoke -- --nocapture
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc, Value};
use bench::process::{Process, mib};
use futures_util::{SinkExt, StreamExt};
use tests::ws::Message as WsMessage;
use tests::{SyncClient, SyncTarget, TestServer, markdown_section};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use wire::peer::{Event, Peer};
use wire::{DocumentId, Message, PeerId};

/// How many viewers watch the document.
const VIEWERS: usize = 200;

/// How many keystrokes the editor types.
const KEYSTROKES: usize = 200;

/// The editor's steady pace: 20 keystrokes a second, a fast typist. `LOAD_SMOKE_KEYSTROKE_MS` overrides it, to see
/// where the machine saturates.
const KEYSTROKE_INTERVAL: Duration = Duration::from_millis(50);

/// What the editor types, cycled through: one ASCII character per keystroke.
const TYPED: &str = "Checkout fails for EU customers; rolling back release 2026.11.24-3. ";

/// How long the whole exercise may take before the test fails. A passing run in debug mode takes a few seconds; the
/// margin is for a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// The field the editor types into.
const FIELD: &str = "summary";

/// What one viewer saw.
struct Seen {
    /// When the viewer applied the change that brought keystroke `k`, for every `k` in typing order.
    arrivals: Vec<Instant>,
    /// The viewer's final text of the summary.
    text: String,
}

/// The editor types while 200 viewers watch; every viewer, and the server's export, end with the editor's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_converge_on_one_editors_typing() -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let interval = keystroke_interval()?;
    let server = TestServer::start_process().await;
    let pid = server_pid(&server.data_dir()).context("finding the server process")?;
    let editor_token = server.token("editor", "write").await;
    let viewer_token = server.token("viewer", "read").await;
    let incident = server.declare(&editor_token, "Load smoke").await;
    let document_id: DocumentId = incident
        .id
        .parse()
        .context("the declared id is a document id")?;
    let server_process = Process::pid(pid);
    let rss_idle = server_process.rss_kib()?;

    // Every viewer connects, syncs the document and reports that it is ready before the editor types anything, so
    // that the latencies measure fan-out of edits rather than initial syncs.
    let connect_started = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::channel::<usize>(VIEWERS);
    let mut viewers = JoinSet::new();
    for index in 0..VIEWERS {
        let url = server.ws_url(&viewer_token);
        let ready = ready_tx.clone();
        viewers.spawn(async move {
            let seen = tokio::time::timeout_at(deadline, view(index, &url, document_id, ready))
                .await
                .with_context(|| format!("viewer {index} timed out"))?
                .with_context(|| format!("viewer {index}"))?;
            anyhow::Ok((index, seen))
        });
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < VIEWERS {
        tokio::select! {
            Some(_) = ready_rx.recv() => ready += 1,
            // A viewer that ends before the typing starts has failed; its error says why.
            Some(joined) = viewers.join_next() => {
                let (index, _) = joined.context("a viewer task panicked")??;
                bail!("viewer {index} stopped before the editor typed anything");
            }
            () = tokio::time::sleep_until(deadline) => {
                bail!("only {ready} of {VIEWERS} viewers synced the document within {DEADLINE:?}");
            }
        }
    }
    let connect_time = connect_started.elapsed();
    let rss_watched = server_process.rss_kib()?;

    let cpu_before = (Process::me().cpu_seconds()?, server_process.cpu_seconds()?);
    let typing_started = Instant::now();
    let typed =
        match type_on_own_thread(server.ws_url(&editor_token), incident.id.clone(), interval).await
        {
            Ok(typed) => typed,
            Err(e) => {
                // Say what the server holds: whether it lacks keystrokes or only never acknowledged them.
                let stored = server.document(&editor_token, &incident.id).await;
                let summary = stored
                    .view()
                    .fields
                    .iter()
                    .find(|f| f.def.key == FIELD)
                    .map(|f| format!("{:?}", f.value));
                return Err(e.context(format!("the server's summary is {summary:?}")));
            }
        };
    let expected = typed.text;
    let wanted: String = TYPED.chars().cycle().take(KEYSTROKES).collect();
    ensure!(
        expected == wanted,
        "the editor's own text is {expected:?}, not what it typed ({wanted:?})"
    );

    let mut latencies = Vec::with_capacity(VIEWERS * KEYSTROKES);
    let mut converged = 0;
    while let Some(joined) = viewers.join_next().await {
        let (index, seen) = joined.context("a viewer task panicked")??;
        ensure!(
            seen.text == expected,
            "viewer {index} ended with {:?}, the editor with {expected:?}",
            seen.text
        );
        for (keystroke, arrival) in seen.arrivals.iter().enumerate() {
            latencies.push(arrival.saturating_duration_since(typed.sent[keystroke]));
        }
        converged += 1;
    }
    ensure!(
        converged == VIEWERS,
        "{converged} of {VIEWERS} viewers converged"
    );
    let all_done = typing_started.elapsed();
    let cpu_clients = Process::me().cpu_seconds()? - cpu_before.0;
    let cpu_server = server_process.cpu_seconds()? - cpu_before.1;
    let rss_after = server_process.rss_kib()?;
    let rss_peak = server_process.peak_rss_kib()?;

    // What the server serves to everyone else must be the same text.
    let markdown = server.markdown(&editor_token, &incident.id).await;
    let exported =
        markdown_section(&markdown, "Summary").context("the export has a Summary section")?;
    ensure!(
        exported == expected.trim_end(),
        "the server exports {exported:?}, the editor typed {expected:?}"
    );
    server.stop().await;

    latencies.sort_unstable();
    let pairs = latencies.len();
    ensure!(
        pairs == VIEWERS * KEYSTROKES,
        "{pairs} latencies for {VIEWERS} viewers × {KEYSTROKES} keystrokes"
    );
    Figures {
        interval,
        connect_time,
        typing: typed.took,
        all_done,
        latencies,
        cpu_server,
        cpu_clients,
        rss_kib: [rss_idle, rss_watched, rss_after, rss_peak],
    }
    .print();
    Ok(())
}

/// What a run measured: the figures of `BENCHMARKS.md`.
struct Figures {
    /// The typing pace.
    interval: Duration,
    /// How long the viewers took to connect and sync.
    connect_time: Duration,
    /// From the first keystroke until the server acknowledged the last one.
    typing: Duration,
    /// From the first keystroke until the last viewer converged.
    all_done: Duration,
    /// Keystroke-to-viewer latencies, sorted, one per viewer and keystroke.
    latencies: Vec<Duration>,
    /// CPU seconds the server used from the first keystroke to convergence.
    cpu_server: f64,
    /// CPU seconds this process (the editor and the viewers) used meanwhile.
    cpu_clients: f64,
    /// The server's resident memory in KiB: idle, with the viewers, after typing, and its peak.
    rss_kib: [u64; 4],
}

impl Figures {
    /// Prints the figures, for `--nocapture` runs.
    fn print(&self) {
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let (interval, pairs) = (self.interval, self.latencies.len());
        let [rss_idle, rss_watched, rss_after, rss_peak] = self.rss_kib;
        println!(
            "load smoke ({build} build): 1 editor + {VIEWERS} viewers, {KEYSTROKES} keystrokes every {interval:?}"
        );
        println!(
            "  viewers connected and synced in {:.2} s; typing until the server acknowledged the last keystroke took {:.2} s; last viewer converged {:.2} s after the first keystroke",
            self.connect_time.as_secs_f64(),
            self.typing.as_secs_f64(),
            self.all_done.as_secs_f64()
        );
        println!(
            "  keystroke → viewer latency over {pairs} pairs: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            millis(percentile(&self.latencies, 50)),
            millis(percentile(&self.latencies, 99)),
            millis(self.latencies[pairs - 1])
        );
        println!(
            "  CPU from the first keystroke to convergence: server {:.2} s, test process (editor and viewers) {:.2} s",
            self.cpu_server, self.cpu_clients
        );
        println!(
            "  server RSS: {:.1} MiB idle, {:.1} MiB with {VIEWERS} viewers (+{:.1} KiB per viewer), {:.1} MiB after typing, peak {:.1} MiB",
            mib(rss_idle),
            mib(rss_watched),
            rss_watched.saturating_sub(rss_idle) as f64 / VIEWERS as f64,
            mib(rss_after),
            mib(rss_peak)
        );
    }
}

/// What the editor did.
struct Typed {
    /// When each keystroke was sent, in typing order.
    sent: Vec<Instant>,
    /// The editor's text once the server acknowledged every keystroke.
    text: String,
    /// From the first keystroke until the server acknowledged the last one.
    took: Duration,
}

/// Runs the editor on a thread of its own with its own runtime, so that the viewers, which share the test's
/// runtime, cannot hold up its keystrokes: the pace stays the editor's.
async fn type_on_own_thread(
    url: SyncTarget,
    id: String,
    interval: Duration,
) -> anyhow::Result<Typed> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("editor".into())
        .spawn(move || {
            let typed = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the editor's runtime")
                .and_then(|runtime| runtime.block_on(type_keystrokes(&url, &id, interval)));
            let _ = done.send(typed);
        })
        .context("starting the editor's thread")?;
    result.await.context("the editor's thread panicked")?
}

/// The editor: opens the document, then types [`KEYSTROKES`] characters at the end of the summary, one every
/// `interval`, whatever the server does (an open loop, as a person types). Each keystroke is sent at
/// once; the server's acknowledgements queue up meanwhile and are read after the last keystroke, until they cover
/// every one.
async fn type_keystrokes(url: &SyncTarget, id: &str, interval: Duration) -> anyhow::Result<Typed> {
    let mut editor = SyncClient::connect(url).await?;
    editor.open(id).await?;
    ensure!(
        editor.text(FIELD).is_empty(),
        "a new incident's summary starts empty, not {:?}",
        editor.text(FIELD)
    );
    let server_id = editor.server_id().context("the editor has joined")?.clone();
    let document_id = editor
        .document_id()
        .context("the editor has opened the document")?;
    let mut sent = Vec::with_capacity(KEYSTROKES);
    let started = tokio::time::Instant::now();
    for (position, character) in TYPED.chars().cycle().take(KEYSTROKES).enumerate() {
        tokio::time::sleep_until(started + interval * position as u32).await;
        sent.push(Instant::now());
        editor.splice_local(FIELD, position, 0, &character.to_string())?;
        while let Some(data) = editor.next_sync_data() {
            let message = Message::Sync {
                sender_id: editor.peer_id().clone(),
                target_id: server_id.clone(),
                document_id,
                data,
            };
            editor
                .send(&message)
                .await
                .with_context(|| format!("sending keystroke {position}"))?;
        }
    }
    editor
        .sync_until_acknowledged(DEADLINE)
        .await
        .context("the server did not acknowledge every keystroke")?;
    let took = started.elapsed();
    let text = editor.text(FIELD);
    editor.close().await?;
    Ok(Typed { sent, text, took })
}

/// One viewer: joins, asks for the document, reports ready once it holds the (empty) summary, then applies sync
/// messages until it holds all the keystrokes, timestamping each one as it arrives.
async fn view(
    index: usize,
    url: &SyncTarget,
    document_id: DocumentId,
    ready: mpsc::Sender<usize>,
) -> anyhow::Result<Seen> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connecting")?;
    let mut peer = Peer::new(PeerId::from(format!("load-viewer-{index}")));
    socket
        .send(WsMessage::Binary(peer.join().into()))
        .await
        .context("sending join")?;
    match peer.receive(&next_frame(&mut socket).await?)? {
        Event::Joined => {}
        other => bail!("expected peer, got {other:?}"),
    }
    // An empty replica: its first message is a `request`.
    let mut doc = AutoCommit::new();
    while let Some(request) = peer.sync(document_id, &mut doc) {
        socket
            .send(WsMessage::Binary(request.into()))
            .await
            .context("sending request")?;
    }

    let mut ready = Some(ready);
    let mut summary: Option<ObjId> = None;
    let mut arrivals = Vec::with_capacity(KEYSTROKES);
    while arrivals.len() < KEYSTROKES {
        let (document, message) = match peer.receive(&next_frame(&mut socket).await?)? {
            Event::Sync { document, message } => (document, message),
            Event::Unavailable(_) => bail!("the server says the document is unavailable"),
            // Presence and heads gossip are none of a viewer's business.
            _ => continue,
        };
        peer.apply(document, &mut doc, message)
            .context("applying a sync message")?;
        let now = Instant::now();
        while let Some(reply) = peer.sync(document_id, &mut doc) {
            socket
                .send(WsMessage::Binary(reply.into()))
                .await
                .context("answering a sync message")?;
        }
        if summary.is_none() {
            summary = match doc.get(ROOT, FIELD)? {
                Some((Value::Object(ObjType::Text), id)) => Some(id),
                _ => None,
            };
        }
        let Some(text) = &summary else { continue };
        if let Some(ready) = ready.take() {
            ensure!(
                doc.length(text) == 0,
                "the summary was not empty before typing"
            );
            ready.send(index).await.context("reporting ready")?;
        }
        let length = doc.length(text);
        ensure!(
            length >= arrivals.len() && length <= KEYSTROKES,
            "the summary went from {} to {length} characters",
            arrivals.len()
        );
        arrivals.resize(length, now);
    }
    let text = summary
        .as_ref()
        .map(|text| doc.text(text))
        .transpose()?
        .unwrap_or_default();
    let _ = socket.close(None).await;
    Ok(Seen { arrivals, text })
}

/// The next binary frame on the socket, skipping pings and pongs.
async fn next_frame<S>(socket: &mut S) -> anyhow::Result<Vec<u8>>
where
    S: futures_util::Stream<Item = Result<WsMessage, tests::ws::Error>> + Unpin,
{
    loop {
        match socket
            .next()
            .await
            .context("the server closed the connection")??
        {
            WsMessage::Binary(bytes) => return Ok(bytes.to_vec()),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => bail!("unexpected frame {other:?}"),
        }
    }
}

/// The pace of typing: [`KEYSTROKE_INTERVAL`], or `LOAD_SMOKE_KEYSTROKE_MS` milliseconds when set.
fn keystroke_interval() -> anyhow::Result<Duration> {
    match std::env::var("LOAD_SMOKE_KEYSTROKE_MS") {
        Err(_) => Ok(KEYSTROKE_INTERVAL),
        Ok(ms) => {
            let ms: u64 = ms.parse().with_context(|| {
                format!("LOAD_SMOKE_KEYSTROKE_MS={ms:?} is not a number of milliseconds")
            })?;
            ensure!(ms > 0, "LOAD_SMOKE_KEYSTROKE_MS must be at least 1");
            Ok(Duration::from_millis(ms))
        }
    }
}

/// The pid of the server process: the child of this test process whose command line names `data_dir`.
fn server_pid(data_dir: &Path) -> anyhow::Result<u32> {
    let me = std::process::id();
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        // The parent pid is the second field after the command name, which is in parentheses and may hold spaces.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(me) && cmdline.split(|b| *b == 0).any(|arg| arg == wanted) {
            return Ok(pid);
        }
    }
    bail!("no child process serves {}", data_dir.display())
}

/// The `p`-th percentile of sorted, non-empty `values` (nearest rank).
fn percentile(values: &[Duration], p: usize) -> Duration {
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank.min(values.len()) - 1]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
