//! Live documents: one actor task per loaded incident owns its Automerge value, the sync state of every peer, its
//! persistence and its fan-out. Everything else talks to it through a [`DocHandle`] over a bounded channel.
//!
//! The actor works in batches: it takes every command already queued, applies them all, writes the new changes
//! to storage in one append (the store batches appends across documents too: group commit), and only then
//! answers HTTP callers and sends sync messages. So a change is durable before any peer or response can see it.

mod registry;

pub use registry::Registry;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use automerge::sync;
use automerge::{AutoCommit, ChangeHash};
use chrono::Utc;
use incident_doc::schema::SERVER_NAME;
use incident_doc::{Applied, Editor, Headline, Incident, OpError, Operation, SyncMemo};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::metrics::Metrics;
use crate::store::outbox::NewDelivery;
use crate::store::{ChunkId, IncidentSummary, Store, StoreError};
use crate::webhooks::Webhooks;
use crate::wire::{DocumentId, Message, PeerId};

/// How many queued commands one batch takes at most, so one busy document cannot starve the fan-out.
const MAX_BATCH: usize = 512;

/// How far apart fan-outs are kept per attached peer, up to [`MAX_FLUSH_SPACING`]. A fan-out costs each peer a
/// frame out and an acknowledgement back (about 20 µs of server CPU together), whatever it carries, so when
/// keystrokes arrive faster than fan-outs can follow, spacing them lets one frame carry several keystrokes: with
/// 1,000 viewers a document sends them at most 20 times a second. A lone keystroke after a quiet spell goes out
/// at once; and with few peers the spacing is far below a keystroke's interval.
const FLUSH_SPACING_PER_PEER: Duration = Duration::from_micros(50);

/// The longest wait between fan-outs, which bounds the latency the spacing adds (automerge-repo's own sync
/// server waits up to 100 ms).
const MAX_FLUSH_SPACING: Duration = Duration::from_millis(50);

/// Appends after which the actor folds the document's chunks into one snapshot, so loading stays fast.
const COMPACT_AFTER_CHUNKS: u64 = 256;

/// Identifies one WebSocket connection, which may sync many documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    /// A process-unique id for a new connection.
    pub fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// How a document actor reaches one connection.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The peer id the client announced in `join`; the target of every message to it.
    pub peer_id: PeerId,
    /// Encoded frames for the connection's writer task. Bounded: a full queue means the client stopped reading.
    pub outbox: mpsc::Sender<Vec<u8>>,
    /// Cancelled to cut the connection off (slow reader, storage failure).
    pub cancel: CancellationToken,
    /// Read-only peers get a read-only sync state: their changes are never applied.
    pub read_only: bool,
    /// The token's name: whose changes this peer's are, for the command rules and the authorship record.
    pub name: String,
    /// Whether the token is an administrator's: administrators may close an incident they do not command.
    pub admin: bool,
}

/// Where an HTTP edit's outcome goes.
pub type ApplyReply = oneshot::Sender<Result<Vec<Applied>, DocError>>;

/// A read run inside the actor against the durable document. Only for cheap reads (a few lookups): everything
/// the actor runs delays every peer and writer of the document, so heavy reads take a [`Snapshot`] instead.
pub type ReadFn = Box<dyn FnOnce(&mut Incident) + Send>;

/// The durable state of a document, to read off its actor: exports, history, the postmortem and the status update
/// walk the whole document, which would hold up its writers and peers if the actor ran them.
///
/// A copy of the Automerge value, which is the cheapest snapshot the actor can hand out (a 5,000-change document:
/// 0.2 ms to copy, against 1.3 ms to save and 25 ms to load again, BENCHMARKS.md). Readers of unchanged heads
/// share one copy.
#[derive(Clone)]
pub struct Snapshot(Arc<AutoCommit>);

impl Snapshot {
    /// The snapshot as an incident of the caller's own: reads such as the history take `&mut`, and the copy this
    /// may make happens on the caller's thread, never the actor's.
    pub fn into_incident(self) -> Incident {
        let doc = Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone());
        let mut incident = Incident::empty(None);
        *incident.doc_mut() = doc;
        incident
    }
}

