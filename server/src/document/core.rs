//! The document actor's state machine, without IO: commands and the time come in, effects go out.
//!
//! [`Core`] owns a loaded incident, the Automerge sync state of every attached peer and the bookkeeping that must
//! change with them (what is durable, what storage holds, the size limit, changes held back for a missing
//! dependency, when peers last heard). It never awaits, never reads a clock and never touches a socket or the
//! store: the shell (`shell.rs`) takes a batch of commands, asks the core what to append, appends it, tells the
//! core, and carries out the frames, replies and cut-offs the core hands back ([`Effect`]). So everything the
//! actor decides (batching, acknowledgements last, fan-out spacing, durable before visible, the size limit, idle
//! unload) is tested here with a fake clock and no runtime.
//!
//! One batch, in order: [`Core::wants_catch_up`] → (the shell loads what other nodes appended) →
//! [`Core::merge_stored`] → [`Core::apply`] → [`Core::append`] → (the shell appends) → [`Core::appended`] →
//! ([`Core::compaction`] → [`Core::compacted`] when due) → [`Core::durable`]; fan-outs at [`Core::flush_due`] by
//! [`Core::flush`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use automerge::sync;
use automerge::{AutoCommit, ChangeHash};
use chrono::{DateTime, Utc};
use incident_doc::schema::SERVER_NAME;
use incident_doc::signals::{Event, Signals};
use incident_doc::{Applied, Editor, Incident, SyncMemo};
use tracing::{debug, warn};
use wire::{DocumentId, Message, PeerId};

use super::handle::{ApplyReply, Command, DocError, ReadFn, Snapshot, SnapshotReply};
use crate::config::DocConfig;
use crate::metrics::Metrics;
use crate::peer::{ConnId, PeerLink};
use crate::store::outbox::NewDelivery;
use crate::store::{ChunkId, IncidentSummary, StoreError, Stored};
use crate::webhooks::Webhooks;

/// How far apart fan-outs are kept per attached peer, up to [`MAX_FLUSH_SPACING`]. A fan-out costs each peer a
/// frame out and an acknowledgement back (about 20 µs of server CPU together), whatever it carries, so when
/// keystrokes arrive faster than fan-outs can follow, spacing them lets one frame carry several keystrokes: with
/// 1,000 viewers a document sends them at most 20 times a second. A lone keystroke after a quiet spell goes out
/// at once; and with few peers the spacing is far below a keystroke's interval.
pub(crate) const FLUSH_SPACING_PER_PEER: Duration = Duration::from_micros(50);

/// The longest wait between fan-outs, which bounds the latency the spacing adds (automerge-repo's own sync
/// server waits up to 100 ms).
pub(crate) const MAX_FLUSH_SPACING: Duration = Duration::from_millis(50);

/// Appends after which the document's chunks are folded into one snapshot, so loading stays fast.
const COMPACT_AFTER_CHUNKS: u64 = 256;

/// What the shell must do for the core. Frames and cut-offs for one connection keep their order.
pub(crate) enum Effect {
    /// Queue a frame on a connection's outbox; a full outbox means the client stopped reading, and the shell then
    /// calls [`Core::drop_slow`] and cuts it off.
    Send(ConnId, Vec<u8>),
    /// Disconnect a connection (the frames before this one for it say why). The core already forgot the peer.
    CutOff(ConnId),
    /// An HTTP caller's answer.
    Answer(ApplyReply, Result<Vec<Applied>, DocError>),
    /// A snapshot for a heavy read.
    Snapshot(SnapshotReply, Snapshot),
    /// An entry for the audit log, about changes that are durable.
    Audit(AccessChange),
}

/// A change of who may see the incident (the restriction, or a member the commander added or removed), for the
/// audit log: recorded by the node the change arrived on, over HTTP or `/sync`, once it is durable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccessChange {
    /// Who made the change.
    pub actor: String,
    /// `incident.restriction_changed`, `incident.member_added` or `incident.member_removed`.
    pub action: &'static str,
    /// The incident.
    pub doc: DocumentId,
    /// The facts: `restricted` or `person`, and `via` (`http` or `sync`).
    pub detail: serde_json::Value,
    /// Where the request or connection came from.
    pub from: Option<String>,
}

