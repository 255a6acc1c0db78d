//! How the rest of the server talks to a document actor: the [`Command`]s it takes and the [`DocHandle`] that
//! sends them over a bounded channel.

use std::sync::Arc;

use automerge::AutoCommit;
use incident_doc::{Applied, Editor, Incident, OpError, Operation};
use tokio::sync::{mpsc, oneshot};
use wire::DocumentId;

use crate::peer::{ConnId, PeerLink};
use crate::store::StoreError;
use crate::store::outbox::NewDelivery;

/// Where an HTTP edit's outcome goes.
pub type ApplyReply = oneshot::Sender<Result<Vec<Applied>, DocError>>;

/// Where a snapshot for a heavy read goes.
pub type SnapshotReply = oneshot::Sender<Snapshot>;

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
pub struct Snapshot(pub(super) SharedDoc);

/// The copy behind a [`Snapshot`], boxed: the actor keeps a weak reference to the last one (`Core::snapshot`),
/// and a weak reference keeps its allocation alive after the last reader is done. Boxed, that is a pointer;
/// unboxed, it was Automerge's inline fields, about 4 KiB for every loaded incident that was ever read
/// (BENCHMARKS.md, "Many incidents").
#[allow(
    clippy::redundant_allocation,
    reason = "the box is what the weak reference must not pin"
)]
pub(super) type SharedDoc = Arc<Box<AutoCommit>>;

impl Snapshot {
    /// The snapshot as an incident of the caller's own: reads such as the history take `&mut`, and the copy this
    /// may make happens on the caller's thread, never the actor's.
    pub fn into_incident(self) -> Incident {
        let doc = Arc::try_unwrap(self.0).map_or_else(|shared| (**shared).clone(), |doc| *doc);
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
        /// Where the request came from (`audit::ClientAddr`), for the audit log of access changes.
        from: Option<String>,
        /// Deliveries to queue with the edits' chunk, in its transaction, if the edits apply (a status update's
        /// email: queued exactly when the update is recorded, never without it).
        deliveries: Vec<NewDelivery>,
        /// Answered once the changes are durable, or with the first refusal (then nothing was applied).
        reply: ApplyReply,
    },
    /// Runs a cheap read against the durable state of the document.
    Read(ReadFn),
    /// Asks for a [`Snapshot`] of the durable state of the document, for a heavy read off the actor.
    Snapshot(SnapshotReply),
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
        self.apply_from(ops, editor, None).await
    }

    /// [`DocHandle::apply`] for a request from `from`, which the audit log records with any change of who may see
    /// the incident.
    pub async fn apply_from(
        &self,
        ops: Vec<Operation>,
        editor: Editor,
        from: Option<String>,
    ) -> Result<Vec<Applied>, DocError> {
        self.apply_with(ops, editor, from, Vec::new()).await
    }

    /// [`DocHandle::apply_from`] that also queues `deliveries` in the same transaction as the edits' changes, only
    /// if every edit applies: "send the status update" records it and queues its email as one durable unit.
    pub async fn apply_with(
        &self,
        ops: Vec<Operation>,
        editor: Editor,
        from: Option<String>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Vec<Applied>, DocError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Apply {
            ops,
            editor,
            from,
            deliveries,
            reply,
        })
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

impl DocHandle {
    /// A handle on the actor reading `tx`, incarnation `generation`.
    pub(super) fn new(id: DocumentId, tx: mpsc::Sender<Command>, generation: u64) -> DocHandle {
        DocHandle { id, tx, generation }
    }

    /// Which incarnation of the actor this is.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }
}
