//! [`Link`]: the browser's side of automerge-repo's protocol with the server, as a sans-IO state machine.
//!
//! The page owns the WebSocket and the timers; it tells the link when the socket opened or closed and hands it
//! every frame, and sends whatever frames the link queues. Keeping the protocol here, in Rust, means the browser
//! speaks it through the same codec as the server (`wire`), and the whole exchange is testable natively against
//! an in-memory peer.

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use wire::{DocumentId, Message, PROTOCOL_VERSION, PeerId, PeerMetadata};

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
    pub changed: Option<(Vec<ChangeHash>, Vec<ChangeHash>)>,
    /// Presence or other ephemeral data from another peer: (sender, payload).
    pub ephemeral: Option<(PeerId, Vec<u8>)>,
    /// An ephemeral payload from the server itself (a notice, such as a refusal): sent under the peer id the
    /// server's `peer` answer on this connection named, which the server lets no other peer use.
    pub notice: Option<Vec<u8>>,
}

/// One document's connection to the server.
#[derive(Debug)]
pub struct Link {
    /// Our peer id: one per tab, so the server can tell two tabs of one person apart.
    me: PeerId,
    /// The document this link syncs; the server keeps one actor per document.
    document: DocumentId,
    /// The server's peer id, known once it answered `join`.
    server: Option<PeerId>,
    /// Whether a socket is open (joined or not).
    open: bool,
    /// Whether our first message about the document went out on this connection (`request` or `sync`).
    announced: bool,
    /// Automerge's record of what the server has; fresh for every connection, as the server's is.
    sync: sync::State,
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
            me,
            document,
            server: None,
            open: false,
            announced: false,
            sync: sync::State::new(),
            outbox: Vec::new(),
            attempts: 0,
            last_error: None,
        }
    }

    /// The socket opened: start the handshake.
    pub fn connected(&mut self) {
        self.open = true;
        self.server = None;
        self.announced = false;
        self.sync = sync::State::new();
        self.outbox.clear();
        self.outbox.push(
            Message::Join {
                sender_id: self.me.clone(),
                supported_protocol_versions: vec![PROTOCOL_VERSION.to_owned()],
                // The page keeps its copy in IndexedDB but its sync state is per connection, so it says it is
                // ephemeral: the server need not remember what this tab had.
                metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: true,
                }),
            }
            .encode(),
        );
    }

    /// The socket closed (or never opened): forget the connection and say how long to wait before the next try.
    ///
    /// Exponential backoff with full jitter (`random01` from `Math.random()`), so that a whole war room whose
    /// network came back does not reconnect in the same millisecond.
    pub fn disconnected(&mut self, random01: f64) -> f64 {
        self.open = false;
        self.server = None;
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
        let message = wire::decode(frame)
            .map_err(|e| self.fail(format!("bad frame from the server: {e}")))?;
        let mut received = Received::default();
        match message {
            Message::Peer {
                sender_id,
                target_id,
                selected_protocol_version,
                ..
            } => {
                if target_id != self.me || selected_protocol_version != PROTOCOL_VERSION {
                    return Err(self.fail(format!(
                        "the server answered join for {target_id} with protocol {selected_protocol_version:?}"
                    )));
                }
                self.server = Some(sender_id);
                self.attempts = 0;
                self.last_error = None;
                self.flush(doc);
            }
            Message::Sync {
                document_id, data, ..
            } if document_id == self.document => {
                let message = sync::Message::decode(&data)
                    .map_err(|e| self.fail(format!("bad sync message from the server: {e}")))?;
                let before = doc.get_heads();
                doc.sync()
                    .receive_sync_message(&mut self.sync, message)
                    .map_err(|e| self.fail(format!("the server's changes do not apply: {e}")))?;
                let after = doc.get_heads();
                if before != after {
                    received.changed = Some((before, after));
                }
                self.flush(doc);
            }
            Message::DocUnavailable { document_id, .. } if document_id == self.document => {
                return Err(self.fail(
                    "the server does not have this incident, or this token may not read it"
                        .to_owned(),
                ));
            }
            Message::Ephemeral {
                sender_id,
                document_id,
                data,
                ..
            } if document_id == self.document => {
                if self.server.as_ref() == Some(&sender_id) {
                    received.notice = Some(data);
                } else {
                    received.ephemeral = Some((sender_id, data));
                }
            }
            Message::Error { message } => {
                return Err(self.fail(format!("the server refused: {message}")));
            }
            // Messages about other documents, heads gossip and goodbyes need nothing from a one-document link.
            _ => {}
        }
        Ok(received)
    }

    /// Queues a sync message if the server lacks something we have: call after every local edit.
    pub fn flush(&mut self, doc: &mut AutoCommit) {
        let Some(server) = self.server.clone() else {
            return;
        };
        let Some(message) = doc.sync().generate_sync_message(&mut self.sync) else {
            return;
        };
        let data = message.encode();
        // A replica that holds nothing yet asks for the document (the protocol's `request`), so the server may
        // answer doc-unavailable instead of syncing an empty document into existence.
        let frame = if !self.announced && doc.get_heads().is_empty() {
            Message::Request {
                sender_id: self.me.clone(),
                target_id: server,
                document_id: self.document,
                data,
            }
        } else {
            Message::Sync {
                sender_id: self.me.clone(),
                target_id: server,
                document_id: self.document,
                data,
            }
        };
        self.announced = true;
        self.outbox.push(frame.encode());
    }

    /// Queues an ephemeral message (presence) to every other peer of the document, if joined.
    pub fn broadcast(&mut self, session_id: &str, count: u64, data: Vec<u8>) {
        let Some(server) = self.server.clone() else {
            return;
        };
        self.outbox.push(
            Message::Ephemeral {
                sender_id: self.me.clone(),
                target_id: server,
                document_id: self.document,
                session_id: session_id.to_owned(),
                count,
                data,
            }
            .encode(),
        );
    }

    /// The frames to send now, in order.
    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Our peer id.
    pub fn peer(&self) -> &PeerId {
        &self.me
    }

    /// Whether the handshake is done, so ephemeral messages can go out.
    pub fn joined(&self) -> bool {
        self.server.is_some()
    }

    /// Where the link stands. `Synced` needs the server's last word to show exactly our heads: the server answers
    /// a sync message only after the change is durable, so this is the page's "saved" mark.
    pub fn status(&self, doc: &mut AutoCommit) -> Status {
        if !self.open {
            return Status::Offline;
        }
        if self.server.is_none() {
            return Status::Connecting;
        }
        let mut ours = doc.get_heads();
        ours.sort();
        match &self.sync.their_heads {
            Some(theirs) if self.outbox.is_empty() => {
                let mut theirs = theirs.clone();
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
