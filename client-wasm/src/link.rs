//! [`Link`]: the browser's side of automerge-repo's protocol with the server, as a sans-IO state machine.
//!
//! The page owns the WebSocket and the timers; it tells the link when the socket opened or closed and hands it
//! every frame, and sends whatever frames the link queues. The protocol itself is the shared [`wire::peer::Peer`],
//! the same peer the load generator and the tests speak through, over the same codec as the server; the link adds
//! what only the page needs (an outbox, reconnect backoff, the "saved" status), and the whole exchange is testable
//! natively against an in-memory server.

use automerge::AutoCommit;
use wire::peer::{Changed, Event, Peer};
use wire::{DocumentId, PeerId};

use crate::ClientError;

/// The first reconnect waits up to this long; each failed attempt doubles it.
const BACKOFF_BASE_MS: f64 = 500.0;
/// Reconnect attempts never wait longer than this, so a responder whose network returns is back within seconds.
const BACKOFF_CAP_MS: f64 = 15_000.0;

/// Where the link stands, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No socket: edits stay local until the next connection.
    Offline,
    /// The socket is open and `join` sent; the server has not answered yet.
    Connecting,
    /// Joined, but the server has not yet confirmed holding every local change (or we lack some of its changes).
    Syncing,
    /// The server has confirmed our heads: every local change is durable on the server.
    Synced,
}

impl Status {
    /// The name the page and its test hooks use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Offline => "offline",
            Status::Connecting => "connecting",
            Status::Syncing => "syncing",
            Status::Synced => "synced",
        }
    }
}

/// What a received frame meant for the page.
#[derive(Debug, Default)]
pub struct Received {
    /// Heads before and after, when a sync message changed the document.
    pub changed: Option<Changed>,
    /// Presence or other ephemeral data from another peer: (sender, payload).
    pub ephemeral: Option<(PeerId, Vec<u8>)>,
    /// An ephemeral payload from the server itself (a notice, such as a refusal): sent under the peer id the
    /// server's `peer` answer on this connection named, which the server lets no other peer use.
    pub notice: Option<Vec<u8>>,
}

/// One document's connection to the server: the shared protocol peer ([`wire::peer::Peer`]) plus what the page
/// needs around it (an outbox, reconnect backoff, the status and the last error).
#[derive(Debug)]
pub struct Link {
    /// The protocol: our peer id (one per tab, so the server can tell two tabs of one person apart), the handshake
    /// and the sync state, fresh for every connection as the server's is.
    peer: Peer,
    /// The document this link syncs; the server keeps one actor per document.
    document: DocumentId,
    /// Whether a socket is open (joined or not).
    open: bool,
    /// Frames for the page to send, in order.
    outbox: Vec<Vec<u8>>,
    /// Failed connection attempts since the last successful handshake.
    attempts: u32,
    /// The last protocol error, shown by the page.
    last_error: Option<String>,
}

impl Link {
    /// A link for `document`, not yet connected.
    pub fn new(me: PeerId, document: DocumentId) -> Link {
        Link {
            peer: Peer::new(me),
            document,
            open: false,
            outbox: Vec::new(),
            attempts: 0,
            last_error: None,
        }
    }

    /// The socket opened: start the handshake.
    pub fn connected(&mut self) {
        self.open = true;
        self.outbox.clear();
        let join = self.peer.join();
        self.outbox.push(join);
    }

    /// The socket closed (or never opened): forget the connection and say how long to wait before the next try.
    ///
    /// Exponential backoff with full jitter (`random01` from `Math.random()`), so that a whole war room whose
    /// network came back does not reconnect in the same millisecond.
    pub fn disconnected(&mut self, random01: f64) -> f64 {
        self.open = false;
        self.peer.disconnected();
        self.outbox.clear();
        let ceiling =
            (BACKOFF_BASE_MS * 2f64.powi(self.attempts.min(16) as i32)).min(BACKOFF_CAP_MS);
        self.attempts = self.attempts.saturating_add(1);
        let jitter = if random01.is_finite() {
            random01.clamp(0.0, 1.0)
        } else {
            1.0
        };
        // Never zero: a server that closes at once must not be hammered in a tight loop.
        (ceiling * jitter).max(BACKOFF_BASE_MS / 5.0).round()
    }

    /// Handles one binary frame from the server. On an error the page closes the socket; the document is unchanged.
    pub fn receive(&mut self, frame: &[u8], doc: &mut AutoCommit) -> Result<Received, ClientError> {
        let event = self
            .peer
            .receive(frame)
            .map_err(|e| self.fail(e.to_string()))?;
        let mut received = Received::default();
        match event {
            Event::Joined => {
                self.attempts = 0;
                self.last_error = None;
                self.flush(doc);
            }
            Event::Sync { document, message } if document == self.document => {
                received.changed = self
                    .peer
                    .apply(document, doc, message)
                    .map_err(|e| self.fail(e.to_string()))?;
                self.flush(doc);
            }
            Event::Unavailable(document) if document == self.document => {
                return Err(self.fail(
                    "the server does not have this incident, or this token may not read it"
                        .to_owned(),
                ));
            }
            Event::Ephemeral {
                document,
                sender,
                from_server,
                data,
            } if document == self.document => {
                if from_server {
                    received.notice = Some(data);
                } else {
                    received.ephemeral = Some((sender, data));
                }
            }
            // Messages about other documents, heads gossip and goodbyes need nothing from a one-document link.
            _ => {}
        }
        Ok(received)
    }

    /// Queues a sync message if the server lacks something we have: call after every local edit.
    pub fn flush(&mut self, doc: &mut AutoCommit) {
        if let Some(frame) = self.peer.sync(self.document, doc) {
            self.outbox.push(frame);
        }
    }

    /// Queues an ephemeral message (presence) to every other peer of the document, if joined.
    pub fn broadcast(&mut self, session_id: &str, count: u64, data: Vec<u8>) {
        if let Some(frame) = self.peer.ephemeral(self.document, session_id, count, data) {
            self.outbox.push(frame);
        }
    }

    /// The frames to send now, in order.
    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Our peer id.
    pub fn peer(&self) -> &PeerId {
        self.peer.me()
    }

    /// Whether the handshake is done, so ephemeral messages can go out.
    pub fn joined(&self) -> bool {
        self.peer.server().is_some()
    }

    /// Where the link stands. `Synced` needs the server's last word to show exactly our heads: the server answers
    /// a sync message only after the change is durable, so this is the page's "saved" mark.
    pub fn status(&self, doc: &mut AutoCommit) -> Status {
        if !self.open {
            return Status::Offline;
        }
        if self.peer.server().is_none() {
            return Status::Connecting;
        }
        let mut ours = doc.get_heads();
        ours.sort();
        match self.peer.their_heads(self.document) {
            Some(theirs) if self.outbox.is_empty() => {
                let mut theirs = theirs.to_vec();
                theirs.sort();
                if theirs == ours {
                    Status::Synced
                } else {
                    Status::Syncing
                }
            }
            _ => Status::Syncing,
        }
    }

    /// The last protocol error, if the last connection ended in one.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Records a protocol error for the page to show and returns it to throw.
    fn fail(&mut self, message: String) -> ClientError {
        self.last_error = Some(message.clone());
        ClientError::Protocol(message)
    }
}