/// A request to a document actor.
pub enum Command {
    /// Starts syncing with a connection.
    Attach {
        /// Which connection.
        conn: ConnId,
        /// How to reach it.
        link: PeerLink,
    },
    /// One sync message from an attached connection.
    Sync {
        /// Which connection.
        conn: ConnId,
        /// The encoded Automerge sync message.
        data: Vec<u8>,
        /// Bytes of changes it carries (the connection decoded it to pace edits), for the document size limit.
        change_bytes: usize,
    },
    /// Presence to relay to the other peers (the connection checked it).
    Ephemeral {
        /// Which connection sent it.
        conn: ConnId,
        /// The sender's session, for duplicate detection.
        session_id: String,
        /// The sender's sequence number in that session.
        count: u64,
        /// The presence payload as the connection re-encoded it, relayed as it is.
        data: Vec<u8>,
    },
    /// The connection stopped syncing this document.
    Detach {
        /// Which connection.
        conn: ConnId,
    },
    /// Typed edits from the HTTP API, applied together as one durable unit.
    Apply {
        /// The edits, in order.
        ops: Vec<Operation>,
        /// Who makes them and when.
        editor: Editor,
        /// Answered once the changes are durable, or with the first refusal (then nothing was applied).
        reply: ApplyReply,
    },
    /// Runs a cheap read against the durable state of the document.
    Read(ReadFn),
    /// Asks for a [`Snapshot`] of the durable state of the document, for a heavy read off the actor.
    Snapshot(oneshot::Sender<Snapshot>),
    /// Other server nodes appended to the document (or may have): merge what storage has beyond what this
    /// actor has seen.
    Refresh,
    /// The document was deleted: tell every peer it is unavailable and stop.
    Close,
}

/// Why a document request failed.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The operation was refused; nothing changed.
    #[error(transparent)]
    Refused(#[from] OpError),
    /// Storage failed; the change was not acknowledged.
    #[error("storage unavailable: {0}")]
    Storage(#[from] StoreError),
    /// The document actor stopped (shutdown or storage failure) before answering.
    #[error("the document is unavailable, try again")]
    Gone,
    /// The document reached its size limit (bytes); nothing was applied.
    #[error("the document reached its size limit of {0} bytes; nothing was changed")]
    TooLarge(usize),
}

/// A cheap, cloneable way to reach one document actor.
#[derive(Debug, Clone)]
pub struct DocHandle {
    /// The document this actor owns.
    pub id: DocumentId,
    /// Commands to the actor; bounded so that a flood of edits slows its senders down instead of growing memory.
    tx: mpsc::Sender<Command>,
    /// Which incarnation of the actor this is, so a stale handle's removal never removes a newer actor.
    generation: u64,
}

impl DocHandle {
    /// Sends a command; `Err` gives it back when the actor has stopped (the registry then loads it anew).
    pub async fn send(&self, command: Command) -> Result<(), Command> {
        self.tx.send(command).await.map_err(|e| e.0)
    }

    /// Applies typed edits; returns once they are durable.
    pub async fn apply(
        &self,
        ops: Vec<Operation>,
        editor: Editor,
    ) -> Result<Vec<Applied>, DocError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Apply { ops, editor, reply })
            .await
            .map_err(|_| DocError::Gone)?;
        rx.await.map_err(|_| DocError::Gone)?
    }

    /// Runs `f` on the document inside the actor and returns its result. Only for cheap reads: see [`ReadFn`].
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Incident) -> T + Send + 'static,
    ) -> Result<T, DocError> {
        let (tx, rx) = oneshot::channel();
        let command = Command::Read(Box::new(move |incident| {
            let _ = tx.send(f(incident));
        }));
        self.send(command).await.map_err(|_| DocError::Gone)?;
        rx.await.map_err(|_| DocError::Gone)
    }

    /// The durable state of the document, once every command queued before this one is durable.
    pub async fn snapshot(&self) -> Result<Snapshot, DocError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Snapshot(tx))
            .await
            .map_err(|_| DocError::Gone)?;
        rx.await.map_err(|_| DocError::Gone)
    }

    /// Asks the actor to catch up with other nodes' appends. Never waits: a full queue gets the request from a
    /// task of its own, since a dropped request would leave the document behind until the next one.
    pub fn refresh(&self) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.tx.try_send(Command::Refresh) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(command).await;
            });
        }
    }

    /// Whether the actor behind this handle has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Settings of every document actor.
#[derive(Debug, Clone)]
pub struct DocConfig {
    /// A document with no peers and no commands for this long is unloaded from memory.
    pub idle_unload: Duration,
    /// Capacity of each actor's command queue.
    pub queue: usize,
    /// Largest stored size of a document: what it loaded from, plus what it appended since (or its last snapshot).
    pub max_document_bytes: usize,
    /// The webhook endpoints: when there are any, each batch's events are queued with its changes.
    pub webhooks: Arc<Webhooks>,
}

