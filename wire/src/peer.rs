//! [`Peer`]: the client's side of automerge-repo's protocol with one server, as a sans-IO state machine shared by
//! the browser client, the load generator and the tests.
//!
//! The caller owns the socket and the documents; the peer owns the protocol: the handshake (our `join`, the server's
//! `peer` answer, checked), one Automerge sync state per document for this connection, the choice between `request`
//! and `sync` for a document's first message, and what each frame from the server means ([`Event`]). Bytes go in
//! ([`Peer::receive`]) and bytes come out ([`Peer::join`], [`Peer::sync`], [`Peer::wrap`], [`Peer::ephemeral`]); it
//! reads no clock and does no I/O, so every user keeps only its transport and its own concerns (reconnect backoff in
//! the browser, byte counts in the load generator, hostile knobs in the tests).
//!
//! Behind the `peer` feature: it holds Automerge sync state, which the server (whose replicas live elsewhere) and
//! the codec do not need.

use std::collections::HashMap;

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, AutomergeError, ChangeHash};

use crate::{DocumentId, Message, PROTOCOL_VERSION, PeerId, PeerMetadata, WireError};

#[cfg(test)]
mod tests;

/// The client's side of one connection to an automerge-repo server.
#[derive(Debug)]
pub struct Peer {
    /// Our peer id, the `senderId` of everything we send.
    me: PeerId,
    /// The server's peer id, from its `peer` answer on this connection; `None` before it (or after a disconnect).
    server: Option<PeerId>,
    /// What this connection has said and learned about each document; fresh for every connection, as the server's
    /// sync state is.
    documents: HashMap<DocumentId, Document>,
}

/// One document's sync with the server on this connection.
#[derive(Debug, Default)]
struct Document {
    /// Automerge's record of what the server has, so that each message carries only what it lacks.
    state: sync::State,
    /// Whether our first message about the document (`request` or `sync`) went out on this connection.
    announced: bool,
}

/// What a frame from the server meant.
#[derive(Debug)]
pub enum Event {
    /// The server answered our `join`: the handshake is done and documents may be synced.
    Joined,
    /// An Automerge sync message about a document: hand it to [`Peer::apply`] with our copy (or read it, for a peer
    /// that keeps no copy).
    Sync {
        /// The document it is about.
        document: DocumentId,
        /// The decoded sync message.
        message: sync::Message,
    },
    /// The server does not have the document, or may not show it to us (the two look the same).
    Unavailable(DocumentId),
    /// Application data about a document (presence, a notice), relayed and never stored.
    Ephemeral {
        /// The document it is about.
        document: DocumentId,
        /// The peer that sent it.
        sender: PeerId,
        /// Whether it came under the server's own peer id, which the server lets no other peer use: a notice from
        /// the server itself (such as a refusal) rather than another peer's claim.
        from_server: bool,
        /// The payload.
        data: Vec<u8>,
    },
    /// Anything a client need not act on: heads gossip, goodbyes, messages meant for servers.
    Other,
}

/// How a sync message changed our copy: its heads before and after, so a caller can tell what to redraw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Our heads before the message.
    pub before: Vec<ChangeHash>,
    /// Our heads after it.
    pub after: Vec<ChangeHash>,
}