/// The restriction and the added members, as `Incident::restriction` reads them.
type Restriction = (bool, Vec<String>);

/// The audit entries for the restriction and added members going from `before` to `after`.
fn access_changes(
    doc: DocumentId,
    (before, after): (&Restriction, &Restriction),
    actor: &str,
    via: &str,
    from: &Option<String>,
) -> Vec<AccessChange> {
    let change = |action: &'static str, detail: serde_json::Value| AccessChange {
        actor: actor.to_owned(),
        action,
        doc,
        detail,
        from: from.clone(),
    };
    let mut changes = Vec::new();
    if before.0 != after.0 {
        changes.push(change(
            "incident.restriction_changed",
            serde_json::json!({"restricted": after.0, "via": via}),
        ));
    }
    for person in after.1.iter().filter(|p| !before.1.contains(p)) {
        changes.push(change(
            "incident.member_added",
            serde_json::json!({"person": person, "via": via}),
        ));
    }
    for person in before.1.iter().filter(|p| !after.1.contains(p)) {
        changes.push(change(
            "incident.member_removed",
            serde_json::json!({"person": person, "via": via}),
        ));
    }
    changes
}

/// One chunk to append, with the index row and the webhook deliveries that must commit with it.
pub(crate) struct Append {
    /// The document's id, for the store.
    pub doc: DocumentId,
    /// The changes not yet durable (the whole document for a new one).
    pub chunk: Vec<u8>,
    /// The index row as of these changes.
    pub summary: IncidentSummary,
    /// The webhook deliveries these changes caused.
    pub deliveries: Vec<NewDelivery>,
    /// What the core needs to hear back once the chunk is stored.
    pub written: Written,
}

/// What an [`Append`] brought storage to, for [`Core::appended`].
pub(crate) struct Written {
    /// The heads the chunk brings storage to.
    heads: Vec<ChangeHash>,
    /// How many changes it holds, for `/metrics`.
    changes: usize,
    /// Its size, for the document size limit.
    bytes: usize,
}

/// One attached peer's state.
struct Peer {
    /// The peer id the client announced in `join`; the target of every message to it.
    peer_id: PeerId,
    /// Whose changes this peer's are, for the command rules and the authorship record.
    name: String,
    /// Administrators may close an incident they do not command.
    admin: bool,
    /// Where the connection came from, for the audit log.
    from: Option<String>,
    /// Read-only peers get a read-only sync state: their changes are never applied.
    read_only: bool,
    /// Automerge's record of what this peer has, so each message carries only what it lacks.
    state: sync::State,
    /// Set when the peer sent something and may need an answer even if nothing changed.
    pending: bool,
    /// Our answers to the peer's sync messages of this batch, generated right after each one as a sequential
    /// automerge peer does, and sent once the batch is durable. Generating only at the end of the batch loses
    /// answers: when a peer's change and its next message (showing the merged heads) arrive in one batch, automerge
    /// takes the second as proof the peer knows our heads, and the peer never learns that we hold its change.
    answers: Vec<Vec<u8>>,
    /// Highest ephemeral `count` seen per session, to drop duplicates that arrive through several paths.
    ephemeral_seen: HashMap<String, u64>,
}

impl Peer {
    fn new(link: &PeerLink) -> Peer {
        let state = if link.read_only {
            sync::State::new_read_only()
        } else {
            sync::State::new()
        };
        Peer {
            peer_id: link.peer_id.clone(),
            name: link.name.clone(),
            admin: link.admin,
            from: link.from.clone(),
            read_only: link.read_only,
            state,
            pending: true,
            answers: Vec::new(),
            ephemeral_seen: HashMap::new(),
        }
    }
}