/// One attached peer's state.
struct Peer {
    /// How to reach it.
    link: PeerLink,
    /// Automerge's record of what this peer has, so each message carries only what it lacks.
    state: sync::State,
    /// Set when the peer sent something this batch and may need an answer even if nothing changed.
    pending: bool,
    /// Our answers to the peer's sync messages of this batch, generated right after each one as a sequential
    /// automerge peer does, and sent once the batch is durable. Generating only at the end of the batch loses
    /// answers: when a peer's change and its next message (showing the merged heads) arrive in one batch, automerge
    /// takes the second as proof the peer knows our heads, and the peer never learns that we hold its change.
    answers: Vec<Vec<u8>>,
    /// Highest ephemeral `count` seen per session, to drop duplicates that arrive through several paths.
    ephemeral_seen: HashMap<String, u64>,
}

/// The actor's state: the document and everything that must change together with it.
struct Actor {
    id: DocumentId,
    /// The document; only this actor touches it.
    incident: Incident,
    /// The heads known to be durable; `save_after` from here gives the next chunk.
    saved_heads: Vec<ChangeHash>,
    /// Every chunk of the document up to this id is merged into `incident`: set by loads and catch-ups, which
    /// read gapless runs. The actor's own appends do not move it, since another node's chunk may sit below
    /// them; compaction catches up first and covers exactly this far.
    seen: ChunkId,
    /// Appends since the last compaction.
    chunks_since_compact: u64,
    /// The document's size in storage: the bytes loaded, plus every chunk appended or merged since, or the
    /// snapshot's size after a compaction. What the document size limit is measured against.
    stored_bytes: usize,
    /// Bytes this actor appended since `seen` last moved: a catch-up reads them back with other nodes' chunks,
    /// so they are counted once.
    appended_since_seen: usize,
    /// Bytes of changes merged this batch and not yet appended, so a batch of messages cannot overshoot the limit.
    unsaved_bytes: usize,
    /// Bytes of sync messages that left changes held back for a dependency the document lacks ("orphans", which
    /// automerge keeps aside unapplied until the dependency arrives). They count toward the size limit, and are
    /// dropped when a peer detaches (see [`Actor::drop_orphans`]), so a peer cannot pile them up.
    orphan_bytes: usize,
    /// The peers whose changes are held back. A held change is judged as its sender's when it completes, so it
    /// may only complete through that sender's own messages: before anything else is merged (another peer's
    /// changes, other nodes' chunks) they are dropped and their senders cut off, to resend them on reconnecting
    /// (see [`Actor::isolate_held`]).
    holders: HashSet<ConnId>,
    /// The document size limit.
    max_bytes: usize,
    peers: HashMap<ConnId, Peer>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Our peer id, the sender of every message we send.
    server_id: PeerId,
    /// Sync computations shared by peers in the same state.
    memo: SyncMemo,
    /// Webhook endpoints, which hear of this document's events.
    webhooks: Arc<Webhooks>,
    /// The document changed since the last fan-out: every peer hears at the next one.
    changed_since_flush: bool,
    /// A fan-out is owed: the document changed or a peer spoke (its `pending` flag is set).
    flush_wanted: bool,
    /// When the last fan-out of changes ran, to space them (see [`FLUSH_SPACING_PER_PEER`]).
    last_flush: Instant,
    /// The last snapshot handed out and the heads it was taken at: readers of the same heads share it. Weak, so a
    /// snapshot nobody reads any more does not keep a second copy of the document in memory.
    snapshot: Option<(Vec<ChangeHash>, Weak<AutoCommit>)>,
    /// Which incarnation of the document's actor this is, so that its exit never removes a successor's due times.
    generation: u64,
}