/// Why a frame from the server ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The frame is not a protocol message.
    #[error("bad frame from the server: {0}")]
    Frame(#[from] WireError),
    /// The `peer` answer is not for us or picks a protocol version we did not offer.
    #[error("the server answered join for {target} with protocol {version:?}")]
    Handshake {
        /// Whom the answer was for.
        target: PeerId,
        /// The version it selected.
        version: String,
    },
    /// A `sync` message's data is not an Automerge sync message.
    #[error("bad sync message from the server: {0}")]
    SyncMessage(#[from] sync::ReadMessageError),
    /// The server's changes do not apply to our copy.
    #[error("the server's changes do not apply: {0}")]
    Apply(#[from] AutomergeError),
    /// The server sent an `error` message, after which it closes the connection.
    #[error("the server refused: {0}")]
    Refused(String),
}

impl Peer {
    /// A peer called `me`, not yet connected.
    pub fn new(me: PeerId) -> Peer {
        Peer {
            me,
            server: None,
            documents: HashMap::new(),
        }
    }

    /// Our peer id.
    pub fn me(&self) -> &PeerId {
        &self.me
    }

    /// The server's peer id, once it answered `join` on this connection.
    pub fn server(&self) -> Option<&PeerId> {
        self.server.as_ref()
    }

    /// The socket opened: forgets any earlier connection and returns the `join` frame to send first.
    ///
    /// We join as an ephemeral peer without storage, as a browser tab does: a tab keeps its copy in IndexedDB but
    /// its sync state is per connection, so the server need not remember what it had.
    pub fn join(&mut self) -> Vec<u8> {
        self.disconnected();
        Message::Join {
            sender_id: self.me.clone(),
            supported_protocol_versions: vec![PROTOCOL_VERSION.to_owned()],
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        }
        .encode()
    }

    /// The socket closed: forgets the server and every document's sync state, which the server forgets too.
    pub fn disconnected(&mut self) {
        self.server = None;
        self.documents.clear();
    }

    /// Decodes one binary frame from the server and handles it (see [`Peer::handle`]).
    pub fn receive(&mut self, frame: &[u8]) -> Result<Event, PeerError> {
        self.handle(crate::decode(frame)?)
    }

    /// What one message from the server means. The `peer` answer completes the handshake (and must be for us, in
    /// the version we offered); an `error` is an `Err`, since the server closes the connection after it.
    pub fn handle(&mut self, message: Message) -> Result<Event, PeerError> {
        match message {
            Message::Peer {
                sender_id,
                target_id,
                selected_protocol_version,
                ..
            } => {
                if target_id != self.me || selected_protocol_version != PROTOCOL_VERSION {
                    return Err(PeerError::Handshake {
                        target: target_id,
                        version: selected_protocol_version,
                    });
                }
                self.server = Some(sender_id);
                Ok(Event::Joined)
            }
            Message::Sync {
                document_id, data, ..
            } => Ok(Event::Sync {
                document: document_id,
                message: sync::Message::decode(&data)?,
            }),
            Message::DocUnavailable { document_id, .. } => Ok(Event::Unavailable(document_id)),
            Message::Ephemeral {
                sender_id,
                document_id,
                data,
                ..
            } => Ok(Event::Ephemeral {
                document: document_id,
                from_server: self.server.as_ref() == Some(&sender_id),
                sender: sender_id,
                data,
            }),
            Message::Error { message } => Err(PeerError::Refused(message)),
            _ => Ok(Event::Other),
        }
    }

    /// Applies a sync message about `document` (from [`Event::Sync`]) to our copy `doc`; returns our heads before
    /// and after when it changed the document.
    pub fn apply(
        &mut self,
        document: DocumentId,
        doc: &mut AutoCommit,
        message: sync::Message,
    ) -> Result<Option<Changed>, PeerError> {
        let before = doc.get_heads();
        doc.sync()
            .receive_sync_message(self.state_mut(document), message)?;
        let after = doc.get_heads();
        Ok((before != after).then_some(Changed { before, after }))
    }

    /// The next frame about `document` that the server needs from our copy `doc`, if joined and the server lacks
    /// something: call it until `None` after every local edit and every message applied.
    pub fn sync(&mut self, document: DocumentId, doc: &mut AutoCommit) -> Option<Vec<u8>> {
        self.server.as_ref()?;
        let data = self.sync_data(document, doc)?;
        let holds_nothing = doc.get_heads().is_empty();
        self.wrap(document, data, holds_nothing)
    }

    /// The next encoded Automerge sync message that would bring the server up to date about `document`, advancing
    /// the sync state as if it were sent, without wrapping it in a frame.
    pub fn sync_data(&mut self, document: DocumentId, doc: &mut AutoCommit) -> Option<Vec<u8>> {
        doc.sync()
            .generate_sync_message(self.state_mut(document))
            .map(sync::Message::encode)
    }

    /// Wraps an encoded Automerge sync message about `document` in a frame to the server, once joined.
    ///
    /// A replica that `holds_nothing` yet asks for the document with its first message on the connection (the
    /// protocol's `request`), so the server may answer `doc-unavailable` instead of syncing an empty document into
    /// existence; everything else is `sync`.
    pub fn wrap(
        &mut self,
        document: DocumentId,
        data: Vec<u8>,
        holds_nothing: bool,
    ) -> Option<Vec<u8>> {
        let server = self.server.clone()?;
        let entry = self.documents.entry(document).or_default();
        let request = !entry.announced && holds_nothing;
        entry.announced = true;
        let (sender_id, target_id, document_id) = (self.me.clone(), server, document);
        let message = if request {
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        };
        Some(message.encode())
    }

    /// An `ephemeral` frame (presence) about `document`, for the server to relay to the document's other peers,
    /// once joined.
    pub fn ephemeral(
        &self,
        document: DocumentId,
        session_id: &str,
        count: u64,
        data: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let server = self.server.clone()?;
        Some(
            Message::Ephemeral {
                sender_id: self.me.clone(),
                target_id: server,
                document_id: document,
                session_id: session_id.to_owned(),
                count,
                data,
            }
            .encode(),
        )
    }

    /// The heads the server advertised for `document` in its last sync message on this connection; `None` before
    /// the first.
    pub fn their_heads(&self, document: DocumentId) -> Option<&[ChangeHash]> {
        self.documents.get(&document)?.state.their_heads.as_deref()
    }

    /// Automerge's sync state toward the server for `document`, for callers that craft unusual but legal sequences
    /// (the tests' hostile and retrying clients).
    pub fn state_mut(&mut self, document: DocumentId) -> &mut sync::State {
        &mut self.documents.entry(document).or_default().state
    }
}