/// What a batch holds back until its changes are durable.
#[derive(Default)]
struct Held {
    /// HTTP edits to answer.
    replies: Vec<(ApplyReply, Vec<Applied>)>,
    /// Reads to run.
    reads: Vec<ReadFn>,
    /// Snapshots to hand out.
    snapshots: Vec<SnapshotReply>,
    /// The webhook signals before the batch, when its events are wanted.
    signals: Option<Signals>,
    /// A new document's declaration, whose event goes with its first chunk.
    declared: bool,
    /// Changes of who may see the incident made in this batch, for the audit log once durable.
    access_changes: Vec<AccessChange>,
    /// The document changed in this batch through other nodes' chunks.
    caught_up: bool,
    /// Deliveries HTTP edits carried (a status update's email), queued with this batch's chunk.
    carried: Vec<NewDelivery>,
}

/// The document actor's state: the document and everything that must change together with it.
pub(crate) struct Core {
    id: DocumentId,
    /// The document; only this actor touches it.
    incident: Incident,
    /// The heads known to be durable; `save_after` from here gives the next chunk. Empty for a new document
    /// whose first chunk is not written yet.
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
    /// Bytes appended since `seen` last moved: a catch-up reads them back with other nodes' chunks, so they are
    /// counted once.
    appended_since_seen: usize,
    /// Bytes of changes merged this batch and not yet appended, so a batch of messages cannot overshoot the limit.
    unsaved_bytes: usize,
    /// Bytes of sync messages that left changes held back for a dependency the document lacks ("orphans", which
    /// automerge keeps aside unapplied until the dependency arrives). They count toward the size limit, and are
    /// dropped when a peer detaches (see [`Core::drop_orphans`]), so a peer cannot pile them up.
    orphan_bytes: usize,
    /// The peers whose changes are held back. A held change is judged as its sender's when it completes, so it
    /// may only complete through that sender's own messages: before anything else is merged (another peer's
    /// changes, other nodes' chunks) they are dropped and their senders cut off, to resend them on reconnecting
    /// (see [`Core::isolate_held`]).
    holders: HashSet<ConnId>,
    /// The document size limit.
    max_bytes: usize,
    peers: HashMap<ConnId, Peer>,
    metrics: Arc<Metrics>,
    /// Our peer id, the sender of every message we send.
    server_id: PeerId,
    /// Sync computations shared by peers in the same state.
    memo: SyncMemo,
    /// Webhook endpoints, which hear of this document's events.
    webhooks: Arc<Webhooks>,
    /// Whether the events are posted to the incident's chat channel too.
    chat_posts: bool,
    /// The document changed since the last fan-out: every peer hears at the next one.
    changed_since_flush: bool,
    /// A fan-out is owed: the document changed or a peer spoke (its `pending` flag is set).
    flush_wanted: bool,
    /// When the last fan-out of changes ran, to space them (see [`FLUSH_SPACING_PER_PEER`]).
    last_flush: Instant,
    /// When the last batch finished: a document without peers unloads a while after it.
    last_batch: Instant,
    /// The last snapshot handed out and the heads it was taken at: readers of the same heads share it. Weak, so a
    /// snapshot nobody reads any more does not keep a second copy of the document in memory.
    snapshot: Option<(Vec<ChangeHash>, Weak<Box<AutoCommit>>)>,
    /// The heads at which every attached peer was last found allowed to see the document; `None` after a peer
    /// attached. Saves reading who may see it after batches that changed nothing (acknowledgements, presence).
    access_checked: Option<Vec<ChangeHash>>,
    /// The last index row and the heads it holds for; moved along by keystrokes that leave it as it was.
    index_row: Option<(Vec<ChangeHash>, IncidentSummary)>,
    /// The heads the published due times hold for, moved along the same way.
    due_published: Option<Vec<ChangeHash>>,
    /// What the current batch holds back until it is durable.
    held: Held,
    /// Effects not yet taken by the shell.
    effects: Vec<Effect>,
}

impl Core {
    /// The core of a document loaded from storage: `size` bytes, chunks up to `seen`.
    pub(crate) fn loaded(
        id: DocumentId,
        mut incident: Incident,
        size: usize,
        seen: ChunkId,
        context: Context,
    ) -> Core {
        incident.govern();
        let saved_heads = incident.doc_mut().get_heads();
        Core {
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
            max_bytes: context.config.max_document_bytes,
            peers: HashMap::new(),
            metrics: context.metrics,
            server_id: context.server_id,
            memo: SyncMemo::default(),
            webhooks: context.config.webhooks.clone(),
            chat_posts: context.config.chat_posts,
            changed_since_flush: false,
            flush_wanted: false,
            last_flush: context.now,
            last_batch: context.now,
            snapshot: None,
            access_checked: None,
            index_row: None,
            due_published: None,
            held: Held::default(),
            effects: Vec::new(),
        }
    }