/// Starts the actor for a document just loaded from storage (`size` bytes of it); returns its handle.
pub(crate) fn spawn(
    id: DocumentId,
    incident: Incident,
    size: usize,
    seen: ChunkId,
    generation: u64,
    config: &DocConfig,
    registry: Registry,
) -> DocHandle {
    let (tx, rx) = mpsc::channel(config.queue);
    // Appends by other nodes between the load and the registry knowing this actor sent notices nobody acted
    // on: the first batch catches up with them.
    let _ = tx.try_send(Command::Refresh);
    let mut incident = incident;
    incident.govern();
    let saved_heads = incident.doc_mut().get_heads();
    let actor = Actor {
        id,
        incident,
        saved_heads,
        seen,
        chunks_since_compact: 0,
        stored_bytes: size,
        appended_since_seen: 0,
        unsaved_bytes: 0,
        orphan_bytes: 0,
        holders: HashSet::new(),
        max_bytes: config.max_document_bytes,
        peers: HashMap::new(),
        store: registry.store(),
        metrics: registry.metrics(),
        server_id: registry.server_id().clone(),
        memo: SyncMemo::default(),
        webhooks: config.webhooks.clone(),
        changed_since_flush: false,
        flush_wanted: false,
        last_flush: Instant::now(),
        snapshot: None,
        generation,
    };
    let idle = config.idle_unload;
    let span = info_span!("document", id = %id);
    registry.clone().spawn_task(
        async move {
            registry.metrics().documents_loaded.inc();
            let mut actor = actor;
            actor.publish_due_times();
            actor.run(rx, idle, registry.shutdown()).await;
            registry.metrics().due.remove(id, generation);
            registry.metrics().documents_loaded.dec();
            registry.forget(id, generation);
        }
        .instrument(span),
    );
    DocHandle { id, tx, generation }
}

