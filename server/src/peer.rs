//! How a `/sync` connection and the document actors it syncs reach each other: the connection's id (also the key
//! of the live-connection registry in `sessions.rs`) and the link an actor sends it frames through.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wire::PeerId;

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
    /// Where the connection came from (`audit::ClientAddr`), for the audit log of what its changes did.
    pub from: Option<String>,
}