    /// The core of a document just declared: nothing of it is stored yet, so its first [`Core::append`] is the
    /// whole document with the `declared` event.
    pub(crate) fn declared(id: DocumentId, incident: Incident, context: Context) -> Core {
        let mut core = Core::loaded(id, incident, 0, ChunkId(0), context);
        core.saved_heads.clear();
        core.held.declared = true;
        core
    }

    /// The document's id.
    pub(crate) fn id(&self) -> DocumentId {
        self.id
    }

    /// How far the merged chunks go, for the shell's catch-up.
    pub(crate) fn seen(&self) -> ChunkId {
        self.seen
    }

    /// Whether a batch must first merge what other nodes appended (a `Refresh` asks for it).
    pub(crate) fn wants_catch_up(commands: &[Command]) -> bool {
        commands.iter().any(|c| matches!(c, Command::Refresh))
    }

    /// Merges the chunks storage holds beyond [`Core::seen`] (other nodes' appends, and our own since the last
    /// catch-up, which change nothing). Call only when every change in memory is durable: what is merged is
    /// durable too, so the saved heads move with it. Returns whether the document changed.
    pub(crate) fn merge_stored(&mut self, stored: Option<Stored>) -> Result<bool, StoreError> {
        let Some(stored) = stored else {
            return Ok(false);
        };
        // Other nodes' changes must not complete a peer's held-back ones unjudged (nor be saved as if stored).
        self.isolate_held(None);
        let before = self.incident.doc_mut().get_heads();
        self.stored_bytes =
            self.stored_bytes.saturating_sub(self.appended_since_seen) + stored.size();
        self.appended_since_seen = 0;
        for chunk in &stored.chunks {
            self.incident
                .doc_mut()
                .load_incremental(chunk)
                .map_err(|e| StoreError::Corrupt(format!("document {}: {e}", self.id)))?;
        }
        self.seen = stored.upto;
        let after = self.incident.doc_mut().get_heads();
        let changed = before != after;
        self.held.caught_up |= changed;
        self.saved_heads = after;
        Ok(changed)
    }

    /// Applies a batch of commands at wall-clock time `now`. Answers, reads, snapshots and sync answers wait for
    /// [`Core::durable`]; refusals and cut-offs are effects at once.
    pub(crate) fn apply(&mut self, commands: Vec<Command>, now: DateTime<Utc>) {
        // Taken after the catch-up: other nodes' changes are theirs to report.
        if (self.webhooks.enabled() || self.chat_posts)
            && commands
                .iter()
                .any(|c| matches!(c, Command::Apply { .. } | Command::Sync { .. }))
        {
            self.held.signals = Some(self.incident.signals());
        }
        for command in acknowledgements_last(commands) {
            match command {
                Command::Attach { conn, link } => {
                    // Before any of the peer's changes (see `Incident::hold_layout`).
                    self.incident.hold_layout();
                    self.peers.insert(conn, Peer::new(&link));
                    self.metrics.peers.inc();
                    self.access_checked = None;
                }
                Command::Sync {
                    conn,
                    data,
                    change_bytes,
                } => {
                    // Only a message carrying changes can change anything: acknowledgements cost no read.
                    let before = (change_bytes > 0).then(|| self.incident.restriction());
                    self.receive_sync(conn, &data, change_bytes, now);
                    if let (Some(before), Some(peer)) = (before, self.peers.get(&conn)) {
                        let after = self.incident.restriction();
                        let changes = access_changes(
                            self.id,
                            (&before, &after),
                            &peer.name,
                            "sync",
                            &peer.from,
                        );
                        self.held.access_changes.extend(changes);
                    }
                }
                Command::Ephemeral {
                    conn,
                    session_id,
                    count,
                    data,
                } => self.relay_ephemeral(conn, session_id, count, data),
                Command::Detach { conn } => self.detach(conn),
                Command::Apply {
                    ops,
                    editor,
                    from,
                    deliveries,
                    reply,
                } => {
                    if self.stored_bytes + self.unsaved_bytes >= self.max_bytes {
                        self.metrics.rejected_documents.inc();
                        let refused = Err(DocError::TooLarge(self.max_bytes));
                        self.effects.push(Effect::Answer(reply, refused));
                        continue;
                    }
                    let before = self.incident.restriction();
                    match self.incident.apply_all(&ops, &editor) {
                        Ok(applied) => {
                            let after = self.incident.restriction();
                            let changes = access_changes(
                                self.id,
                                (&before, &after),
                                &editor.name,
                                "http",
                                &from,
                            );
                            self.held.access_changes.extend(changes);
                            self.held.carried.extend(deliveries);
                            self.held.replies.push((reply, applied));
                        }
                        Err(e) => self.effects.push(Effect::Answer(reply, Err(e.into()))),
                    }
                }
                Command::Read(f) => self.held.reads.push(f),
                Command::Snapshot(reply) => self.held.snapshots.push(reply),
                Command::Refresh | Command::Close => {}
            }
        }
    }