impl DocHandle {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

/// What a batch produced that must wait for durability.
#[derive(Default)]
struct Batch {
    /// HTTP edits to answer.
    replies: Vec<(ApplyReply, Vec<Applied>)>,
    /// Reads to run after the changes are durable.
    reads: Vec<ReadFn>,
    /// Snapshots to hand out after the changes are durable.
    snapshots: Vec<oneshot::Sender<Snapshot>>,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        idle: Duration,
        shutdown: CancellationToken,
    ) {
        let mut idle_since = Instant::now();
        loop {
            let first = tokio::select! {
                biased;
                () = tokio::time::sleep_until(self.flush_at().into()), if self.flush_wanted => {
                    self.flush_peers();
                    continue;
                }
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(idle.saturating_sub(idle_since.elapsed())), if self.peers.is_empty() => {
                    debug!("idle, unloading");
                    break;
                }
            };
            let mut commands = vec![first];
            while commands.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            let closing = commands.iter().any(|c| matches!(c, Command::Close));
            if let Err(e) = self.process(commands).await {
                warn!(error = %e, "storage failed; dropping the document's peers until storage recovers");
                self.fail(&e);
                return;
            }
            if closing {
                self.close();
                break;
            }
            if self.flush_wanted && self.flush_at() <= Instant::now() {
                self.flush_peers();
            }
            idle_since = Instant::now();
        }
        // Nothing is pending: every batch was made durable before its replies went out.
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let Command::Apply { reply, .. } = command {
                let _ = reply.send(Err(DocError::Gone));
            }
        }
    }

    async fn process(&mut self, commands: Vec<Command>) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        // First, before this batch's own changes, so that everything in memory is still durable.
        let caught_up = if commands.iter().any(|c| matches!(c, Command::Refresh)) {
            self.catch_up().await?
        } else {
            false
        };
        // Taken after the catch-up: other nodes' changes are theirs to report.
        let before = (self.webhooks.enabled()
            && commands
                .iter()
                .any(|c| matches!(c, Command::Apply { .. } | Command::Sync { .. })))
        .then(|| self.incident.signals());
        for command in acknowledgements_last(commands) {
            match command {
                Command::Attach { conn, link } => {
                    let state = if link.read_only {
                        sync::State::new_read_only()
                    } else {
                        sync::State::new()
                    };
                    self.peers.insert(
                        conn,
                        Peer {
                            link,
                            state,
                            pending: true,
                            answers: Vec::new(),
                            ephemeral_seen: HashMap::new(),
                        },
                    );
                    self.metrics.peers.inc();
                }
                Command::Sync {
                    conn,
                    data,
                    change_bytes,
                } => self.receive_sync(conn, &data, change_bytes),
                Command::Ephemeral {
                    conn,
                    session_id,
                    count,
                    data,
                } => self.relay_ephemeral(conn, session_id, count, data),
                Command::Detach { conn } => {
                    if self.peers.remove(&conn).is_some() {
                        self.metrics.peers.dec();
                    }
                    // What it left held back cannot complete as its own any more.
                    if self.holders.remove(&conn) {
                        self.drop_held();
                    }
                }
                Command::Apply { ops, editor, reply } => {
                    if self.stored_bytes + self.unsaved_bytes >= self.max_bytes {
                        self.metrics.rejected_documents.inc();
                        let _ = reply.send(Err(DocError::TooLarge(self.max_bytes)));
                        continue;
                    }
                    match self.incident.apply_all(&ops, &editor) {
                        Ok(applied) => batch.replies.push((reply, applied)),
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                }
                Command::Read(f) => batch.reads.push(f),
                Command::Snapshot(reply) => batch.snapshots.push(reply),
                Command::Refresh | Command::Close => {}
            }
        }
        let deliveries = match before {
            Some(before) => {
                let after = self.incident.signals();
                let events = incident_doc::signals::events(&before, &after);
                self.webhooks
                    .deliveries(self.id, &after, &events, Utc::now())
            }
            None => Vec::new(),
        };
        let queued = !deliveries.is_empty();
        let changed = self.persist(deliveries).await?;
        // Before anyone hears of the changes, so a writer who got its answer finds them in `/metrics`.
        if changed || caught_up {
            self.publish_due_times();
        }
        if queued && changed {
            self.webhooks.wake.notify_one();
        }
        for (reply, applied) in batch.replies {
            let _ = reply.send(Ok(applied));
        }
        for read in batch.reads {
            read(&mut self.incident);
        }
        if !batch.snapshots.is_empty() {
            let snapshot = self.snapshot();
            for reply in batch.snapshots {
                let _ = reply.send(snapshot.clone());
            }
        }
        // Peers hear at the next fan-out, which `run` spaces out under load.
        self.changed_since_flush |= changed || caught_up;
        self.flush_wanted |= self.changed_since_flush || self.peers.values().any(|p| p.pending);
        Ok(())
    }

    /// The durable document as a snapshot: the last one handed out while the heads are unchanged and someone
    /// still reads it, else a new copy. Call only when every change in memory is durable.
    fn snapshot(&mut self) -> Snapshot {
        let heads = self.incident.doc_mut().get_heads();
        if let Some((at, shared)) = &self.snapshot
            && *at == heads
            && let Some(doc) = shared.upgrade()
        {
            return Snapshot(doc);
        }
        let doc = Arc::new(self.incident.doc().clone());
        self.snapshot = Some((heads, Arc::downgrade(&doc)));
        Snapshot(doc)
    }

    /// Tells the metrics when this document's fields fall due, so `/metrics` counts stale fields from the clock
    /// alone and never calls into an actor.
    fn publish_due_times(&mut self) {
        let due = self.incident.due_times().into_iter().map(|(_, at)| at);
        self.metrics
            .due
            .set(self.id, self.generation, due.collect());
    }

    /// Merges the chunks storage holds beyond `seen` (other nodes' appends, and our own since the last
    /// catch-up, which change nothing); returns whether the document changed. Call only when every change in
    /// memory is durable: what is merged is durable too, so the saved heads move with it.
    async fn catch_up(&mut self) -> Result<bool, StoreError> {
        let Some(stored) = self.store.load_after(self.id, self.seen).await? else {
            return Ok(false);
        };
        // Other nodes' changes must not complete a peer's held-back ones unjudged (nor be saved as if stored).
        self.isolate_held(None);
        let before = self.incident.doc_mut().get_heads();
        let merged: usize = stored.chunks.iter().map(Vec::len).sum();
        self.stored_bytes = self.stored_bytes.saturating_sub(self.appended_since_seen) + merged;
        self.appended_since_seen = 0;
        for chunk in &stored.chunks {
            self.incident
                .doc_mut()
                .load_incremental(chunk)
                .map_err(|e| StoreError::Corrupt(format!("document {}: {e}", self.id)))?;
        }
        self.seen = stored.upto;
        let after = self.incident.doc_mut().get_heads();
        self.saved_heads = after.clone();
        Ok(before != after)
    }

    fn receive_sync(&mut self, conn: ConnId, data: &[u8], change_bytes: usize) {
        if let Some(reason) = self.reserve_size(conn, change_bytes) {
            self.cut_off(conn, reason);
            return;
        }
        if change_bytes > 0 {
            self.isolate_held(Some(conn));
            if !self.peers.contains_key(&conn) {
                return;
            }
        }
        self.merge_sync(conn, data);
        if change_bytes > 0 {
            if self.incident.doc_mut().get_missing_deps(&[]).is_empty() {
                self.orphan_bytes = 0;
                self.holders.clear();
            } else {
                self.orphan_bytes += change_bytes;
                self.holders.insert(conn);
            }
        }
    }

    /// Before changes from `source` (a peer; `None`: storage) are merged, drops the changes other peers left held
    /// back for a missing dependency and cuts those peers off with an `error` saying why: a held change must
    /// complete through its own sender's messages, where it is judged as theirs. Their clients resend the changes,
    /// with whatever they lacked, when they reconnect. Nothing is lost: a held change was never acknowledged.
    fn isolate_held(&mut self, source: Option<ConnId>) {
        if !self.holders.iter().all(|holder| Some(*holder) == source) {
            self.drop_held();
        }
    }

    /// Drops every change held back for a missing dependency and cuts off the peers that sent them.
    fn drop_held(&mut self) {
        let holders: Vec<ConnId> = self.holders.drain().collect();
        self.orphan_bytes = self.orphan_bytes.max(1);
        self.drop_orphans();
        for conn in holders {
            self.cut_off(
                conn,
                format!(
                    "changes you sent for document {} wait for a change this server does not have, and the \
                     document moved on from another source; they were dropped: reconnect to send them again with \
                     what they depend on",
                    self.id
                ),
            );
        }
    }

    /// Merges one peer's sync message, enforces the command rules on what it changed and queues our answers; a
    /// broken message cuts the peer off.
    fn merge_sync(&mut self, conn: ConnId, data: &[u8]) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        peer.pending = true;
        let now = Utc::now();
        let server = Editor::new(SERVER_NAME, now);
        let sender = Editor::new(peer.link.name.as_str(), now).with_admin(peer.link.admin);
        match self
            .incident
            .receive_sync(&mut self.memo, &mut peer.state, data, &sender, &server)
        {
            Ok(received) => {
                if !received.violations.is_empty() {
                    self.metrics
                        .rule_violations
                        .add(received.violations.len() as u64);
                    for violation in &received.violations {
                        debug!(peer = %peer.link.peer_id, rule = ?violation.rule, "reverted a change");
                        let frame = refusal(
                            self.id,
                            &self.server_id,
                            &peer.link.peer_id,
                            &violation.message,
                        );
                        let _ = peer.link.outbox.try_send(frame);
                    }
                }
                peer.answers.extend(received.answer);
            }
            Err(e) => {
                // A broken sync message is a protocol error: tell the client and cut it off; others carry on.
                debug!(error = %e, "bad sync message");
                self.metrics.protocol_errors.inc();
                let frame = Message::error(format!(
                    "invalid sync message for document {}: {e}",
                    self.id
                ))
                .encode();
                let _ = peer.link.outbox.try_send(frame);
                peer.link.cancel.cancel();
                self.peers.remove(&conn);
                self.metrics.peers.dec();
            }
        }
    }

    /// Checks the document size limit before a peer's changes are merged (a merged change cannot be taken out
    /// again) and reserves their bytes until the batch is appended; returns why they are refused, if they are.
    /// Read-only peers' changes are never applied, so they never count.
    fn reserve_size(&mut self, conn: ConnId, change_bytes: usize) -> Option<String> {
        let read_only = self.peers.get(&conn).is_none_or(|p| p.link.read_only);
        if read_only || change_bytes == 0 {
            return None;
        }
        if self.stored_bytes + self.unsaved_bytes + self.orphan_bytes + change_bytes
            > self.max_bytes
        {
            self.metrics.rejected_documents.inc();
            return Some(format!(
                "the changes in this sync message ({change_bytes} bytes) would take document {} past its size \
                 limit of {} bytes ({} bytes stored); they were not applied",
                self.id, self.max_bytes, self.stored_bytes
            ));
        }
        self.unsaved_bytes += change_bytes;
        None
    }

    /// Drops the changes held back for a missing dependency, by reloading the document from its own saved form
    /// (which leaves them out). Only when there are any, so only after a peer sent some: a peer that did so by
    /// accident resends them, with their ancestors, when it syncs again.
    fn drop_orphans(&mut self) {
        if self.orphan_bytes == 0 {
            return;
        }
        match Incident::load(&self.incident.save()) {
            Ok(mut fresh) => {
                fresh.govern();
                debug!(
                    bytes = self.orphan_bytes,
                    "dropped changes held for missing dependencies"
                );
                self.incident = fresh;
                self.orphan_bytes = 0;
            }
            Err(e) => warn!(error = %e, "could not reload the document to drop held changes"),
        }
    }

    /// Tells one peer why with an `error` message and disconnects it; the document and other peers carry on.
    fn cut_off(&mut self, conn: ConnId, reason: String) {
        if let Some(peer) = self.peers.remove(&conn) {
            let _ = peer.link.outbox.try_send(Message::error(reason).encode());
            peer.link.cancel.cancel();
            self.metrics.peers.dec();
        }
    }

    fn relay_ephemeral(&mut self, from: ConnId, session_id: String, count: u64, data: Vec<u8>) {
        let Some(sender) = self.peers.get_mut(&from) else {
            return;
        };
        let seen = sender.ephemeral_seen.entry(session_id.clone()).or_insert(0);
        if count != 0 && count <= *seen {
            return;
        }
        *seen = count;
        let sender_id = sender.link.peer_id.clone();
        let mut slow = Vec::new();
        for (conn, peer) in &self.peers {
            if *conn == from {
                continue;
            }
            let frame = Message::Ephemeral {
                sender_id: sender_id.clone(),
                target_id: peer.link.peer_id.clone(),
                document_id: self.id,
                session_id: session_id.clone(),
                count,
                data: data.clone(),
            }
            .encode();
            if peer.link.outbox.try_send(frame).is_err() {
                slow.push(*conn);
            }
        }
        self.drop_slow(slow);
    }

    /// Writes every change not yet durable as one chunk, with the refreshed index row and the webhook deliveries
    /// the changes caused in the same transaction. Returns whether there was anything to write.
    async fn persist(&mut self, deliveries: Vec<NewDelivery>) -> Result<bool, StoreError> {
        let heads = self.incident.doc_mut().get_heads();
        if heads == self.saved_heads {
            self.unsaved_bytes = 0;
            return Ok(false);
        }
        let changes = self
            .incident
            .doc_mut()
            .get_changes_meta(&self.saved_heads)
            .len();
        let chunk = self.incident.doc_mut().save_after(&self.saved_heads);
        let chunk_len = chunk.len();
        let summary = summary_row(self.id, &self.incident.headline());
        let started = Instant::now();
        let result = self
            .store
            .append_with(self.id, chunk, Some(summary), deliveries)
            .await;
        self.metrics.storage_append.observe(started.elapsed());
        result?;
        self.stored_bytes += chunk_len;
        self.appended_since_seen += chunk_len;
        self.unsaved_bytes = 0;
        self.metrics.changes_applied.add(changes as u64);
        self.saved_heads = heads;
        self.chunks_since_compact += 1;
        if self.chunks_since_compact >= COMPACT_AFTER_CHUNKS {
            // The snapshot must hold every chunk it replaces, other nodes' included: catch up first (every
            // local change is durable at this point), then cover exactly what was seen.
            self.catch_up().await?;
            let snapshot = self.incident.save();
            let snapshot_len = snapshot.len();
            match self.store.compact(self.id, snapshot, self.seen).await {
                Ok(()) => {
                    self.chunks_since_compact = 0;
                    self.stored_bytes = snapshot_len;
                }
                // Compaction is an optimisation: the chunks are still there, so a failure loses nothing.
                Err(e) => warn!(error = %e, "compaction failed"),
            }
        }
        Ok(true)
    }

    /// When the next fan-out may run: a fan-out of changes [`FLUSH_SPACING_PER_PEER`] for each peer after the
    /// last one; answers to peers that only spoke (acknowledgements, mostly answered by nothing) at once.
    fn flush_at(&self) -> Instant {
        if !self.changed_since_flush {
            return Instant::now();
        }
        let peers = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        self.last_flush + (FLUSH_SPACING_PER_PEER * peers).min(MAX_FLUSH_SPACING)
    }

    /// Sends peers what they lack: every peer when the document changed since the last fan-out, else only those
    /// that spoke since. Runs only after the batches it reports on were persisted, so peers only ever see durable
    /// changes.
    fn flush_peers(&mut self) {
        let changed = std::mem::take(&mut self.changed_since_flush);
        self.flush_wanted = false;
        if changed {
            self.last_flush = Instant::now();
        }
        let mut slow = Vec::new();
        for (conn, peer) in self.peers.iter_mut() {
            if !changed && !peer.pending {
                continue;
            }
            peer.pending = false;
            // The answers held for durability, then at most one message for what changed since: generating "until
            // there is nothing left" never ends for a peer that automerge keeps telling to reset (see
            // `Incident::receive_sync`).
            let answers = std::mem::take(&mut peer.answers);
            let update = self.incident.generate_sync(&mut self.memo, &mut peer.state);
            for data in answers.into_iter().chain(update) {
                let frame = Message::Sync {
                    sender_id: self.server_id.clone(),
                    target_id: peer.link.peer_id.clone(),
                    document_id: self.id,
                    data,
                }
                .encode();
                if peer.link.outbox.try_send(frame).is_err() {
                    slow.push(*conn);
                    break;
                }
            }
        }
        self.drop_slow(slow);
    }

    /// A peer whose queue is full stopped reading: it is cut off so it never stalls the document. Its client
    /// reconnects and resyncs from what it has.
    fn drop_slow(&mut self, slow: Vec<ConnId>) {
        for conn in slow {
            if let Some(peer) = self.peers.remove(&conn) {
                warn!(peer = %peer.link.peer_id, "outgoing queue full, disconnecting");
                self.metrics.slow_disconnects.inc();
                self.metrics.peers.dec();
                peer.link.cancel.cancel();
            }
        }
    }

    /// The document is gone: peers hear that it is unavailable, exactly as if it had never existed.
    fn close(&mut self) {
        for (_, peer) in self.peers.drain() {
            let frame = Message::DocUnavailable {
                sender_id: self.server_id.clone(),
                target_id: peer.link.peer_id.clone(),
                document_id: self.id,
            }
            .encode();
            let _ = peer.link.outbox.try_send(frame);
            self.metrics.peers.dec();
        }
    }

    /// Storage failed: the in-memory document may hold changes that are not durable, so it must not be shown to
    /// anyone. Every peer is disconnected (clients keep their changes and resync when they reconnect); the next
    /// request loads the document again from what storage has.
    fn fail(&mut self, error: &StoreError) {
        for (_, peer) in self.peers.drain() {
            let frame =
                Message::error(format!("storage unavailable, reconnect later: {error}")).encode();
            let _ = peer.link.outbox.try_send(frame);
            peer.link.cancel.cancel();
            self.metrics.peers.dec();
        }
    }
}

/// Orders a batch so that the sync messages of connections that send no changes in it (viewers' acknowledgements,
/// mostly) come after everything else. They then all meet the batch's final heads, so caught-up peers are in equal
/// states and share one computation ([`SyncMemo`]) instead of one per change merged between them; and none of them
/// needs an answer of its own (see [`incident_doc::Received::answer`]), so each such peer gets one message at the
/// end of the batch. Moving a connection's messages past other connections' is an order in which they could have
/// arrived anyway; each connection's own messages keep their order.
fn acknowledgements_last(commands: Vec<Command>) -> impl Iterator<Item = Command> {
    let writers: HashSet<ConnId> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Sync {
                conn, change_bytes, ..
            } if *change_bytes > 0 => Some(*conn),
            _ => None,
        })
        .collect();
    let (acknowledgements, rest): (Vec<_>, Vec<_>) = commands.into_iter().partition(
        |command| matches!(command, Command::Sync { conn, .. } if !writers.contains(conn)),
    );
    rest.into_iter().chain(acknowledgements)
}

/// An `ephemeral` message telling one peer that the server reverted its change: a CBOR map
/// `{"refused": message}`, so any automerge-repo client can show it (the JS `DocHandle` emits it as an
/// `ephemeral-message` event); it is not stored, the audit trail in the document is the record. It is sent under
/// the server's peer id, which is how clients tell it from a peer's message (`crate::ephemeral`).
fn refusal(doc: DocumentId, server: &PeerId, peer: &PeerId, message: &str) -> Vec<u8> {
    static COUNT: AtomicU64 = AtomicU64::new(1);
    let payload =
        ciborium::Value::Map(vec![(crate::ephemeral::REFUSED_KEY.into(), message.into())]);
    let mut data = Vec::new();
    // Writing CBOR into a Vec cannot fail.
    let _ = ciborium::into_writer(&payload, &mut data);
    Message::Ephemeral {
        sender_id: server.clone(),
        target_id: peer.clone(),
        document_id: doc,
        session_id: server.to_string(),
        count: COUNT.fetch_add(1, Ordering::Relaxed),
        data,
    }
    .encode()
}

/// The index row for a document.
pub(crate) fn summary_row(id: DocumentId, headline: &Headline) -> IncidentSummary {
    let now = Utc::now();
    IncidentSummary {
        id,
        title: headline.title.clone(),
        template: headline.template.clone(),
        status: headline.status.as_deref().and_then(|s| s.parse().ok()),
        severity: headline.severity.clone(),
        number: headline.number,
        created_at: headline.created_at.unwrap_or(now),
        updated_at: now,
    }
}