    /// The chunk that makes this batch durable, if anything changed: the changes since the saved heads (the whole
    /// document for a new one), the index row and the webhook deliveries, all to commit in one transaction.
    pub(crate) fn append(&mut self, now: DateTime<Utc>) -> Option<Append> {
        let heads = self.incident.doc_mut().get_heads();
        if heads == self.saved_heads {
            self.unsaved_bytes = 0;
            return None;
        }
        let changes = self
            .incident
            .doc_mut()
            .get_changes_meta(&self.saved_heads)
            .len();
        let chunk = if self.saved_heads.is_empty() {
            self.incident.save()
        } else {
            self.incident.doc_mut().save_after(&self.saved_heads)
        };
        Some(Append {
            doc: self.id,
            summary: self.index_row(&heads, now),
            written: Written {
                heads,
                changes,
                bytes: chunk.len(),
            },
            chunk,
            deliveries: self.deliveries(now),
        })
    }

    /// The index row as of `heads`, stamped `now`: the one read at these heads when keystrokes since left it as it
    /// was (see [`Core::merge_sync`]), else read afresh (headline, access, commander, channel: about a tenth of a
    /// keystroke's cost when read every time).
    fn index_row(&mut self, heads: &[ChangeHash], now: DateTime<Utc>) -> IncidentSummary {
        if let Some((at, row)) = &self.index_row
            && at == heads
        {
            return IncidentSummary {
                updated_at: now,
                ..row.clone()
            };
        }
        let row = summary_row(self.id, &mut self.incident, now);
        self.index_row = Some((heads.to_vec(), row.clone()));
        row
    }

    /// The deliveries of this batch: those its HTTP edits carried, then the webhook deliveries and chat posts of
    /// the events between the signals before it and now.
    fn deliveries(&mut self, now: DateTime<Utc>) -> Vec<NewDelivery> {
        let mut deliveries = std::mem::take(&mut self.held.carried);
        deliveries.extend(self.event_deliveries(now));
        deliveries
    }

    /// The webhook deliveries and chat posts of this batch: the events between the signals before it and now.
    fn event_deliveries(&mut self, now: DateTime<Utc>) -> Vec<NewDelivery> {
        let (before, events) = if std::mem::take(&mut self.held.declared) {
            if !self.webhooks.enabled() && !self.chat_posts {
                return Vec::new();
            }
            (None, vec![Event::Declared])
        } else {
            let Some(before) = self.held.signals.take() else {
                return Vec::new();
            };
            (Some(before), Vec::new())
        };
        let after = self.incident.signals();
        let events = match &before {
            Some(before) => incident_doc::signals::events(before, &after),
            None => events,
        };
        let mut out = self.webhooks.deliveries(self.id, &after, &events, now);
        if self.chat_posts {
            out.extend(crate::chat::posts::posts(
                self.id,
                before.as_ref(),
                &after,
                &events,
                now,
            ));
        }
        out
    }

    /// The last [`Append`] is durable as chunk `chunk`; returns whether a compaction is due.
    pub(crate) fn appended(&mut self, written: Written, chunk: ChunkId) -> bool {
        if self.saved_heads.is_empty() {
            // The first chunk of a new document: nothing can sit below it.
            self.seen = chunk;
        } else {
            self.appended_since_seen += written.bytes;
            self.chunks_since_compact += 1;
        }
        self.stored_bytes += written.bytes;
        self.unsaved_bytes = 0;
        self.metrics.changes_applied.add(written.changes as u64);
        self.saved_heads = written.heads;
        self.changed_since_flush = true;
        self.chunks_since_compact >= COMPACT_AFTER_CHUNKS
    }

    /// The snapshot that replaces every chunk up to [`Core::seen`]. The shell catches up first, so it holds every
    /// chunk it replaces, other nodes' included.
    pub(crate) fn compaction(&mut self) -> (Vec<u8>, ChunkId) {
        (self.incident.save(), self.seen)
    }

    /// A compaction of `len` bytes is stored. (A failed one changes nothing: the chunks are still there.)
    pub(crate) fn compacted(&mut self, len: usize) {
        self.chunks_since_compact = 0;
        self.stored_bytes = len;
    }

    /// The batch is durable: HTTP callers get their answers, reads run, snapshots go out, and a fan-out is owed.
    /// `now` is when the batch finished.
    pub(crate) fn durable(&mut self, now: Instant) {
        debug_assert!(
            self.incident.doc_mut().get_heads() == self.saved_heads,
            "a batch reported durable before its changes were appended"
        );
        let held = std::mem::take(&mut self.held);
        for (reply, applied) in held.replies {
            self.effects.push(Effect::Answer(reply, Ok(applied)));
        }
        for change in held.access_changes {
            self.effects.push(Effect::Audit(change));
        }
        for read in held.reads {
            read(&mut self.incident);
        }
        if !held.snapshots.is_empty() {
            let snapshot = self.snapshot();
            for reply in held.snapshots {
                self.effects.push(Effect::Snapshot(reply, snapshot.clone()));
            }
        }
        self.cut_off_outsiders();
        // Peers hear at the next fan-out, which the shell spaces out under load.
        self.changed_since_flush |= held.caught_up;
        self.flush_wanted |= self.changed_since_flush || self.peers.values().any(|p| p.pending);
        self.last_batch = now;
    }

    /// The effects decided since the last call, in order.
    pub(crate) fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// When the next fan-out is due, if one is owed: changes [`FLUSH_SPACING_PER_PEER`] for each peer after the
    /// last fan-out of changes; answers to peers that only spoke (acknowledgements, mostly answered by nothing)
    /// at once (`now`).
    pub(crate) fn flush_due(&self, now: Instant) -> Option<Instant> {
        if !self.flush_wanted {
            return None;
        }
        if !self.changed_since_flush {
            return Some(now);
        }
        let peers = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        Some(self.last_flush + (FLUSH_SPACING_PER_PEER * peers).min(MAX_FLUSH_SPACING))
    }

    /// When a document without peers unloads, if it has none.
    pub(crate) fn idle_at(&self, idle: Duration) -> Option<Instant> {
        self.peers.is_empty().then(|| self.last_batch + idle)
    }

    /// Sends peers what they lack: every peer when the document changed since the last fan-out, else only those
    /// that spoke since. Only durable changes are ever sent: [`Core::durable`] owes the fan-out.
    pub(crate) fn flush(&mut self, now: Instant) {
        let changed = std::mem::take(&mut self.changed_since_flush);
        self.flush_wanted = false;
        if changed {
            self.last_flush = now;
        }
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
                    target_id: peer.peer_id.clone(),
                    document_id: self.id,
                    data,
                }
                .encode();
                self.effects.push(Effect::Send(*conn, frame));
            }
        }
    }

    /// A peer's outbox was full: it stopped reading, and is forgotten so it never stalls the document. Its client
    /// reconnects and resyncs from what it has.
    pub(crate) fn drop_slow(&mut self, conn: ConnId) {
        if let Some(peer) = self.peers.remove(&conn) {
            warn!(peer = %peer.peer_id, "outgoing queue full, disconnecting");
            self.metrics.slow_disconnects.inc();
            self.metrics.peers.dec();
        }
    }

    /// The document was deleted: peers hear that it is unavailable, exactly as if it had never existed.
    pub(crate) fn close(&mut self) {
        for (conn, peer) in self.peers.drain() {
            let frame = Message::DocUnavailable {
                sender_id: self.server_id.clone(),
                target_id: peer.peer_id.clone(),
                document_id: self.id,
            }
            .encode();
            self.effects.push(Effect::Send(conn, frame));
            self.metrics.peers.dec();
        }
    }

    /// Storage failed: the in-memory document may hold changes that are not durable, so it must not be shown to
    /// anyone. Every peer is cut off (clients keep their changes and resync when they reconnect); the next request
    /// loads the document again from what storage has. Waiting HTTP callers hear that the document is gone.
    pub(crate) fn fail(&mut self, error: &StoreError) {
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.cut_off(
                conn,
                format!("storage unavailable, reconnect later: {error}"),
            );
        }
        for (reply, _) in std::mem::take(&mut self.held.replies) {
            self.effects
                .push(Effect::Answer(reply, Err(DocError::Gone)));
        }
    }

    /// When this document's fields fall due, for the metrics (so `/metrics` counts stale fields from the clock
    /// alone and never calls into an actor); `None` when they are as last published, which keystrokes that wrote
    /// only prose leave them (see [`Core::merge_sync`]).
    pub(crate) fn due_times(&mut self) -> Option<Vec<DateTime<Utc>>> {
        let heads = self.incident.doc_mut().get_heads();
        if self.due_published.as_ref() == Some(&heads) {
            return None;
        }
        self.due_published = Some(heads);
        Some(
            self.incident
                .due_times()
                .into_iter()
                .map(|(_, at)| at)
                .collect(),
        )
    }

    /// The durable document as a snapshot: the last one handed out while the heads are unchanged and someone
    /// still reads it, else a new copy.
    fn snapshot(&mut self) -> Snapshot {
        let heads = self.incident.doc_mut().get_heads();
        if let Some((at, shared)) = &self.snapshot
            && *at == heads
            && let Some(doc) = shared.upgrade()
        {
            return Snapshot(doc);
        }
        let doc = Arc::new(Box::new(self.incident.doc().clone()));
        self.snapshot = Some((heads, Arc::downgrade(&doc)));
        Snapshot(doc)
    }

    fn detach(&mut self, conn: ConnId) {
        if self.peers.remove(&conn).is_some() {
            self.metrics.peers.dec();
        }
        // What it left held back cannot complete as its own any more.
        if self.holders.remove(&conn) {
            self.drop_held();
        }
    }

    fn receive_sync(&mut self, conn: ConnId, data: &[u8], change_bytes: usize, now: DateTime<Utc>) {
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
        self.merge_sync(conn, data, now);
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
    fn merge_sync(&mut self, conn: ConnId, data: &[u8], now: DateTime<Utc>) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        peer.pending = true;
        let server = Editor::new(SERVER_NAME, now);
        let sender = Editor::new(peer.name.as_str(), now).with_admin(peer.admin);
        let before = self.incident.doc_mut().get_heads();
        let received = match self.incident.receive_sync(
            &mut self.memo,
            &mut peer.state,
            data,
            &sender,
            &server,
        ) {
            Ok(received) => received,
            Err(e) => {
                // A broken sync message is a protocol error: tell the client and cut it off; others carry on.
                debug!(error = %e, "bad sync message");
                self.metrics.protocol_errors.inc();
                let reason = format!("invalid sync message for document {}: {e}", self.id);
                self.cut_off(conn, reason);
                return;
            }
        };
        // The index row and the due times read at `before` still hold if what the message wrote is prose no row
        // shows (and, for the due times, no stamp).
        let prose = received
            .touched
            .as_ref()
            .filter(|keys| self.incident.index_row_unaffected(keys));
        let after = prose.map(|_| self.incident.doc_mut().get_heads());
        if let Some((at, _)) = &mut self.index_row
            && *at == before
        {
            match &after {
                Some(after) => at.clone_from(after),
                None => self.index_row = None,
            }
        }
        if self.due_published.as_ref() == Some(&before) {
            let unstamped =
                prose.is_some_and(|keys| !keys.contains(incident_doc::schema::keys::UPDATED));
            self.due_published = after.filter(|_| unstamped);
        }
        self.metrics
            .rule_violations
            .add(received.violations.len() as u64);
        for violation in &received.violations {
            debug!(peer = %peer.peer_id, rule = ?violation.rule, "reverted a change");
            let frame = refusal(self.id, &self.server_id, &peer.peer_id, &violation.message);
            self.effects.push(Effect::Send(conn, frame));
        }
        peer.answers.extend(received.answer);
    }

    /// Checks the document size limit before a peer's changes are merged (a merged change cannot be taken out
    /// again) and reserves their bytes until the batch is appended; returns why they are refused, if they are.
    /// Read-only peers' changes are never applied, so they never count.
    fn reserve_size(&mut self, conn: ConnId, change_bytes: usize) -> Option<String> {
        let read_only = self.peers.get(&conn).is_none_or(|p| p.read_only);
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

    /// Disconnects the peers who may no longer see the document: it was restricted, or they were removed from its
    /// members or lost the role that made them one, by this node or (merged in a catch-up) another. Connections
    /// checked the index when they attached; this covers everything after, whichever way the change arrived, before
    /// the next fan-out could show them anything more. The `error` says no more than an unknown document would.
    fn cut_off_outsiders(&mut self) {
        if self.peers.is_empty() {
            return;
        }
        let heads = self.incident.doc_mut().get_heads();
        if self.access_checked.as_ref() == Some(&heads) {
            return;
        }
        // An open incident keeps everyone: one lookup of a root key, the common case after every keystroke.
        if !self.incident.restriction().0 {
            self.access_checked = Some(heads);
            return;
        }
        let access = self.incident.access();
        let outsiders: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, peer)| !access.allows(&peer.name, peer.admin))
            .map(|(conn, _)| *conn)
            .collect();
        for conn in outsiders {
            self.metrics.access_disconnects.inc();
            self.cut_off(conn, format!("document {} is unavailable", self.id));
        }
        self.access_checked = Some(heads);
    }

    /// Tells one peer why with an `error` message and disconnects it; the document and other peers carry on.
    fn cut_off(&mut self, conn: ConnId, reason: String) {
        if self.peers.remove(&conn).is_some() {
            self.effects
                .push(Effect::Send(conn, Message::error(reason).encode()));
            self.effects.push(Effect::CutOff(conn));
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
        let sender_id = sender.peer_id.clone();
        for (conn, peer) in &self.peers {
            if *conn == from {
                continue;
            }
            let frame = Message::Ephemeral {
                sender_id: sender_id.clone(),
                target_id: peer.peer_id.clone(),
                document_id: self.id,
                session_id: session_id.clone(),
                count,
                data: data.clone(),
            }
            .encode();
            self.effects.push(Effect::Send(*conn, frame));
        }
    }
}

/// What every core of a server shares: settings, metrics, the server's peer id, and the time it starts at.
pub(crate) struct Context {
    /// Limits and webhooks.
    pub config: DocConfig,
    /// Counters the core moves.
    pub metrics: Arc<Metrics>,
    /// The server's peer id.
    pub server_id: PeerId,
    /// When the core starts (the shell's clock, or a test's).
    pub now: Instant,
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

/// The index row for `incident` as of `now`.
pub(crate) fn summary_row(
    id: DocumentId,
    incident: &mut Incident,
    now: DateTime<Utc>,
) -> IncidentSummary {
    let headline = incident.headline();
    let access = incident.access();
    IncidentSummary {
        id,
        title: headline.title.clone(),
        template: headline.template.clone(),
        status: headline.status.as_deref().and_then(|s| s.parse().ok()),
        severity: headline.severity.clone(),
        commander: incident.commander(),
        number: headline.number,
        created_at: headline.created_at.unwrap_or(now),
        updated_at: now,
        restricted: access.restricted,
        members: access.members,
        channel: incident.channel(),
    }
}

#[cfg(test)]
mod tests;
